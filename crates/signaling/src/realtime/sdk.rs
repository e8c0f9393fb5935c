//! Conversions from the REST API's JSON to the shapes the Nexmo JavaScript SDK 4.x reads.
//!
//! The SDK keys members by `member_id` where REST has `id`, reads a user's conversations as a
//! flat list with `member_id` and `state`, and takes events with the conversation's id as
//! `cid`. It ignores fields it does not know, so the REST fields stay where they do no harm.

use serde_json::{Map, Value, json};

/// Converts a REST member (`MemberView`) to the SDK's member object.
pub(crate) fn member(rest: &Value) -> Value {
    let mut member = rest.as_object().cloned().unwrap_or_default();
    if let Some(id) = member.remove("id") {
        member.insert("member_id".to_owned(), id);
    }
    member.remove("href");
    Value::Object(member)
}

/// Converts a REST conversation (`ConversationView`) to the body of `conversation:get:success`.
pub(crate) fn conversation(rest: &Value) -> Value {
    let mut conversation = rest.as_object().cloned().unwrap_or_default();
    conversation.remove("href");
    let members: Vec<Value> = rest["members"]
        .as_array()
        .map(|members| members.iter().map(member).collect())
        .unwrap_or_default();
    conversation.insert("members".to_owned(), Value::Array(members));
    Value::Object(conversation)
}

/// Converts an entry of `GET /users/{id}/conversations` to an entry of
/// `user:conversations:success`: the conversation with the user's `member_id` and `state`.
pub(crate) fn user_conversation(rest: &Value) -> Value {
    let mut entry = rest.as_object().cloned().unwrap_or_default();
    entry.remove("href");
    if let Some(member) = entry.remove("member") {
        entry.insert("member_id".to_owned(), member["id"].clone());
        entry.insert("state".to_owned(), member["state"].clone());
    }
    Value::Object(entry)
}

/// Converts a REST event (`EventView`) of conversation `cid` to the payload of the pushed
/// event, and returns its type: `{cid, from, to?, id, timestamp, body}`.
pub(crate) fn event(cid: &str, rest: &Value) -> Option<(String, Value)> {
    let kind = rest["type"].as_str()?.to_owned();
    let mut payload = Map::new();
    payload.insert("cid".to_owned(), json!(cid));
    for field in ["id", "from", "to", "timestamp", "body"] {
        if let Some(value) = rest.get(field) {
            payload.insert(field.to_owned(), value.clone());
        }
    }
    payload.insert("type".to_owned(), json!(kind));
    Some((kind, Value::Object(payload)))
}

/// Returns the items of a REST page (`{_embedded: {<name>: [...]}}`).
pub(crate) fn page_items<'a>(page: &'a Value, name: &str) -> &'a [Value] {
    page["_embedded"][name]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Returns the path and query of a REST page's `next` link, relative to the API base.
pub(crate) fn next_page(page: &Value) -> Option<String> {
    let href = page["_links"]["next"]["href"].as_str()?;
    href.strip_prefix(crate::views::API_BASE).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_is_keyed_by_member_id() {
        let rest = json!({
            "id": "MEM-1", "conversation_id": "CON-1", "user_id": "USR-1", "name": "alice",
            "state": "JOINED", "timestamp": { "joined": "2026-01-01T00:00:00Z" },
            "channel": { "type": "app" }, "media": {}, "href": "/v0.1/x"
        });
        let member = member(&rest);
        assert_eq!(member["member_id"], "MEM-1");
        assert_eq!(member["user_id"], "USR-1");
        assert_eq!(member["name"], "alice");
        assert!(member.get("id").is_none());
        assert!(member.get("href").is_none());
        assert!(member["timestamp"].is_object());
    }

    #[test]
    fn user_conversation_carries_member_and_state() {
        let rest = json!({
            "id": "CON-1", "name": "standup", "href": "/v0.1/conversations/CON-1",
            "member": { "id": "MEM-1", "state": "INVITED", "href": "/v0.1/x" }
        });
        let entry = user_conversation(&rest);
        assert_eq!(entry["id"], "CON-1");
        assert_eq!(entry["member_id"], "MEM-1");
        assert_eq!(entry["state"], "INVITED");
    }

    #[test]
    fn event_gets_cid_and_keeps_its_fields() {
        let rest = json!({
            "id": 4, "type": "video:mute:on", "from": "MEM-1", "to": "MEM-2",
            "body": { "rtc_id": "LEG-1" }, "timestamp": "2026-01-01T00:00:00Z", "href": "/x"
        });
        let (kind, payload) = event("CON-1", &rest).expect("a typed event");
        assert_eq!(kind, "video:mute:on");
        assert_eq!(payload["cid"], "CON-1");
        assert_eq!(payload["from"], "MEM-1");
        assert_eq!(payload["to"], "MEM-2");
        assert_eq!(payload["id"], 4);
        assert_eq!(payload["body"]["rtc_id"], "LEG-1");
        assert!(payload.get("href").is_none());
    }

    #[test]
    fn next_page_is_relative_to_the_api_base() {
        let page =
            json!({ "_links": { "next": { "href": "/v0.1/users/U/conversations?cursor=x" } } });
        assert_eq!(
            next_page(&page).as_deref(),
            Some("/users/U/conversations?cursor=x")
        );
        assert_eq!(next_page(&json!({ "_links": {} })), None);
    }
}
