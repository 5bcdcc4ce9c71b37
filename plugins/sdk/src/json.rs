// The SDK's `json` module (its doc is on `pub mod json` in lib.rs). No
// dependencies, no `crate::` paths and no inner doc comments: the host's
// native benchmark baseline includes this file as it is.
//
// serde_json escapes a string one byte at a time. In a component (wasm32
// here has no vector instructions) that is slow enough to matter: with a
// 41 KB newsletter it was 27% of the server's CPU on the bundled `log`
// component's path. `string` looks at eight bytes a step.

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
pub fn string(buf: &mut Vec<u8>, s: &str) {
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

#[cfg(test)]
mod tests {
    use super::string;

    #[track_caller]
    fn same_as_serde(s: &str) {
        let mut ours = Vec::new();
        string(&mut ours, s);
        assert_eq!(
            String::from_utf8_lossy(&ours),
            serde_json::to_string(s).unwrap(),
            "{s:?}"
        );
    }

    #[test]
    fn every_byte_is_escaped_as_serde_json_escapes_it() {
        same_as_serde("");
        // Each character below 0x80 alone, and at each offset of an
        // eight-byte word, between runs that need no escape.
        for c in (0u8..0x80).map(char::from) {
            same_as_serde(&c.to_string());
            for offset in 0..9 {
                same_as_serde(&format!("{}{c}{}", "a".repeat(offset), "b".repeat(17 - offset)));
            }
        }
    }

    #[test]
    fn strings_of_any_content_are_the_bytes_serde_json_writes() {
        same_as_serde("héllo wörld — ✉️ 日本語 \u{7f}\u{80}\u{2028}");
        same_as_serde(
            &"<tr><td style=\"padding:12px\">Lorem ipsum,\n\tconsectetur \\ adipiscing</td></tr>\r\n".repeat(400),
        );
        // Random strings over a small alphabet rich in bytes to escape.
        let alphabet: Vec<char> = "ab\"\\\n\r\t\u{0}\u{1f} é✉".chars().collect();
        let mut rng = fastrand::Rng::with_seed(7);
        for len in 0..300 {
            let text: String = (0..len).map(|_| alphabet[rng.usize(..alphabet.len())]).collect();
            same_as_serde(&text);
        }
    }
}
