//! A part's body as lettre's `Body::new` makes it — the same transfer
//! encoding chosen the same way, CRLF line ends, the same bytes (the
//! tests hold the two equal) — with each pass eight bytes a step.
//!
//! In the component (wasm32, no vector instructions) lettre's byte-by-byte
//! passes were most of the cost of sending a 41 KB newsletter, over half
//! the server's CPU at 8 connections: the quoted-printable encoder
//! (`quoted_printable`, pushing one `char` at a time) 26%, the CRLF pass
//! 15% plus 10% in copies (it inserts each `\r` into the string, moving
//! the rest of the body each time), choosing the encoding (counting the
//! bytes quoted-printable would escape) 11%. With this module and the
//! client's `wire_ready`, the server's CPU per message went from ~770 to
//! ~410 µs.

use lettre::message::Body;
use lettre::message::header::ContentTransferEncoding;

use crate::word::{self, HIGHS, LOWS, ONES};

/// The body for `text`: 7bit when it is ASCII with lines under 76 bytes,
/// otherwise quoted-printable or, when more than a third of its bytes would
/// need escaping, base64 (email_encoding's choice for a server without
/// SMTPUTF8, which is what lettre asks for).
pub fn new(text: String) -> Body {
    let bytes = text.as_bytes();
    let short_lines = !line_too_long(bytes);
    if text.is_ascii() && short_lines {
        return Body::dangerous_pre_encoded(crlf(text).into_bytes(), ContentTransferEncoding::SevenBit);
    }
    if escaped_by_quoted_printable(bytes) > bytes.len() / 3 {
        // Rare for mail text; lettre's own path does base64.
        return Body::new(text);
    }
    // lettre makes the line ends CRLF first; the encoder takes a bare LF
    // as the CRLF that pass would have made it.
    Body::dangerous_pre_encoded(quoted_printable(bytes), ContentTransferEncoding::QuotedPrintable)
}

/// Whether a line is 76 bytes or longer, counted as email_encoding counts
/// (from one `\n` to the next, the first from the start).
fn line_too_long(b: &[u8]) -> bool {
    let mut last = 0;
    for i in memchr::memchr_iter(b'\n', b) {
        if i - last >= 76 {
            return true;
        }
        last = i;
    }
    b.len() - last >= 76
}

/// How many bytes quoted-printable escapes as text: all but tab and
/// `' '..='~'`.
fn escaped_by_quoted_printable(b: &[u8]) -> usize {
    let words = b.chunks_exact(8);
    let tail = words.remainder();
    let mut n: usize = tail.iter().filter(|&&c| !matches!(c, b'\t' | b' '..=b'~')).count();
    for chunk in words {
        n += word::load(chunk).map_or(0, |w| escaped_mask(w).count_ones() as usize);
    }
    n
}

/// One high bit per byte of `w` outside tab and `' '..='~'`, exactly:
/// below 0x20 (high bit clear, and adding 0x60 does not carry into it)
/// but not a tab, 0x7f, or 0x80 and above.
fn escaped_mask(w: u64) -> u64 {
    let control = !((w & LOWS) + ONES * 0x60) & !w & HIGHS;
    (control & !word::equal(w, b'\t')) | word::equal(w, 0x7f) | (w & HIGHS)
}

/// `text` with a `\r` before every `\n` that lacks one (a lone `\r` stays
/// as it is), as lettre's `Body::new` does.
fn crlf(text: String) -> String {
    let b = text.as_bytes();
    let bare = memchr::memchr_iter(b'\n', b)
        .filter(|&i| i == 0 || b[i - 1] != b'\r')
        .count();
    if bare == 0 {
        return text;
    }
    let mut out = String::with_capacity(text.len() + bare);
    let mut from = 0;
    for i in memchr::memchr_iter(b'\n', b) {
        if i == 0 || b[i - 1] != b'\r' {
            out.push_str(&text[from..i]);
            out.push('\r');
            from = i;
        }
    }
    out.push_str(&text[from..]);
    out
}

/// Quoted-printable lines are at most this long, the soft break's `=`
/// included.
const LIMIT: usize = 76;

