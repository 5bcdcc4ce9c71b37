//! Examples in the OpenAPI document: a valid request for each operation
//! that creates or changes something, and real ids for path parameters,
//! so a reader can copy them and a fuzzer (schemathesis's examples and
//! stateful phases) reaches past the validation into the operation, and
//! from a created resource along the document's links to the operations
//! on it. The ids are those the first list, subscriber, campaign and
//! webhook of a new server get; the sender domain is `example.org`, and
//! the one to remove `example.net`.

use serde_json::{Value, json};

/// A bounce report as Postfix writes one, for a Posta message.
const DSN: &str = include_str!("../../../tests/fixtures/dsn/postfix-hard.eml");

/// Request bodies, by path and method.
fn bodies() -> Vec<(&'static str, &'static str, &'static str, Value)> {
    // Quoting mail Posta did not send: recorded by address alone.
    let dsn = DSN
        .replace("RCPT@example.com", "a@example.org")
        .replace("MSGID", "20261128100000.4Q0@mail.example.org");
    vec![
        (
            "/api/v1/admin/users",
            "post",
            "application/json",
            json!({"email": "new-user@example.org"}),
        ),
        (
            "/api/v1/admin/users/{id}/domains",
            "post",
            "application/json",
            json!({"domain": "example.net"}),
        ),
        (
            "/api/v1/users/me/lists",
            "post",
            "application/json",
            json!({"name": "Newsletter"}),
        ),
        (
            "/api/v1/users/me/lists/{id}/subscribers",
            "post",
            "application/json",
            json!([{"email": "new@example.org", "name": "New Reader", "timezone": "Europe/Paris"}]),
        ),
        (
            "/api/v1/users/me/lists/{id}/subscribers/{sid}",
            "patch",
            "application/json",
            json!({"name": "Ada Lovelace", "attributes": {"plan": "pro"}}),
        ),
        (
            "/api/v1/users/me/campaigns",
            "post",
            "application/json",
            // One a minute: still sending while its pause, resume and
            // cancel are tried.
            json!({"name": "Spring news", "subject": "Hello {{ subscriber.name }}",
                   "from_email": "news@example.org", "list_id": 1, "text": "Hi {{ subscriber.name }}!",
                   "send_rate": 1}),
        ),
        (
            "/api/v1/users/me/campaigns/{id}",
            "patch",
            "application/json",
            json!({"subject": "Hello again, {{ subscriber.name }}"}),
        ),
        (
            "/api/v1/users/me/campaigns/{id}/test",
            "post",
            "application/json",
            json!({"emails": ["proof@example.org"]}),
        ),
        (
            "/api/v1/users/me/bounces",
            "post",
            "application/json",
            json!({"email": "a@example.org", "type": "soft", "reason": "452 4.2.2 mailbox full"}),
        ),
        ("/api/v1/users/me/bounces/dsn", "post", "text/plain", Value::String(dsn)),
        (
            "/api/v1/users/me/suppressions",
            "post",
            "application/json",
            json!({"email": "gone@example.org", "reason": "manual", "detail": "asked by phone"}),
        ),
        (
            "/api/v1/users/me/segments",
            "post",
            "application/json",
            json!({"name": "Pro readers", "list_id": 1, "match": "all",
                   "rules": [{"field": "attributes.plan", "op": "eq", "value": "pro"},
                             {"field": "created_at", "op": "gte", "value": "2025-01-01"}]}),
        ),
        (
            "/api/v1/users/me/segments/{id}",
            "patch",
            "application/json",
            json!({"rules": [{"field": "email", "op": "contains", "value": "@example.org"}]}),
        ),
        (
            "/api/v1/users/me/webhooks",
            "post",
            "application/json",
            json!({"url": "https://hooks.example.com/posta", "events": ["message.failed", "message.bounced"]}),
        ),
        (
            "/api/v1/users/me/campaigns/{id}/ab/winner",
            "post",
            "application/json",
            json!({"variant": 1}),
        ),
    ]
}

/// A path parameter's example, by its operation and name. Campaign 1 is
/// a draft; 2 and 4 are sending (slowly) and 3 is paused, so that a pause,
/// a resume and a cancel each find a campaign they apply to; drafts 5, 6
/// and 7 are an edit's, a send's and a deletion's own; 8 is an A/B test
/// still in its test, for picking its winner
/// (`scripts/fuzz-api.sh` makes them, `scripts/fuzz_hooks.py` keeps the
/// other operations off them).
fn parameter(path: &str, method: &str, name: &str) -> Option<Value> {
    let campaign = path == "/api/v1/users/me/campaigns/{id}";
    Some(match name {
        "id" if campaign && method == "patch" => json!(5),
        "id" if campaign && method == "delete" => json!(7),
        "id" if path.ends_with("/send") => json!(6),
        "id" if path.ends_with("/pause") => json!(2),
        "id" if path.ends_with("/resume") => json!(3),
        "id" if path.ends_with("/cancel") => json!(4),
        "id" if path.ends_with("/ab/winner") => json!(8),
        "id" | "sid" | "key_id" => json!(1),
        "email" => json!("a@example.org"),
        // Not the domain the fuzzed campaigns send from (example.org):
        // a removal of that one would fail every later send and edit.
        "domain" => json!("example.net"),
        _ => return None,
    })
}

/// Adds the examples to `doc` (the serialized document).
pub(super) fn add(doc: &mut Value) {
    for (path, method, content_type, example) in bodies() {
        let at = format!(
            "/paths/{}/{method}/requestBody/content/{}",
            pointer(path),
            pointer(content_type)
        );
        if let Some(content) = doc.pointer_mut(&at).and_then(Value::as_object_mut) {
            content.insert("example".into(), example);
        }
    }
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for (method, op) in item.iter_mut() {
            let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else {
                continue;
            };
            for p in params.iter_mut().filter_map(Value::as_object_mut) {
                let in_path = p.get("in").and_then(Value::as_str) == Some("path");
                let example = p
                    .get("name")
                    .and_then(Value::as_str)
                    .and_then(|n| parameter(path, method, n));
                if let (true, Some(example)) = (in_path, example) {
                    p.insert("example".into(), example);
                }
            }
        }
    }
}

/// A JSON pointer token: `~` and `/` escaped.
fn pointer(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every example lands on an operation of the document (a renamed path
    /// would otherwise drop its example silently).
    #[test]
    fn every_example_names_an_operation() {
        let doc = serde_json::to_value(<super::super::ApiDoc as utoipa::OpenApi>::openapi()).unwrap();
        for (path, method, content_type, _) in bodies() {
            let at = format!(
                "/paths/{}/{method}/requestBody/content/{}",
                pointer(path),
                pointer(content_type)
            );
            assert!(doc.pointer(&at).is_some(), "{method} {path} has no {content_type} body");
        }
    }
}
