//! The RFC 5322 message, built with lettre: multipart/alternative (text,
//! html), RFC 2047-encoded subject and display names, the Message-ID the
//! host gave, and the personalizer's extra headers (List-Unsubscribe…).

use lettre::Message as Mime;
use lettre::address::Envelope;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
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

/// Builds the message; an error is a property of the message itself and
/// will not change on retry.
pub fn build(message: Message) -> Result<Built, String> {
    let from = mailbox(&message.from.name, &message.from.email, "from")?;
    let to = mailbox(&message.to.name, &message.to.email, "to")?;
    let id = message.message_id.trim_matches(['<', '>']);
    // Given, the envelope is not parsed back out of the From and To
    // headers lettre has just encoded (the dialog uses the addresses as
    // given anyway): two header parses fewer per message.
    let envelope = Envelope::new(Some(from.email.clone()), vec![to.email.clone()])
        .map_err(|e| format!("cannot build the envelope: {e}"))?;
    let mut mime = Mime::builder()
        .envelope(envelope)
        .from(from)
        .to(to)
        .subject(one_line(&message.subject))
        .message_id(Some(format!("<{id}>")))
        .multipart(MultiPart::alternative_plain_html(message.text, message.html))
        .map_err(|e| format!("cannot build the message: {e}"))?;
    for header in &message.headers {
        let lower = header.name.to_ascii_lowercase();
        if RESERVED.contains(&lower.as_str()) {
            continue;
        }
        let name = HeaderName::new_from_ascii(header.name.clone())
            .map_err(|_| format!("header name {:?} is not valid", header.name))?;
        // Line breaks in a value would inject headers; fold them to spaces.
        let value = one_line(&header.value);
        mime.headers_mut().insert_raw(HeaderValue::new(name, value));
    }
    Ok(Built {
        from: message.from.email,
        to: message.to.email,
        bytes: mime.formatted(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use posta_plugin_sdk::Mailbox as Address;

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
