//! Outgoing event webhooks: what a user subscribes to, the events Posta
//! reports, the signature receivers verify and the retry schedule. Pure;
//! the outbox lives in `store::redb::webhooks`, delivery in `crate::webhooks`.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use utoipa::ToSchema;

use super::{CampaignId, DeliveryId, FieldError, MessageId, UserId, WebhookId};

/// What happened. The wire names are the dotted ones (`campaign.sent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum EventKind {
    #[serde(rename = "campaign.started")]
    CampaignStarted,
    #[serde(rename = "campaign.paused")]
    CampaignPaused,
    #[serde(rename = "campaign.resumed")]
    CampaignResumed,
    #[serde(rename = "campaign.sent")]
    CampaignSent,
    #[serde(rename = "campaign.cancelled")]
    CampaignCancelled,
    #[serde(rename = "message.failed")]
    MessageFailed,
    #[serde(rename = "message.bounced")]
    MessageBounced,
    #[serde(rename = "subscriber.unsubscribed")]
    SubscriberUnsubscribed,
    /// A message's first open (pixel, or a first click with images off).
    #[serde(rename = "message.opened")]
    MessageOpened,
    /// A message's first click of one of its links.
    #[serde(rename = "message.clicked")]
    MessageClicked,
}

impl EventKind {
    pub const ALL: [EventKind; 10] = [
        EventKind::CampaignStarted,
        EventKind::CampaignPaused,
        EventKind::CampaignResumed,
        EventKind::CampaignSent,
        EventKind::CampaignCancelled,
        EventKind::MessageFailed,
        EventKind::MessageBounced,
        EventKind::SubscriberUnsubscribed,
        EventKind::MessageOpened,
        EventKind::MessageClicked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::CampaignStarted => "campaign.started",
            EventKind::CampaignPaused => "campaign.paused",
            EventKind::CampaignResumed => "campaign.resumed",
            EventKind::CampaignSent => "campaign.sent",
            EventKind::CampaignCancelled => "campaign.cancelled",
            EventKind::MessageFailed => "message.failed",
            EventKind::MessageBounced => "message.bounced",
            EventKind::SubscriberUnsubscribed => "subscriber.unsubscribed",
            EventKind::MessageOpened => "message.opened",
            EventKind::MessageClicked => "message.clicked",
        }
    }

    /// The event a campaign's status change reports, if any.
    pub fn of_transition(from: super::Status, to: super::Status) -> Option<EventKind> {
        use super::Status::*;
        match (from, to) {
            (Paused, Sending) => Some(EventKind::CampaignResumed),
            (f, Sending) if f != Sending => Some(EventKind::CampaignStarted),
            (f, Paused) if f != Paused => Some(EventKind::CampaignPaused),
            (f, Sent) if f != Sent => Some(EventKind::CampaignSent),
            (f, Cancelled) if f != Cancelled => Some(EventKind::CampaignCancelled),
            _ => None,
        }
    }
}

/// At most this many webhooks per user: each event is written once per
/// subscribed webhook, in the transaction that causes it.
pub const MAX_PER_USER: usize = 20;
const MAX_URL: usize = 2048;
const MIN_SECRET: usize = 16;
const MAX_SECRET: usize = 256;

/// `POST /users/me/webhooks`. Without a secret Posta makes one.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// Where events are POSTed: an absolute http or https URL.
    #[schema(pattern = "^https?://[^/@]+(/.*)?$", max_length = 2048)]
    pub url: String,
    /// The events to send; at least one.
    #[schema(min_items = 1)]
    pub events: Vec<EventKind>,
    /// The HMAC key for `X-Posta-Signature`, 16 to 256 bytes; generated
    /// (and returned once) when absent.
    #[serde(default)]
    #[schema(min_length = 16, max_length = 256)]
    pub secret: Option<String>,
}

impl NewWebhook {
    /// Checks the fields; returns the URL parsed.
    pub fn validate(&self) -> Result<http::Uri, FieldError> {
        let bad = |m: &str| FieldError::new("url", m);
        if self.url.len() > MAX_URL {
            return Err(bad("longer than 2048 bytes"));
        }
        let uri: http::Uri = self.url.parse().map_err(|_| bad("not a valid URL"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(bad("must start with http:// or https://"));
        }
        let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad(
                "must not carry credentials (user@host); sign with the secret instead",
            ));
        }
        if authority.host().is_empty() {
            return Err(bad("has no host"));
        }
        if self.events.is_empty() {
            return Err(FieldError::new("events", "name at least one event"));
        }
        if let Some(s) = &self.secret
            && !(MIN_SECRET..=MAX_SECRET).contains(&s.len())
        {
            return Err(FieldError::new("secret", "must be 16 to 256 bytes long"));
        }
        Ok(uri)
    }
}

