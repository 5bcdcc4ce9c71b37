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
use posta_plugin_sdk::json;
use posta_plugin_sdk::{DeliveryError, Message, Receipt, Transport};
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

/// The POST body: `{"message_id", "from": {"email", "name"}, "to": {…},
/// "subject", "html", "text", "headers": [{"name", "value"}, …]}`, the
/// bytes serde_json would write for it (a test holds that), with the SDK's
/// `json::string`, which escapes eight bytes a step where serde_json goes
/// one at a time: in the component that was the cost of a large body.
fn payload(m: &Message) -> Vec<u8> {
    let headers: usize = m.headers.iter().map(|h| h.name.len() + h.value.len() + 24).sum();
    let mut buf = Vec::with_capacity(160 + m.subject.len() + m.html.len() + m.text.len() + headers);
    buf.extend_from_slice(b"{\"message_id\":");
    json::string(&mut buf, &m.message_id);
    for (key, address) in [("from", &m.from), ("to", &m.to)] {
        buf.extend_from_slice(b",\"");
        buf.extend_from_slice(key.as_bytes());
        buf.extend_from_slice(b"\":{\"email\":");
        json::string(&mut buf, &address.email);
        buf.extend_from_slice(b",\"name\":");
        json::string(&mut buf, &address.name);
        buf.push(b'}');
    }
    for (key, value) in [("subject", &m.subject), ("html", &m.html), ("text", &m.text)] {
        buf.extend_from_slice(b",\"");
        buf.extend_from_slice(key.as_bytes());
        buf.extend_from_slice(b"\":");
        json::string(&mut buf, value);
    }
    buf.extend_from_slice(b",\"headers\":[");
    for (i, h) in m.headers.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(b"{\"name\":");
        json::string(&mut buf, &h.name);
        buf.extend_from_slice(b",\"value\":");
        json::string(&mut buf, &h.value);
        buf.push(b'}');
    }
    buf.extend_from_slice(b"]}");
    buf
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

    /// The body as serde_json wrote it before `payload` wrote it itself.
    fn by_serde(m: &Message) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Payload<'a> {
            message_id: &'a str,
            from: Address<'a>,
            to: Address<'a>,
            subject: &'a str,
            html: &'a str,
            text: &'a str,
            headers: Vec<Header<'a>>,
        }
        #[derive(serde::Serialize)]
        struct Address<'a> {
            email: &'a str,
            name: &'a str,
        }
        #[derive(serde::Serialize)]
        struct Header<'a> {
            name: &'a str,
            value: &'a str,
        }
        fn address(a: &posta_plugin_sdk::Mailbox) -> Address<'_> {
            Address {
                email: &a.email,
                name: &a.name,
            }
        }
        serde_json::to_vec(&Payload {
            message_id: &m.message_id,
            from: address(&m.from),
            to: address(&m.to),
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
        })
        .unwrap()
    }

    #[test]
    fn the_body_is_the_bytes_serde_json_writes() {
        use posta_plugin_sdk::{Header, Mailbox};
        let row = "<tr><td style=\"padding:12px\">Lorem \\ ipsum\n\t\u{1}é✉</td></tr>\r\n";
        for (html, headers) in [("", 0), ("<p>Hi</p>", 1), (&*row.repeat(300), 2)] {
            let m = Message {
                message_id: "posta.1.2@example.org".into(),
                from: Mailbox {
                    email: "news@example.org".into(),
                    name: "Posta \"News\"".into(),
                },
                to: Mailbox {
                    email: "reader@example.org".into(),
                    name: String::new(),
                },
                subject: "Hello \u{7f}\u{2028} Reader".into(),
                html: html.into(),
                text: html.replace('<', "\n"),
                headers: (0..headers)
                    .map(|i| Header {
                        name: format!("X-{i}"),
                        value: format!("<https://x/u?{i}=\"q\">"),
                    })
                    .collect(),
            };
            assert_eq!(
                String::from_utf8(payload(&m)).unwrap(),
                String::from_utf8(by_serde(&m)).unwrap()
            );
        }
    }

    #[test]
    fn remote_ids_come_from_json() {
        assert_eq!(remote_id(br#"{"id":"abc"}"#).as_deref(), Some("abc"));
        assert_eq!(remote_id(br#"{"id":7}"#).as_deref(), Some("7"));
        assert_eq!(remote_id(b"ok"), None);
    }
}
