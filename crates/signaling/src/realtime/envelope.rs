//! The message envelope of the realtime API, as the Nexmo JavaScript SDK 4.x sends and expects
//! it.
//!
//! A request is a socket.io event named by its type whose payload is an object
//! `{tid, cid?, from?, to?, rtc_id?, body?}`. Its reply is an event named by the reply type with
//! `rid` set to the request's `tid`: `<type>:success` (or the few success types the SDK
//! expects instead), and `<type>:error:<reason>` for everything else. The SDK has no request
//! timeout, so every request gets a reply, even one whose payload cannot be read.

use serde_json::{Map, Value, json};

use crate::error::{ApiError, InvalidParameter};

/// Maximum length of a request type the node echoes back in an error reply type. Longer names
/// cannot be a known type and get `request:error:invalid-type`.
pub(crate) const MAX_TYPE_LENGTH: usize = 64;

/// A request whose envelope was read: the routing fields are strings when present.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) kind: String,
    pub(crate) tid: String,
    pub(crate) cid: Option<String>,
    pub(crate) from: Option<String>,
    pub(crate) to: Option<String>,
    pub(crate) rtc_id: Option<String>,
    /// The request's `body`, an empty object when absent.
    pub(crate) body: Map<String, Value>,
}

impl Request {
    /// Reads the envelope of the payload of the event `kind`.
    pub(crate) fn parse(kind: &str, payload: Option<Value>) -> Result<Request, RequestError> {
        let Some(Value::Object(mut fields)) = payload else {
            return Err(RequestError::invalid_request(
                "the payload must be a JSON object with a tid",
            ));
        };
        let tid = match fields.remove("tid") {
            Some(Value::String(tid)) if !tid.is_empty() => tid,
            Some(_) => return Err(RequestError::invalid_parameter("tid", "must be a string")),
            None => return Err(RequestError::invalid_parameter("tid", "is missing")),
        };
        let mut field = |name: &'static str| match fields.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(value)) => Ok(Some(value)),
            Some(_) => Err(RequestError::invalid_parameter(name, "must be a string")),
        };
        let cid = field("cid");
        let from = field("from");
        let to = field("to");
        let rtc_id = field("rtc_id");
        let body = match fields.remove("body") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(body)) => body,
            Some(_) => {
                return Err(
                    RequestError::invalid_parameter("body", "must be an object").with_rid(&tid)
                );
            }
        };
        let with_rid = |result: Result<Option<String>, RequestError>| {
            result.map_err(|error| error.with_rid(&tid))
        };
        Ok(Request {
            cid: with_rid(cid)?,
            from: with_rid(from)?,
            to: with_rid(to)?,
            rtc_id: with_rid(rtc_id)?,
            kind: kind.to_owned(),
            tid,
            body,
        })
    }

    /// Returns `cid`, which the request type needs.
    pub(crate) fn conversation(&self) -> Result<&str, RequestError> {
        self.cid
            .as_deref()
            .ok_or_else(|| RequestError::invalid_parameter("cid", "is missing"))
    }

    /// Returns `from`, the caller's member, which the request type needs.
    pub(crate) fn sender(&self) -> Result<&str, RequestError> {
        self.from
            .as_deref()
            .ok_or_else(|| RequestError::invalid_parameter("from", "is missing"))
    }

    /// Returns `rtc_id`, the caller's leg, which the request type needs.
    pub(crate) fn leg(&self) -> Result<&str, RequestError> {
        self.rtc_id
            .as_deref()
            .ok_or_else(|| RequestError::invalid_parameter("rtc_id", "is missing"))
    }

    /// Returns the string field `body.<name>`, `None` when absent.
    pub(crate) fn body_str(&self, name: &str) -> Result<Option<&str>, RequestError> {
        match self.body.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(value)) => Ok(Some(value)),
            Some(_) => Err(RequestError::invalid_parameter(
                format!("body.{name}"),
                "must be a string",
            )),
        }
    }

    /// Returns the string field `body.<name>`, which the request type needs.
    pub(crate) fn required_body_str(&self, name: &str) -> Result<&str, RequestError> {
        self.body_str(name)?
            .ok_or_else(|| RequestError::invalid_parameter(format!("body.{name}"), "is missing"))
    }
}

/// A reply or a pushed event: the socket.io event name and its payload.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) name: String,
    pub(crate) payload: Value,
}

impl Outgoing {
    /// A success reply of type `name` with `body`.
    pub(crate) fn success(request: &Request, name: impl Into<String>, body: Value) -> Outgoing {
        let mut payload = json!({ "rid": request.tid, "body": body });
        if let Some(cid) = &request.cid {
            payload["cid"] = json!(cid);
        }
        Outgoing {
            name: name.into(),
            payload,
        }
    }
}

/// Why a request failed, as its error reply carries it.
#[derive(Debug)]
pub(crate) struct RequestError {
    /// Last part of the reply type `<request type>:error:<reason>`.
    pub(crate) reason: String,
    pub(crate) description: String,
    /// The REST API's `type` code, for errors that came from it.
    pub(crate) code: Option<String>,
    pub(crate) invalid_parameters: Vec<InvalidParameter>,
    /// The request's `tid`, known once the envelope was read.
    pub(crate) rid: Option<String>,
}

