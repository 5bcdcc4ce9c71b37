// The outbox line format, shared by the log component and, compiled
// natively, by the host's `native-bench` baseline (host/src/plugins/native.rs
// includes this file). Types come through `super::` (Message).

use serde::Serialize;

use super::Message;

#[derive(Serialize)]
struct Line<'a> {
    /// Unix time in milliseconds when the line was written: lets tests and
    /// operators check the spacing a send_rate produces.
    logged_at_ms: u128,
    message_id: &'a str,
    from: &'a str,
    from_name: &'a str,
    to: &'a str,
    to_name: &'a str,
    subject: &'a str,
    html: &'a str,
    text: &'a str,
    headers: Vec<(&'a str, &'a str)>,
}

/// One JSON line, newline included.
pub fn encode(message: &Message, logged_at_ms: u128) -> Result<Vec<u8>, String> {
    let line = Line {
        logged_at_ms,
        message_id: &message.message_id,
        from: &message.from.email,
        from_name: &message.from.name,
        to: &message.to.email,
        to_name: &message.to.name,
        subject: &message.subject,
        html: &message.html,
        text: &message.text,
        headers: message
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str()))
            .collect(),
    };
    let mut buf = serde_json::to_vec(&line).map_err(|e| format!("cannot encode: {e}"))?;
    buf.push(b'\n');
    Ok(buf)
}