/// A webhook as stored, secret included (the deliverer signs with it; the
/// API shows it only in the answer that created it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Webhook {
    pub id: WebhookId,
    pub user_id: UserId,
    pub url: String,
    pub events: Vec<EventKind>,
    pub secret: String,
    pub created_at: DateTime<Utc>,
}

impl Webhook {
    pub fn wants(&self, kind: EventKind) -> bool {
        self.events.contains(&kind)
    }
}

/// The body every delivery of one event carries, byte for byte the same
/// on each attempt (the signature's timestamp changes, the body does not).
pub fn event_body(id: &str, kind: EventKind, at: DateTime<Utc>, data: &serde_json::Value) -> String {
    serde_json::json!({
        "id": id,
        "type": kind.as_str(),
        "created_at": at,
        "data": data,
    })
    .to_string()
}

/// The ones of `hooks` that want `kind`.
pub fn wanting(hooks: &[Webhook], kind: EventKind) -> Vec<WebhookId> {
    hooks.iter().filter(|w| w.wants(kind)).map(|w| w.id).collect()
}

/// A new event's id (`evt_` and 32 hex digits): the same on every attempt
/// and for every webhook it goes to.
pub fn new_event_id() -> String {
    format!("evt_{}", hex::encode(rand::random::<[u8; 16]>()))
}

/// The `data` of `message.failed`.
pub fn message_data(campaign_id: CampaignId, m: &super::message::MessageRecord) -> serde_json::Value {
    serde_json::json!({
        "campaign_id": campaign_id,
        "subscriber_id": m.subscriber_id,
        "email": m.email,
        "message_id": m.message_id,
        "attempts": m.attempts,
        "error": m.last_error,
    })
}

/// The `data` of a campaign event.
pub fn campaign_data(c: &super::Campaign) -> serde_json::Value {
    serde_json::json!({
        "campaign": {
            "id": c.id,
            "name": c.name,
            "status": c.status,
            "list_id": c.list_id,
            "transport": c.transport,
            "started_at": c.started_at,
            "completed_at": c.completed_at,
            "stats": c.stats,
        }
    })
}

/// The `data` of `message.bounced`; `message` is set when the bounce named
/// a Posta message.
pub fn bounce_data(b: &super::bounce::Bounce, message: Option<MessageId>) -> serde_json::Value {
    serde_json::json!({
        "email": b.email,
        "type": b.kind,
        "reason": b.reason,
        "message_id": b.message_id,
        "campaign_id": message.map(|m| m.campaign),
        "subscriber_id": message.map(|m| m.subscriber),
    })
}

/// The `data` of `subscriber.unsubscribed`: `source` is `unsubscribe_link`
/// (the campaign's link or one-click header, `campaign_id` set) or `api`.
pub fn unsubscribed_data(s: &super::Subscriber, source: &str, campaign_id: Option<CampaignId>) -> serde_json::Value {
    serde_json::json!({
        "list_id": s.list_id,
        "subscriber_id": s.id,
        "email": s.email,
        "source": source,
        "campaign_id": campaign_id,
    })
}

