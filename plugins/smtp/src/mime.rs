//! The RFC 5322 message: multipart/alternative (text, html), RFC
//! 2047-encoded subject and display names, the Message-ID the host gave,
//! and the personalizer's extra headers (List-Unsubscribe…).
//!
//! lettre encodes each header's value and display names; `body` encodes
//! each part's body as lettre's `Body::new` would; the two-part frame
//! around them is put together here, the bytes lettre's `MultiPart`
//! would write (a test holds the two equal). lettre's builder for that frame cost
//! about a sixth of the server's CPU at 8 SMTP connections: it parses
//! MIME types it has just written and re-parses the From header it was
//! given to check it is there.

use std::io::Write as _;
use std::time::SystemTime;

use lettre::message::header::{self, HeaderName, HeaderValue, Headers};
use lettre::message::{Mailbox, Mailboxes};
use posta_plugin_sdk::Message;

/// Headers the builder sets itself; a personalizer cannot override them.
const RESERVED: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "subject",
    "message-id",
    "date",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
];

pub struct Built {
    pub from: String,
    pub to: String,
    pub bytes: Vec<u8>,
}

/// A header's text on one line: CR, LF, NUL and other control characters
/// (subscriber data, any personalizer's output) become spaces, so they can
/// neither start a header of their own nor reach the wire raw.
fn one_line(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

fn mailbox(name: &str, email: &str, which: &str) -> Result<Mailbox, String> {
    let address = email
        .parse()
        .map_err(|e| format!("{which} address {email:?} is not valid: {e}"))?;
    let name = one_line(name);
    let name = name.trim();
    Ok(Mailbox::new((!name.is_empty()).then(|| name.to_string()), address))
}

/// A part's boundary as lettre makes one: 40 random letters and digits,
/// which no quoted-printable or base64 line can hold.
fn boundary() -> String {
    std::iter::repeat_with(fastrand::alphanumeric).take(40).collect()
}

/// Builds the message; an error is a property of the message itself and
/// will not change on retry.
pub fn build(message: Message) -> Result<Built, String> {
    assemble(message, SystemTime::now(), &boundary())
}

fn assemble(message: Message, date: SystemTime, boundary: &str) -> Result<Built, String> {
    let from = mailbox(&message.from.name, &message.from.email, "from")?;
    let to = mailbox(&message.to.name, &message.to.email, "to")?;
    let id = message.message_id.trim_matches(['<', '>']);
    let mut headers = Headers::new();
    headers.set(header::From::from(Mailboxes::from(from)));
    headers.set(header::To::from(Mailboxes::from(to)));
    headers.set(header::Subject::from(one_line(&message.subject)));
    headers.set(header::MessageId::from(format!("<{id}>")));
    headers.set(header::MIME_VERSION_1_0);
    headers.set(header::Date::new(date));
    for extra in &message.headers {
        let lower = extra.name.to_ascii_lowercase();
        if RESERVED.contains(&lower.as_str()) {
            continue;
        }
        let name = HeaderName::new_from_ascii(extra.name.clone())
            .map_err(|_| format!("header name {:?} is not valid", extra.name))?;
        // Line breaks in a value would inject headers; fold them to spaces.
        headers.insert_raw(HeaderValue::new(name, one_line(&extra.value)));
    }
    // Last, as lettre writes a multipart body's own header after the
    // message's; no extra header can replace it (it is reserved).
    headers.insert_raw(HeaderValue::new(
        HeaderName::new_from_ascii_str("Content-Type"),
        format!("multipart/alternative; boundary=\"{boundary}\""),
    ));

    let parts = [
        ("text/plain", crate::body::new(message.text)),
        ("text/html", crate::body::new(message.html)),
    ];
    let size: usize = parts.iter().map(|(_, b)| b.len() + 200).sum();
    let mut bytes = Vec::with_capacity(size + 1024);
    // Writing into a Vec cannot fail.
    let _ = write!(bytes, "{headers}\r\n");
    for (kind, body) in &parts {
        let _ = write!(
            bytes,
            "--{boundary}\r\nContent-Type: {kind}; charset=utf-8\r\nContent-Transfer-Encoding: {}\r\n\r\n",
            body.encoding()
        );
        bytes.extend_from_slice(body.as_ref());
        bytes.extend_from_slice(b"\r\n");
    }
    let _ = write!(bytes, "--{boundary}--\r\n");
    Ok(Built {
        from: message.from.email,
        to: message.to.email,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lettre::message::{MultiPart, SinglePart};
    use posta_plugin_sdk::{Header, Mailbox as Address};
    use std::time::Duration;

    /// The message as lettre's own builder writes it (what `build` did
    /// before it put the frame together itself), with the same date and
    /// boundary.
    fn by_lettre(m: &Message, date: SystemTime, boundary: &str) -> Vec<u8> {
        let from = mailbox(&m.from.name, &m.from.email, "from").unwrap();
        let to = mailbox(&m.to.name, &m.to.email, "to").unwrap();
        let id = m.message_id.trim_matches(['<', '>']);
        let mut mime = lettre::Message::builder()
            .from(from)
            .to(to)
            .subject(one_line(&m.subject))
            .message_id(Some(format!("<{id}>")))
            .multipart(
                MultiPart::alternative()
                    .boundary(boundary)
                    .singlepart(SinglePart::plain(m.text.clone()))
                    .singlepart(SinglePart::html(m.html.clone())),
            )
            .unwrap();
        // In place: the builder adds Date after MIME-Version.
        mime.headers_mut().set(header::Date::new(date));
        for h in &m.headers {
            if RESERVED.contains(&h.name.to_ascii_lowercase().as_str()) {
                continue;
            }
            let name = HeaderName::new_from_ascii(h.name.clone()).unwrap();
            mime.headers_mut()
                .insert_raw(HeaderValue::new(name, one_line(&h.value)));
        }
        mime.formatted()
    }

    fn message(name: &str, subject: &str, text: &str, html: &str, headers: &[(&str, &str)]) -> Message {
        Message {
            message_id: "<posta.7.42@example.org>".into(),
            from: Address {
                email: "news@example.org".into(),
                name: "Posta News".into(),
            },
            to: Address {
                email: "reader@example.org".into(),
                name: name.into(),
            },
            subject: subject.into(),
            html: html.into(),
            text: text.into(),
            headers: headers
                .iter()
                .map(|(n, v)| Header {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn the_frame_is_the_bytes_lettres_builder_writes() {
        let long = "word ".repeat(60);
        let dots = ".starts with a dot\r\n..two\n.\nend";
        let cases = [
            message(
                "Reader 1",
                "Hello Reader 1",
                "Hi Reader 1.\nBye\n",
                "<p>Hi</p>",
                &[
                    ("List-Unsubscribe", "<https://example.org/u/1>"),
                    ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
                ],
            ),
            message("", "", "", "", &[]),
            message(
                "Zoë \"Z\" Ünal, Jr.",
                "Grüße aus Köln — 10% off 🎉",
                "Grüße\r\n",
                "<p>Grüße</p>",
                &[
                    ("X-Campaign", "Sommer ☀"),
                    ("Subject", "ignored: reserved"),
                    ("content-type", "text/evil"),
                ],
            ),
            message("Reader", &long, &long, &format!("<p>{long}</p>"), &[("X-Long", &long)]),
            message("Dot", "dots", dots, dots, &[]),
            message(
                "Bin",
                "bytes",
                "\u{0}\u{1}\u{7f} control\ttab",
                "=3D and = signs ==",
                &[],
            ),
            message(
                "Inject\r\nBcc: x@y.z",
                "Hi\r\nBcc: x@y.z",
                "x",
                "y",
                &[("X-A", "b\r\nBcc: x@y.z")],
            ),
        ];
        let date = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        for m in cases {
            let b = "aZ09bY18cX27dW36eV45fU54gT63hS72iR81jQ90";
            let ours = assemble(m.clone(), date, b).unwrap().bytes;
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&by_lettre(&m, date, b)),
                "{m:?}"
            );
        }
    }

    #[test]
    fn each_message_gets_its_own_boundary() {
        let a = boundary();
        assert_eq!(a.len(), 40);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, boundary());
    }

    #[test]
    fn control_characters_in_names_and_subject_stay_on_one_line() {
        let m = Message {
            message_id: "posta.1.2@example.org".into(),
            from: Address {
                email: "news@example.org".into(),
                name: "News\r\nBcc: x@y.z".into(),
            },
            to: Address {
                email: "a@example.org".into(),
                name: "a\r.\rMAIL FROM:<x@y.z>\0".into(),
            },
            subject: "Hi\r\n.\r\nRCPT TO:<x@y.z>".into(),
            html: "<p>x</p>".into(),
            text: "x".into(),
            headers: vec![],
        };
        let built = build(m).unwrap();
        let text = String::from_utf8(built.bytes).unwrap();
        let head = &text[..text.find("\r\n\r\n").unwrap()];
        for line in head.split("\r\n") {
            assert!(!line.contains(['\r', '\n', '\0']), "{line:?}");
            // Folded continuation lines start with white space; nothing
            // the subscriber wrote starts a header line of its own.
            assert!(
                !line.starts_with("Bcc") && !line.starts_with("MAIL") && !line.starts_with('.'),
                "{line:?}"
            );
        }
    }
}
