//! A transport for local testing: appends one JSON line per message to the
//! file named by the `path` config key. The host grants this component one
//! directory and nothing else, so the file must be inside it.

use std::cell::RefCell;

mod line;

use posta_plugin_sdk::fs::Appender;
use posta_plugin_sdk::{DeliveryError, Message, Receipt, Transport, config};

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

struct Log;

impl Transport for Log {
    fn deliver(message: Message) -> Result<Receipt, DeliveryError> {
        let logged_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let buf = line::encode(&message, logged_at_ms).map_err(DeliveryError::Permanent)?;
        OUTBOX.with(|slot| {
            let mut slot = slot.borrow_mut();
            if slot.is_none() {
                *slot = Some(open()?);
            }
            let file = slot.as_mut().expect("opened above");
            // Lines up to 4 KiB are one O_APPEND write each; the transport
            // runs one call at a time, so longer lines land whole too.
            file.append(&buf).map_err(|e| {
                *slot = None;
                DeliveryError::Transient(format!("write failed: {e}"))
            })
        })?;
        Ok(Receipt {
            remote_id: None,
            detail: "logged".into(),
        })
    }
}

posta_plugin_sdk::export_transport!(Log);
