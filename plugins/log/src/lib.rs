//! A transport for local testing: appends one JSON line per message to the
//! file named by the `path` config key. The host grants this component one
//! directory and nothing else, so the file must be inside it.

use std::cell::RefCell;

mod line;

use posta_plugin_sdk::fs::Appender;
use posta_plugin_sdk::json;
use posta_plugin_sdk::{BatchTransport, DeliveryError, Message, Receipt, Transport, config};

thread_local! {
    // The host reuses instances across messages; keeping the file open
    // saves an open/close pair per message.
    static OUTBOX: RefCell<Option<Appender>> = const { RefCell::new(None) };
}

fn open() -> Result<Appender, DeliveryError> {
    let path = config::require("path").map_err(|e| DeliveryError::Permanent(e.to_string()))?;
    let mut file = Appender::open(&path).map_err(|e| DeliveryError::Permanent(format!("cannot open {path}: {e}")))?;
    // A crash of the host can cut a line short; start on a fresh line so
    // the torn one stays the only casualty.
    let torn = matches!(file.last_byte(), Ok(Some(b)) if b != b'\n');
    if torn {
        file.append(b"\n")
            .map_err(|e| DeliveryError::Transient(format!("write failed: {e}")))?;
    }
    Ok(file)
}

/// Milliseconds since the Unix epoch, stamped on each line.
fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

/// Appends `lines` (whole lines, each ending in a newline) in one write.
fn append(lines: &[u8]) -> Result<(), DeliveryError> {
    OUTBOX.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.is_none() {
            *slot = Some(open()?);
        }
        let file = slot.as_mut().expect("opened above");
        // Lines up to 4 KiB are one O_APPEND write each; the transport
        // runs one call at a time, so longer lines (and a batch's lines)
        // land whole too.
        file.append(lines).map_err(|e| {
            *slot = None;
            DeliveryError::Transient(format!("write failed: {e}"))
        })
    })
}

fn logged() -> Receipt {
    Receipt {
        remote_id: None,
        detail: "logged".into(),
    }
}

struct Log;

impl Transport for Log {
    fn deliver(message: Message) -> Result<Receipt, DeliveryError> {
        let mut buf = Vec::new();
        line::write(&mut buf, &message, now_ms());
        append(&buf)?;
        Ok(logged())
    }
}

impl BatchTransport for Log {
    /// A batch's lines go out in one write: one host call and one
    /// syscall for all of them.
    fn deliver_batch(messages: Vec<Message>) -> Vec<Result<Receipt, DeliveryError>> {
        let at = now_ms();
        let mut buf = Vec::new();
        for m in &messages {
            line::write(&mut buf, m, at);
        }
        let result = append(&buf).map(|()| logged());
        messages.iter().map(|_| result.clone()).collect()
    }
}

posta_plugin_sdk::export_batch_transport!(Log);

#[cfg(test)]
mod tests {
    use posta_plugin_sdk::{Header, Mailbox, Message};
    use serde::Serialize;

    use super::line;

    /// The line as the component wrote it with serde_json before `line`
    /// wrote it by hand: the reference the bytes must equal.
    #[derive(Serialize)]
    struct Line<'a> {
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

    fn by_serde(m: &Message, at: u128) -> Vec<u8> {
        let line = Line {
            logged_at_ms: at,
            message_id: &m.message_id,
            from: &m.from.email,
            from_name: &m.from.name,
            to: &m.to.email,
            to_name: &m.to.name,
            subject: &m.subject,
            html: &m.html,
            text: &m.text,
            headers: m.headers.iter().map(|h| (h.name.as_str(), h.value.as_str())).collect(),
        };
        let mut buf = serde_json::to_vec(&line).unwrap();
        buf.push(b'\n');
        buf
    }

    fn message(text: &str, headers: &[(&str, &str)]) -> Message {
        Message {
            message_id: "posta.1.2@example.org".into(),
            from: Mailbox {
                email: "news@example.org".into(),
                name: "Posta \"News\"".into(),
            },
            to: Mailbox {
                email: "reader@example.org".into(),
                name: String::new(),
            },
            subject: format!("Re: {text}"),
            html: format!("<p class=\"x\">{text}</p>\r\n"),
            text: text.into(),
            headers: headers
                .iter()
                .map(|(n, v)| Header {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
        }
    }

    #[track_caller]
    fn same_as_serde(m: &Message) {
        let mut ours = Vec::new();
        line::write(&mut ours, m, 1_765_000_000_123);
        let theirs = by_serde(m, 1_765_000_000_123);
        assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs));
        assert_eq!(ours, theirs);
    }

    #[test]
    fn lines_of_any_content_are_the_bytes_serde_json_writes() {
        same_as_serde(&message("", &[]));
        same_as_serde(&message(
            "héllo wörld — ✉️ 日本語 \u{7f}\u{80}\u{2028}",
            &[("List-Unsubscribe", "<https://x/u>")],
        ));
        let newsletter =
            "<tr><td style=\"padding:12px\">Lorem ipsum dolor sit amet,\n\tconsectetur \\ adipiscing</td></tr>\r\n"
                .repeat(400);
        same_as_serde(&message(&newsletter, &[("A", "1"), ("B", "\"2\"")]));
    }

    #[test]
    fn a_batch_is_its_messages_lines_in_order() {
        let (a, b) = (message("one", &[]), message("two", &[]));
        let mut buf = Vec::new();
        line::write(&mut buf, &a, 7);
        line::write(&mut buf, &b, 7);
        assert_eq!(buf, [by_serde(&a, 7), by_serde(&b, 7)].concat());
    }
}
