//! Posta's webhook transport: POSTs each message as JSON to the configured
//! URL through `wasi:http`. The receiver can verify the body with the
//! signature header (hex HMAC-SHA256 of the exact body bytes under the
//! shared secret) and deduplicate retries with `Idempotency-Key`, which is
//! the message's stable id.
//!
//! 2xx → sent; 408, 429 and 5xx → transient (retried); any other status →
//! permanent. Timeouts and connection errors are transient; a URL the
//! host does not grant is permanent.

use std::cell::RefCell;
use std::time::Duration;

use hmac::{Hmac, Mac};
use posta_plugin_sdk::config::{self, ConfigError};
use posta_plugin_sdk::http::{self, HttpError};
use posta_plugin_sdk::{DeliveryError, Message, Receipt, Transport};
use serde::Serialize;
use sha2::Sha256;

#[derive(Clone)]
struct Settings {
    url: String,
    secret: String,
    signature_header: String,
    timeout: Duration,
}

impl Settings {
    fn load() -> Result<Settings, ConfigError> {
        Ok(Settings {
            url: config::require("url")?,
            secret: config::require("secret")?,
            signature_header: config::get("signature_header").unwrap_or_else(|| "X-Posta-Signature".into()),
            timeout: Duration::from_millis(config::parse_or("timeout_ms", 5_000u64)?),
        })
    }
}

thread_local! {
    static SETTINGS: RefCell<Option<Settings>> = const { RefCell::new(None) };
}

fn settings() -> Result<Settings, DeliveryError> {
    config::cached(&SETTINGS, Settings::load).map_err(|e| DeliveryError::Permanent(e.to_string()))
}

#[derive(Serialize)]
struct Address<'a> {
    email: &'a str,
    name: &'a str,
}

#[derive(Serialize)]
struct Header<'a> {
    name: &'a str,
    value: &'a str,
}

#[derive(Serialize)]
struct Payload<'a> {
    message_id: &'a str,
    from: Address<'a>,
    to: Address<'a>,
    subject: &'a str,
    html: &'a str,
    text: &'a str,
    headers: Vec<Header<'a>>,
}

fn payload(m: &Message) -> Vec<u8> {
    let p = Payload {
        message_id: &m.message_id,
        from: Address {
            email: &m.from.email,
            name: &m.from.name,
        },
        to: Address {
            email: &m.to.email,
            name: &m.to.name,
        },
        subject: &m.subject,
        html: &m.html,
        text: &m.text,
        headers: m
            .headers
            .iter()
            .map(|h| Header {
                name: &h.name,
                value: &h.value,
            })
            .collect(),
    };
    serde_json::to_vec(&p).expect("strings always serialize")
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The receiver's id for the delivery, from a JSON body's `id` field.
fn remote_id(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    match v.get("id")? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        s.push('…');
    }
    s
}

struct Webhook;

impl Transport for Webhook {
    fn deliver(message: Message) -> Result<Receipt, DeliveryError> {
        let s = settings()?;
        let body = payload(&message);
        let signature = sign(&s.secret, &body);
        let headers: [(&str, &[u8]); 4] = [
            ("content-type", b"application/json"),
            ("idempotency-key", message.message_id.as_bytes()),
            (s.signature_header.as_str(), signature.as_bytes()),
            ("user-agent", b"posta-webhook/0.1"),
        ];
        let response = http::post(&s.url, &headers, &body, s.timeout).map_err(|e| match e {
            HttpError::Denied(_) | HttpError::Invalid(_) => DeliveryError::Permanent(e.to_string()),
            HttpError::Timeout(_) | HttpError::Connect(_) | HttpError::Protocol(_) => {
                DeliveryError::Transient(e.to_string())
            }
        })?;
        let status = response.status;
        let detail = format!("HTTP {status} {}", snippet(&response.body));
        match status {
            200..=299 => Ok(Receipt {
                remote_id: remote_id(&response.body),
                detail: format!("HTTP {status}"),
            }),
            408 | 429 | 500..=599 => {
                let retry = response
                    .header("retry-after")
                    .map(|r| format!(" (Retry-After: {r})"))
                    .unwrap_or_default();
                Err(DeliveryError::Transient(format!("{detail}{retry}")))
            }
            _ => Err(DeliveryError::Permanent(detail)),
        }
    }
}

posta_plugin_sdk::export_transport!(Webhook);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_rfc4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn remote_ids_come_from_json() {
        assert_eq!(remote_id(br#"{"id":"abc"}"#).as_deref(), Some("abc"));
        assert_eq!(remote_id(br#"{"id":7}"#).as_deref(), Some("7"));
        assert_eq!(remote_id(b"ok"), None);
    }
}
