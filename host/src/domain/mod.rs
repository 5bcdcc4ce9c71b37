//! The pure domain: records, validation and the campaign state machine.
//! Nothing here does I/O, so all of it is unit-tested exhaustively.

pub mod bounce;
pub mod campaign;
pub mod dsn;
pub mod ids;
pub mod lifecycle;
pub mod message;
pub mod schedule;
pub mod subscriber;
pub mod subscriber_csv;
pub mod suppression;
pub mod unsubscribe;
pub mod webhook;

pub use campaign::{Campaign, CampaignDraft, CampaignPatch, CampaignRun, Progress, Stats};
pub use ids::{CampaignId, DeliveryId, KeyId, ListId, MessageId, SubscriberId, UserId, WebhookId};
pub use lifecycle::{Action, Status, TransitionError};
pub use subscriber::{List, NewSubscriber, StatusChange, Subscriber, SubscriberPatch, SubscriberStatus};

use serde::{Deserialize, Serialize};

/// A field-level validation failure, answered as 422 naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An account. API keys belong to users and are stored hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct User {
    pub id: UserId,
    pub email: String,
    /// Admins may act on the server itself (plugin reload). The first user
    /// of a database is an admin.
    #[serde(default)]
    pub admin: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Checks that `s` looks like a deliverable address: one `@`, a non-empty
/// local part, a dotted domain, no whitespace or control characters. Full
/// RFC 5322 syntax accepts addresses no MTA will route; this is deliberately
/// the subset mail senders accept in practice.
pub fn validate_email(field: &str, s: &str) -> Result<(), FieldError> {
    let bad = |why: &str| {
        Err(FieldError::new(
            field,
            format!("{s:?} is not a valid email address: {why}"),
        ))
    };
    if s.len() > 254 {
        return bad("longer than 254 characters");
    }
    if s.chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"'))
    {
        return bad("contains whitespace or a forbidden character");
    }
    let Some((local, domain)) = s.rsplit_once('@') else {
        return bad("missing @");
    };
    if local.is_empty() || local.len() > 64 || local.contains('@') {
        return bad("bad local part");
    }
    if domain.is_empty()
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains("..")
        || domain
            .split('.')
            .any(|l| l.is_empty() || l.starts_with('-') || l.ends_with('-'))
    {
        return bad("bad domain");
    }
    Ok(())
}

/// Checks a free-text field against a length cap, in characters.
pub fn validate_len(field: &str, s: &str, max: usize) -> Result<(), FieldError> {
    if s.chars().count() > max {
        return Err(FieldError::new(field, format!("longer than {max} characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for ok in ["a@b.co", "first.last+tag@example.org", "x@sub.domain.example"] {
            assert!(validate_email("email", ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "plain", "@b.co", "a@", "a@b", "a@.b", "a@b.", "a b@c.de", "a@b..c", "<a@b.co>", "a@-b.co", "a@b.co\n",
        ] {
            let err = validate_email("email", bad).unwrap_err();
            assert_eq!(err.field, "email", "{bad}");
        }
    }
}
