//! A transport for local testing: appends one JSON line per message to the
//! file named by the `path` config key. The host grants this component one
//! directory and nothing else, so the file must be inside it.

use std::cell::RefCell;

mod line;

use posta_plugin_sdk::fs::Appender;
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
        let buf = line::encode(&message, now_ms()).map_err(DeliveryError::Permanent)?;
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
        let mut results: Vec<Result<Receipt, DeliveryError>> = messages
            .iter()
            .map(|m| {
                let line = line::encode(m, at).map_err(DeliveryError::Permanent)?;
                buf.extend_from_slice(&line);
                Ok(logged())
            })
            .collect();
        if let Err(e) = append(&buf) {
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(e.clone());
            }
        }
        results
    }
}

posta_plugin_sdk::export_batch_transport!(Log);
