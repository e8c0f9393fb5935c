//! Checks every response a test receives against the OpenAPI document the node serves, so
//! that the document and the handlers cannot drift apart unnoticed.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::{Method, StatusCode};
use jsonschema::{Draft, Validator};
use serde_json::{Value, json};

/// The served document and the validators built from it so far, by JSON pointer.
pub struct ResponseChecker {
    document: Value,
    validators: Mutex<HashMap<String, std::sync::Arc<Validator>>>,
}

impl ResponseChecker {
    pub fn new(document: Value) -> Self {
        assert!(
            document["paths"]
                .as_object()
                .is_some_and(|paths| !paths.is_empty()),
            "the OpenAPI document has no paths: {document}"
        );
        ResponseChecker {
            document,
            validators: Mutex::new(HashMap::new()),
        }
    }

    /// Panics unless the response matches what the document declares for the route. Routes
    /// the document does not list (`/healthz`, unknown paths) are not checked.
    pub fn check(&self, method: &Method, uri: &str, status: StatusCode, body: &Value) {
        let path = uri.split('?').next().unwrap_or(uri);
        let Some(template) = self.find_template(path) else {
            return;
        };
        let method_key = method.as_str().to_ascii_lowercase();
        let operation = &self.document["paths"][&template][&method_key];
        if operation.is_null() {
            // A method the route does not have: the node returns 405 with the error body.
            assert_eq!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {template}"
            );
            return;
        }

        let status_key = status.as_str().to_owned();
        let declared = &operation["responses"][&status_key];
        let response_key = if declared.is_null() {
            assert!(
                !status.is_success(),
                "{method} {template} returned {status}, which the OpenAPI document does not \
                 declare: {body}"
            );
            "default".to_owned()
        } else {
            status_key
        };

        let schema =
            &operation["responses"][&response_key]["content"]["application/json"]["schema"];
        if schema.is_null() {
            assert!(
                body.is_null(),
                "{method} {template} {status} declares no body but returned {body}"
            );
            return;
        }
        let pointer = format!(
            "#/paths/{}/{method_key}/responses/{response_key}/content/application~1json/schema",
            escape_pointer(&template)
        );
        let validator = self.validator(&pointer);
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|error| format!("{} at {}", error, error.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {uri} {status}: the body does not match the OpenAPI document:\n{}\nbody: \
             {body}",
            errors.join("\n")
        );
    }

    /// Finds the path template that matches a concrete path, preferring literal segments.
    fn find_template(&self, path: &str) -> Option<String> {
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let paths = self.document["paths"].as_object()?;
        paths
            .keys()
            .filter_map(|template| {
                let parts: Vec<&str> = template.split('/').collect();
                if parts.len() != segments.len() {
                    return None;
                }
                let mut literal = 0;
                for (part, segment) in parts.iter().zip(&segments) {
                    if part.starts_with('{') && part.ends_with('}') {
                        continue;
                    }
                    if part != segment {
                        return None;
                    }
                    literal += 1;
                }
                Some((literal, template.clone()))
            })
            .max_by_key(|(literal, _)| *literal)
            .map(|(_, template)| template)
    }

    /// Builds a validator whose root is the whole document, so that the `$ref`s inside the
    /// response schema resolve against its components.
    fn validator(&self, pointer: &str) -> std::sync::Arc<Validator> {
        let mut validators = self.validators.lock().expect("validators lock");
        if let Some(validator) = validators.get(pointer) {
            return validator.clone();
        }
        let mut root = self.document.clone();
        root["$ref"] = json!(pointer);
        let validator = jsonschema::options()
            .with_draft(Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|error| panic!("the schema at {pointer} does not compile: {error}"));
        let validator = std::sync::Arc::new(validator);
        validators.insert(pointer.to_owned(), validator.clone());
        validator
    }
}

/// Escapes a path for use as one JSON pointer token in a URI fragment (RFC 6901).
fn escape_pointer(token: &str) -> String {
    // Braces of path templates are not allowed in a URI fragment, so they are percent-encoded.
    token
        .replace('~', "~0")
        .replace('/', "~1")
        .replace('{', "%7B")
        .replace('}', "%7D")
}
