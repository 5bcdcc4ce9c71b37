//! {{name}}: a Posta transport written in Rust.
//!
//! Each message is POSTed as JSON to the `url` in the transport's config,
//! through the host (the SDK's `http::post`, one `host.http-send` call):
//! the operator lists the URL's origin under the transport's
//! `capabilities.http`, and the host refuses any other.
//!
//! 2xx → sent; 408, 429 and 5xx → transient (the host retries with
//! backoff); any other status → permanent. Refused connections and
//! timeouts are transient; an origin the host does not grant is permanent.

use std::time::Duration;

use posta_plugin_sdk::config;
use posta_plugin_sdk::http::{self, HttpError};
use posta_plugin_sdk::{DeliveryError, Message, Receipt, Transport};

fn payload(m: &Message) -> Vec<u8> {
    let headers: Vec<_> = m
        .headers
        .iter()
        .map(|h| serde_json::json!({"name": h.name, "value": h.value}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "message_id": m.message_id,
        "from": {"email": m.from.email, "name": m.from.name},
        "to": {"email": m.to.email, "name": m.to.name},
        "subject": m.subject,
        "html": m.html,
        "text": m.text,
        "headers": headers,
    }))
    .expect("JSON values always serialize")
}

struct Plugin;

impl Transport for Plugin {
    fn deliver(message: Message) -> Result<Receipt, DeliveryError> {
        let config_error = |e: config::ConfigError| DeliveryError::Permanent(e.to_string());
        let url: String = config::require("url").map_err(config_error)?;
        let timeout = Duration::from_millis(config::parse_or("timeout_ms", 5_000u64).map_err(config_error)?);
        let headers: [(&str, &[u8]); 3] = [
            ("content-type", b"application/json"),
            // The message id is stable across retries: receivers deduplicate on it.
            ("idempotency-key", message.message_id.as_bytes()),
            ("user-agent", b"{{name}}/0.1 (posta plugin, rust)"),
        ];
        let response = http::post(&url, &headers, &payload(&message), timeout).map_err(|e| match e {
            HttpError::Denied(_) | HttpError::Invalid(_) => DeliveryError::Permanent(e.to_string()),
            HttpError::Timeout(_) | HttpError::Connect(_) | HttpError::Protocol(_) => {
                DeliveryError::Transient(e.to_string())
            }
        })?;
        let detail = format!("HTTP {}", response.status);
        match response.status {
            200..=299 => Ok(Receipt {
                remote_id: None,
                detail,
            }),
            status => {
                let body = String::from_utf8_lossy(&response.body);
                let text = format!("{detail} {}", body.chars().take(200).collect::<String>());
                posta_plugin_sdk::warn!("{}: {text}", message.message_id);
                match status {
                    408 | 429 | 500..=599 => Err(DeliveryError::Transient(text)),
                    _ => Err(DeliveryError::Permanent(text)),
                }
            }
        }
    }
}

posta_plugin_sdk::export_transport!(Plugin);
