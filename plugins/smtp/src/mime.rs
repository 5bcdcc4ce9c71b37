//! The RFC 5322 message, built with lettre: multipart/alternative (text,
//! html), RFC 2047-encoded subject and display names, the Message-ID the
//! host gave, and the personalizer's extra headers (List-Unsubscribe…).

use lettre::Message as Mime;
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

fn mailbox(name: &str, email: &str, which: &str) -> Result<Mailbox, String> {
    let address = email
        .parse()
        .map_err(|e| format!("{which} address {email:?} is not valid: {e}"))?;
    let name = name.trim();
    Ok(Mailbox::new((!name.is_empty()).then(|| name.to_string()), address))
}

/// Builds the message; an error is a property of the message itself and
/// will not change on retry.
pub fn build(message: &Message) -> Result<Built, String> {
    let from = mailbox(&message.from.name, &message.from.email, "from")?;
    let to = mailbox(&message.to.name, &message.to.email, "to")?;
    let id = message.message_id.trim_matches(['<', '>']);
    let mut mime = Mime::builder()
        .from(from)
        .to(to)
        .subject(message.subject.clone())
        .message_id(Some(format!("<{id}>")))
        .multipart(MultiPart::alternative_plain_html(
            message.text.clone(),
            message.html.clone(),
        ))
        .map_err(|e| format!("cannot build the message: {e}"))?;
    for header in &message.headers {
        let lower = header.name.to_ascii_lowercase();
        if RESERVED.contains(&lower.as_str()) {
            continue;
        }
        let name = HeaderName::new_from_ascii(header.name.clone())
            .map_err(|_| format!("header name {:?} is not valid", header.name))?;
        // Line breaks in a value would inject headers; fold them to spaces.
        let value: String = header
            .value
            .chars()
            .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
            .collect();
        mime.headers_mut().insert_raw(HeaderValue::new(name, value));
    }
    Ok(Built {
        from: message.from.email.clone(),
        to: message.to.email.clone(),
        bytes: mime.formatted(),
    })
}