impl RequestError {
    pub(crate) fn new(reason: impl Into<String>, description: impl Into<String>) -> Self {
        RequestError {
            reason: reason.into(),
            description: description.into(),
            code: None,
            invalid_parameters: Vec::new(),
            rid: None,
        }
    }

    pub(crate) fn invalid_request(description: impl Into<String>) -> Self {
        RequestError::new("invalid-request", description)
    }

    /// An error about one field of the request, named by its path (`cid`, `body.answer`).
    pub(crate) fn invalid_parameter(name: impl Into<String>, reason: impl Into<String>) -> Self {
        let parameter = InvalidParameter {
            name: name.into(),
            reason: reason.into(),
        };
        let mut error = RequestError::new(
            "invalid-parameters",
            format!("invalid {}: {}", parameter.name, parameter.reason),
        );
        error.invalid_parameters.push(parameter);
        error
    }

    pub(crate) fn with_rid(mut self, rid: &str) -> Self {
        self.rid = Some(rid.to_owned());
        self
    }

    /// Builds the error reply to a request of type `kind`.
    pub(crate) fn reply(&self, kind: &str) -> Outgoing {
        let name = if is_echoable_type(kind) {
            format!("{kind}:error:{}", self.reason)
        } else {
            "request:error:invalid-type".to_owned()
        };
        let mut payload = json!({
            "type": name,
            "description": self.description,
        });
        if let Some(rid) = &self.rid {
            payload["rid"] = json!(rid);
        }
        if let Some(code) = &self.code {
            payload["code"] = json!(code);
        }
        if !self.invalid_parameters.is_empty() {
            payload["invalid_parameters"] = json!(self.invalid_parameters);
        }
        Outgoing { name, payload }
    }
}

impl From<room::RoomError> for RequestError {
    fn from(error: room::RoomError) -> Self {
        ApiError::from(error).into()
    }
}

impl From<ApiError> for RequestError {
    fn from(error: ApiError) -> Self {
        let code = error.code();
        let invalid_parameters = match &error {
            ApiError::InvalidParameters { parameters, .. } => parameters.clone(),
            _ => Vec::new(),
        };
        RequestError {
            reason: reason_of_code(code).to_owned(),
            description: error.to_string(),
            code: Some(code.to_owned()),
            invalid_parameters,
            rid: None,
        }
    }
}

/// Returns the reason part of a REST error code: `not-found` of `conversation:error:not-found`.
pub(crate) fn reason_of_code(code: &str) -> &str {
    code.rsplit_once(":error:")
        .map_or(code, |(_, reason)| reason)
}

/// Returns whether a request type can be echoed in a reply type: short, and made of the
/// characters types are made of, so that a client cannot make the node emit arbitrary names.
pub(crate) fn is_echoable_type(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= MAX_TYPE_LENGTH
        && kind
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_reads_routing_fields() {
        let payload = json!({
            "tid": "t1", "cid": "CON-1", "from": "MEM-1", "rtc_id": "LEG-1",
            "body": { "answer": "v=0" }
        });
        let request = Request::parse("rtc:answer", Some(payload)).expect("a valid envelope");
        assert_eq!(request.tid, "t1");
        assert_eq!(request.cid.as_deref(), Some("CON-1"));
        assert_eq!(request.from.as_deref(), Some("MEM-1"));
        assert_eq!(request.rtc_id.as_deref(), Some("LEG-1"));
        assert_eq!(request.required_body_str("answer").ok(), Some("v=0"));
    }

    #[test]
    fn envelope_without_tid_is_rejected() {
        let error = Request::parse("conversation:get", Some(json!({ "cid": "CON-1" })))
            .expect_err("no tid");
        assert_eq!(error.reason, "invalid-parameters");
        assert_eq!(error.invalid_parameters[0].name, "tid");
        assert!(error.rid.is_none());
    }

    #[test]
    fn envelope_field_of_wrong_type_names_it() {
        let error = Request::parse("conversation:get", Some(json!({ "tid": "t", "cid": 5 })))
            .expect_err("cid is a number");
        assert_eq!(error.invalid_parameters[0].name, "cid");
        assert_eq!(error.rid.as_deref(), Some("t"));
    }

    #[test]
    fn payload_that_is_not_an_object_is_rejected() {
        for payload in [None, Some(json!("text")), Some(json!([1, 2]))] {
            let error = Request::parse("session:login", payload).expect_err("not an object");
            assert_eq!(error.reason, "invalid-request");
        }
    }

    #[test]
    fn error_reply_echoes_only_plain_types() {
        let error = RequestError::new("unsupported", "no");
        assert_eq!(error.reply("text:seen").name, "text:seen:error:unsupported");
        assert_eq!(error.reply("<script>").name, "request:error:invalid-type");
        assert_eq!(
            error.reply(&"a".repeat(MAX_TYPE_LENGTH + 1)).name,
            "request:error:invalid-type"
        );
    }

    #[test]
    fn reason_comes_from_rest_code() {
        assert_eq!(reason_of_code("conversation:error:not-found"), "not-found");
        assert_eq!(reason_of_code("plain"), "plain");
    }
}