/// `input` in quoted-printable as text (a CRLF, or a bare LF, stays a
/// line end), the bytes `quoted_printable::encode` writes for `input`
/// with CRLF line ends: a byte that needs it as `=XX`, a space or tab
/// before a line end too, soft breaks (`=` CRLF) to keep lines within
/// `LIMIT`, put where that crate puts them.
fn quoted_printable(input: &[u8]) -> Vec<u8> {
    let mut line = Line {
        out: Vec::with_capacity(input.len() + input.len() / 16),
        on_line: 0,
        backup: 0,
    };
    let mut was_cr = false;
    let mut i = 0;
    while i < input.len() {
        let byte = input[i];
        i += 1;
        if was_cr || byte == b'\n' {
            if byte == b'\n' {
                line.encode_trailing_space_tab();
                line.out.extend_from_slice(b"\r\n");
                line.on_line = 0;
                was_cr = false;
                continue;
            }
            line.append(b"=0D");
        }
        was_cr = byte == b'\r';
        if was_cr {
            continue;
        }
        if LIMIT - line.on_line >= 3 && !needs_encoding(byte) {
            // A run of bytes that need no escape, as long as fits before
            // the line's last two places.
            let start = i - 1;
            let end = start + clean_prefix(&input[start..], LIMIT - line.on_line - 2);
            line.out.extend_from_slice(&input[start..end]);
            line.on_line += end - start;
            line.backup = line.out.len();
            i = end;
            continue;
        }
        match byte {
            b'=' => line.append(b"=3D"),
            b'\t' | b' '..=b'~' => line.append(&[byte]),
            _ => line.append(&[b'=', HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]]),
        }
    }
    if was_cr {
        line.append(b"=0D");
    } else {
        line.encode_trailing_space_tab();
    }
    line.out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn needs_encoding(c: u8) -> bool {
    !matches!(c, b'\t' | b' '..=b'<' | b'>'..=b'~')
}

/// How many of the first bytes of `b` (at least one, at most `max`) need
/// no escape; `b[0]` needs none.
fn clean_prefix(b: &[u8], max: usize) -> usize {
    let mut n = 0;
    while n < max {
        let Some(w) = word::load(&b[n..]) else {
            break;
        };
        let found = escaped_mask(w) | word::equal(w, b'=');
        if found != 0 {
            return (n + (found.trailing_zeros() / 8) as usize).min(max);
        }
        n += 8;
    }
    while n < max && n < b.len() && !needs_encoding(b[n]) {
        n += 1;
    }
    n.min(max)
}

/// The output and where its last line stands, as `quoted_printable`
/// tracks them.
struct Line {
    out: Vec<u8>,
    /// Bytes on the current line.
    on_line: usize,
    /// Where the last thing appended starts: a soft break that does not
    /// fit after it goes in front of it.
    backup: usize,
}

impl Line {
    fn append(&mut self, s: &[u8]) {
        if self.on_line + s.len() > LIMIT {
            if self.on_line == LIMIT {
                // In front of the last thing appended (a few bytes).
                let (at, end) = (self.backup, self.out.len());
                self.on_line = end - at;
                self.out.extend_from_slice(b"=\r\n");
                self.out.copy_within(at..end, at + 3);
                self.out[at..at + 3].copy_from_slice(b"=\r\n");
            } else {
                self.out.extend_from_slice(b"=\r\n");
                self.on_line = 0;
            }
        }
        self.out.extend_from_slice(s);
        self.on_line += s.len();
        self.backup = self.out.len() - s.len();
    }

    /// A space or tab may not end a line: the last one goes out escaped.
    fn encode_trailing_space_tab(&mut self) {
        let escaped: &[u8] = match self.out.last() {
            Some(b' ') => b"=20",
            Some(b'\t') => b"=09",
            _ => return,
        };
        self.on_line -= 1;
        self.out.pop();
        self.append(escaped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn same_as_lettre(text: &str) {
        let ours = new(text.to_string());
        let theirs = Body::new(text.to_string());
        assert_eq!(ours.encoding(), theirs.encoding(), "encoding of {text:?}");
        assert_eq!(
            String::from_utf8_lossy(ours.as_ref()),
            String::from_utf8_lossy(theirs.as_ref()),
            "body of {text:?}"
        );
    }

    /// `crlf` over bytes: a CR before every LF that lacks one.
    fn crlf_bytes(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &c) in b.iter().enumerate() {
            if c == b'\n' && (i == 0 || b[i - 1] != b'\r') {
                out.push(b'\r');
            }
            out.push(c);
        }
        out
    }

    #[test]
    fn quoted_printable_writes_the_bytes_the_crate_writes() {
        let alphabet: &[&[u8]] = &[
            b"a",
            b"b",
            b" ",
            b"\t",
            b"=",
            b"\r\n",
            b"\r",
            b"\n",
            "é".as_bytes(),
            b"\x7f",
            b"\x00",
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for len in 0..600 {
            let mut text = Vec::new();
            for _ in 0..len {
                // Mostly letters, so lines reach the limit.
                let pick = rng.usize(..alphabet.len() * 4);
                text.extend_from_slice(alphabet.get(pick).copied().unwrap_or(b"x"));
            }
            let (ours, theirs) = (quoted_printable(&text), ::quoted_printable::encode(crlf_bytes(&text)));
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs),
                "{text:?}"
            );
        }
        for len in 70..90 {
            for tail in [
                &b" "[..],
                b"\t",
                b"=",
                b"\r",
                b" \r\n",
                b"\t\r\nx",
                b"\xff",
                b" \nx",
                b"\r\r\n",
            ] {
                let text = [&b"x".repeat(len)[..], tail].concat();
                assert_eq!(
                    quoted_printable(&text),
                    ::quoted_printable::encode(crlf_bytes(&text)),
                    "{text:?}"
                );
            }
        }
    }

