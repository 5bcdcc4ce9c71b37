//! A transport for local testing: appends one JSON line per message to the
//! file named by the `path` config key. The host grants this component one
//! directory and nothing else, so the file must be inside it.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};

use posta_plugin_sdk::{DeliveryError, Message, Receipt, Transport, config};
use serde::Serialize;

thread_local! {
    // The host reuses instances across messages; keeping the file open
    // saves an open/close pair per message.
    static OUTBOX: RefCell<Option<File>> = const { RefCell::new(None) };
}

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

fn open() -> Result<File, DeliveryError> {
    let path = config::require("path").map_err(|e| DeliveryError::Permanent(e.to_string()))?;
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(&path)
        .map_err(|e| DeliveryError::Permanent(format!("cannot open {path}: {e}")))?;
    // A crash of the host can cut a line short; start on a fresh line so
    // the torn one stays the only casualty.
    let mut last = [0u8; 1];
    let torn = file.seek(SeekFrom::End(-1)).is_ok() && file.read_exact(&mut last).is_ok() && last[0] != b'\n';
    if torn {
        file.write_all(b"\n")
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
        let mut buf = serde_json::to_vec(&line).map_err(|e| DeliveryError::Permanent(format!("cannot encode: {e}")))?;
        buf.push(b'\n');
        OUTBOX.with(|slot| {
            let mut slot = slot.borrow_mut();
            if slot.is_none() {
                *slot = Some(open()?);
            }
            let file = slot.as_mut().expect("opened above");
            // One write call per line: the file is opened for append, so a
            // line lands whole even if another instance writes too.
            file.write_all(&buf).map_err(|e| {
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
