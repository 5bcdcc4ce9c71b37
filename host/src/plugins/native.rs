//! Bench-only baseline (feature `native-bench`): the bundled personalize and
//! log components' own source, compiled into the host. `native:personalize`
//! as the personalizer and `native:log` as a transport's component run the
//! same pipeline with no Wasm in it, so benchmarks can report the ratio.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use super::bindings::types::{Campaign, DeliveryError, Envelope, Header, Mailbox, Message, Receipt, Subscriber};

mod render {
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../plugins/personalize/src/render.rs"
    ));
}

mod json {
    include!(concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/sdk/src/json.rs"));
}

mod line {
    include!(concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/log/src/line.rs"));
}

/// The prefix that selects a native stand-in for a bundled component.
pub const PREFIX: &str = "native:";

pub fn validate(campaign: &Campaign) -> Result<(), String> {
    render::validate(campaign)
}

pub fn personalize(
    campaign: &Campaign,
    subscriber: Subscriber,
    envelope: Envelope,
    limits: &crate::config::Limits,
) -> Result<Message, String> {
    let limits = render::Limits {
        max_bytes: limits.max_message_bytes,
        fuel: limits.template_fuel,
    };
    render::personalize(campaign, subscriber, envelope, limits)
}

/// The log transport's work: one JSON line per message, appended under a
/// lock (the component runs one call at a time too).
pub struct LogWriter {
    file: Mutex<File>,
}

impl LogWriter {
    pub fn open(path: &Path) -> std::io::Result<LogWriter> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(LogWriter { file: Mutex::new(file) })
    }

    pub fn deliver(&self, message: &Message) -> Result<Receipt, DeliveryError> {
        let logged_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let mut buf = Vec::new();
        line::write(&mut buf, message, logged_at_ms);
        self.file
            .lock()
            .expect("log lock")
            .write_all(&buf)
            .map_err(|e| DeliveryError::Transient(format!("write failed: {e}")))?;
        Ok(Receipt {
            remote_id: None,
            detail: "logged".into(),
        })
    }
}