    #[test]
    fn the_escape_count_is_email_encodings_count() {
        let naive = |b: &[u8]| b.iter().filter(|&&c| !matches!(c, b'\t' | b' '..=b'~')).count();
        for byte in 0..=255u8 {
            for at in 0..24 {
                let mut b = vec![b'a'; 24];
                b[at] = byte;
                assert_eq!(escaped_by_quoted_printable(&b), naive(&b), "byte {byte:#x} at {at}");
                b.fill(byte);
                assert_eq!(
                    escaped_by_quoted_printable(&b[at..]),
                    naive(&b[at..]),
                    "run of {byte:#x}"
                );
            }
        }
        let mut rng = fastrand::Rng::with_seed(7);
        let bytes: Vec<u8> = (0..4096).map(|_| rng.u8(..)).collect();
        for len in 0..200 {
            assert_eq!(
                escaped_by_quoted_printable(&bytes[..len * 20]),
                naive(&bytes[..len * 20])
            );
        }
    }

    #[test]
    fn every_byte_and_line_length_is_encoded_as_lettre_encodes_it() {
        same_as_lettre("");
        for c in (0u8..0x80).map(char::from).chain(['é', '✉', '\u{80}', '\u{2028}']) {
            for len in [1, 7, 8, 9, 74, 75, 76, 77, 78] {
                for at in [0, len / 2, len - 1] {
                    let mut line: String = "a".repeat(len);
                    line.replace_range(at..at + 1, &c.to_string());
                    same_as_lettre(&line);
                    same_as_lettre(&format!("{line}\n"));
                    same_as_lettre(&format!("\n{line}\r\n{line}\r"));
                }
            }
        }
    }

    #[test]
    fn line_ends_and_mail_sized_bodies_are_encoded_as_lettre_encodes_them() {
        for text in [
            "one\ntwo\r\nthree\rfour\n\n\r\n\r\r\n",
            "\n\nstarts with line ends",
            "trailing space \ntrailing tab\t\n= signs = everywhere =\n",
            "Hi Reader, you are on the pro plan.\nUnsubscribe: https://example.org/unsubscribe/1/2/abc\n",
        ] {
            same_as_lettre(text);
        }
        let row = "<tr><td style=\"padding:12px;font-family:Arial\">Lorem ipsum dolor sit amet, consectetur \
                   adipiscing elit = sed do eiusmod.\t<a href=\"https://example.org/a?b=c&d=e\">Read</a></td></tr>\n";
        same_as_lettre(&row.repeat(150));
        same_as_lettre(&row.repeat(150).replace('\n', "\r\n"));
        same_as_lettre(&format!("{}Grüße, ✉ 日本語\n", row.repeat(20)));
        // Mostly non-ASCII: base64.
        same_as_lettre(&"日本語のメール\n".repeat(40));
        // Random text over an alphabet rich in what the encodings care about.
        let alphabet: Vec<char> = "ab \t=\r\n.é✉\u{7f}\u{1}".chars().collect();
        let mut rng = fastrand::Rng::with_seed(7);
        for len in (0..400).step_by(3) {
            let text: String = (0..len).map(|_| alphabet[rng.usize(..alphabet.len())]).collect();
            same_as_lettre(&text);
        }
    }
}
