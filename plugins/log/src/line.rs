// The outbox line format, shared by the log component and, compiled
// natively, by the host's `native-bench` baseline (host/src/plugins/native.rs
// includes this file). Types come through `super::` (Message).
//
// The line is the JSON object serde_json writes for these fields, byte for
// byte (lib.rs's tests hold that), written here because serde_json escapes
// a string one byte at a time: in the component (wasm32, no vector
// instructions) that was 27% of the server's CPU on the log path with a
// 41 KB newsletter (`bench --only newsletter`); `string` below, eight bytes
// a step, made it 16%, and the whole send 272 → 233 µs of CPU per message.

use super::Message;

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
        string(buf, value);
    }
    buf.extend_from_slice(b",\"headers\":[");
    for (i, h) in m.headers.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.push(b'[');
        string(buf, &h.name);
        buf.push(b',');
        string(buf, &h.value);
        buf.push(b']');
    }
    buf.extend_from_slice(b"]}\n");
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The bytes of the little-endian word `w` that may need an escape (a
/// control character below 0x20, `"` or `\`), as their high bits. The
/// lowest set bit is exact: it marks the first byte that needs one, or
/// none is set when no byte does (a borrow can set bits above a real
/// match, never below one).
fn escapes(w: u64) -> u64 {
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    control | zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\')))
}

/// Appends `s` as a JSON string, escaped as serde_json escapes it: `\"`,
/// `\\`, `\b \f \n \r \t`, other control characters as `\u00xx`;
/// everything else (non-ASCII included) as is.
///
/// Eight bytes a step, and every write has a size known at compile time (a
/// word, an escape), so none is a `memcpy` call: in the component a copy of
/// variable length is wasm's `memory.copy`, which wasmtime runs as a call
/// out to the host, and HTML needs an escape every 50 bytes or so
/// (attribute quotes, line ends).
fn string(buf: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    buf.push(b'"');
    let mut i = 0;
    while let Some(word) = bytes.get(i..i + 8) {
        let word: [u8; 8] = word.try_into().expect("eight bytes");
        let found = escapes(u64::from_le_bytes(word));
        // The word goes out whole; what follows its first escape is taken
        // back off and looked at again from there.
        buf.extend_from_slice(&word);
        if found == 0 {
            i += 8;
            continue;
        }
        let at = (found.trailing_zeros() / 8) as usize;
        buf.truncate(buf.len() - (8 - at));
        escape(buf, word[at]);
        i += at + 1;
    }
    for &b in &bytes[i..] {
        escape(buf, b);
    }
    buf.push(b'"');
}

/// Appends byte `b` of a JSON string, escaped if it needs it.
fn escape(buf: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match b {
        b'"' => buf.extend_from_slice(b"\\\""),
        b'\\' => buf.extend_from_slice(b"\\\\"),
        b'\n' => buf.extend_from_slice(b"\\n"),
        b'\r' => buf.extend_from_slice(b"\\r"),
        b'\t' => buf.extend_from_slice(b"\\t"),
        0x08 => buf.extend_from_slice(b"\\b"),
        0x0c => buf.extend_from_slice(b"\\f"),
        0x00..=0x1f => buf.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(b >> 4)],
            HEX[usize::from(b & 0xf)],
        ]),
        _ => buf.push(b),
    }
}