/// `X-Posta-Signature`: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`
/// (Stripe's scheme: the timestamp is signed, so a receiver can refuse
/// replays older than its tolerance).
pub fn signature(secret: &[u8], unix: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(unix.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={unix},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// How deliveries are retried: `base · 2^(attempt−1)`, capped at `max`,
/// until `max_attempts`.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_ms: u64,
    pub max_ms: u64,
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempts` (1-based), or None
    /// when that was the last.
    pub fn backoff(&self, attempts: u32) -> Option<std::time::Duration> {
        if attempts >= self.max_attempts {
            return None;
        }
        let factor = 1u64.checked_shl(attempts.saturating_sub(1)).unwrap_or(u64::MAX);
        Some(std::time::Duration::from_millis(
            self.base_ms.saturating_mul(factor).min(self.max_ms),
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Not yet accepted; `next_attempt_at` says when it is tried.
    Pending,
    /// A 2xx answer.
    Delivered,
    /// Every attempt failed; no more are made.
    Failed,
}

/// One attempt to deliver an event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    /// The receiver's HTTP status, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why the attempt failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// One event for one webhook.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    pub id: DeliveryId,
    pub webhook_id: WebhookId,
    /// The event's id, the same on every attempt and for every webhook it
    /// went to: receivers deduplicate by it.
    pub event_id: String,
    pub event: EventKind,
    pub state: DeliveryState,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub attempts: Vec<Attempt>,
    /// The JSON body POSTed, byte for byte.
    pub body: String,
}

impl Delivery {
    /// Records an attempt that finished: delivered (a 2xx), or failed and
    /// tried again at `next`, or failed for good when there is no `next`.
    /// Returns `false`, changing nothing, if the delivery was already
    /// finished (an attempt that raced with another one's end).
    pub fn record_attempt(&mut self, attempt: Attempt, delivered: bool, next: Option<DateTime<Utc>>) -> bool {
        if self.next_attempt_at.is_none() {
            return false;
        }
        self.attempts.push(attempt);
        self.next_attempt_at = if delivered { None } else { next };
        self.state = match (delivered, self.next_attempt_at) {
            (true, _) => DeliveryState::Delivered,
            (false, Some(_)) => DeliveryState::Pending,
            (false, None) => DeliveryState::Failed,
        };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Status;

    fn hook(url: &str) -> NewWebhook {
        NewWebhook {
            url: url.into(),
            events: vec![EventKind::CampaignSent],
            secret: None,
        }
    }

    #[test]
    fn urls_are_absolute_http_without_credentials() {
        assert!(hook("https://hooks.example.com/posta?x=1").validate().is_ok());
        assert!(hook("http://127.0.0.1:9000/").validate().is_ok());
        for bad in [
            "",
            "/relative",
            "ftp://a.b/",
            "https://user:pw@a.b/",
            "https:///x",
            "not a url",
        ] {
            assert_eq!(hook(bad).validate().unwrap_err().field, "url", "{bad}");
        }
        let mut h = hook("https://a.b/");
        h.events.clear();
        assert_eq!(h.validate().unwrap_err().field, "events");
        h = hook("https://a.b/");
        h.secret = Some("short".into());
        assert_eq!(h.validate().unwrap_err().field, "secret");
    }

    #[test]
    fn event_names_round_trip() {
        for k in EventKind::ALL {
            let wire = serde_json::to_string(&k).unwrap();
            assert_eq!(wire, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<EventKind>(&wire).unwrap(), k);
        }
        assert!(serde_json::from_str::<EventKind>("\"campaign.exploded\"").is_err());
    }

    #[test]
    fn transitions_map_to_events() {
        use EventKind::*;
        use Status::*;
        let cases = [
            (Draft, Sending, Some(CampaignStarted)),
            (Scheduled, Sending, Some(CampaignStarted)),
            (Paused, Sending, Some(CampaignResumed)),
            (Sending, Paused, Some(CampaignPaused)),
            (Sending, Sent, Some(CampaignSent)),
            (Paused, Cancelled, Some(CampaignCancelled)),
            (Draft, Scheduled, None),
            (Sending, Sending, None),
        ];
        for (from, to, event) in cases {
            assert_eq!(EventKind::of_transition(from, to), event, "{from:?} → {to:?}");
        }
    }

    #[test]
    fn signature_matches_a_known_hmac() {
        // echo -n '1700000000.{"a":1}' | openssl dgst -sha256 -hmac 'whsec_test_0123456789'
        let sig = signature(b"whsec_test_0123456789", 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(
            sig,
            "t=1700000000,v1=d45143ed412aa9d672e3e06cc6753ced7e0e5a1757b1109ff599ba71790e646d"
        );
        assert_ne!(sig, signature(b"whsec_test_0123456789", 1_700_000_001, br#"{"a":1}"#));
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_stops() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_ms: 100,
            max_ms: 350,
        };
        let ms = |n| p.backoff(n).map(|d| d.as_millis() as u64);
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(4), ms(5)],
            [Some(100), Some(200), Some(350), Some(350), None]
        );
        let long = RetryPolicy {
            max_attempts: 200,
            base_ms: 1000,
            max_ms: 3_600_000,
        };
        assert_eq!(long.backoff(100), Some(std::time::Duration::from_secs(3600)));
    }
}
