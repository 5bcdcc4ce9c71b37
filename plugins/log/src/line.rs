// The outbox line format, shared by the log component and, compiled
// natively, by the host's `native-bench` baseline (host/src/plugins/native.rs
// includes this file). Types come through `super::` (Message).
//
// The line is the JSON object serde_json writes for these fields, byte for
// byte (lib.rs's tests hold that), written here because serde_json escapes
// a string one byte at a time: in the component (wasm32, no vector
// instructions) that was 27% of the server's CPU on the log path with a
// 41 KB newsletter (`bench --only newsletter`); the SDK's `json::string`,
// eight bytes a step, made it 16%, and the whole send 272 → 233 µs of CPU
// per message. The host's native baseline includes the SDK's json.rs too.

use super::{Message, json};

/// Appends one JSON line to `buf`, newline included: `logged_at_ms` (Unix
/// time in milliseconds when the line was written: lets tests and
/// operators check the spacing a send_rate produces), the message's
/// fields, and its extra headers as `[name, value]` pairs.
pub fn write(buf: &mut Vec<u8>, message: &Message, logged_at_ms: u128) {
    let m = message;
    let headers: usize = m.headers.iter().map(|h| h.name.len() + h.value.len() + 6).sum();
    buf.reserve(192 + m.subject.len() + m.html.len() + m.text.len() + headers);
    buf.extend_from_slice(b"{\"logged_at_ms\":");
    buf.extend_from_slice(logged_at_ms.to_string().as_bytes());
    for (name, value) in [
        ("message_id", &m.message_id),
        ("from", &m.from.email),
        ("from_name", &m.from.name),
        ("to", &m.to.email),
        ("to_name", &m.to.name),
        ("subject", &m.subject),
        ("html", &m.html),
        ("text", &m.text),
    ] {
        buf.extend_from_slice(b",\"");
        buf.extend_from_slice(name.as_bytes());
        buf.extend_from_slice(b"\":");
        json::string(buf, value);
    }
    buf.extend_from_slice(b",\"headers\":[");
    for (i, h) in m.headers.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.push(b'[');
        json::string(buf, &h.name);
        buf.push(b',');
        json::string(buf, &h.value);
        buf.push(b']');
    }
    buf.extend_from_slice(b"]}\n");
}
