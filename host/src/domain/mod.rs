//! The pure domain: records, validation and the campaign state machine.
//! Nothing here does I/O, so all of it is unit-tested exhaustively.

pub mod ab;
pub mod account;
pub mod backoff;
pub mod bounce;
pub mod campaign;
pub mod dsn;
pub mod email;
pub mod ids;
pub mod lifecycle;
pub mod message;
pub mod schedule;
pub mod segment;
pub mod sender;
pub mod subscriber;
pub mod subscriber_csv;
pub mod suppression;
pub mod tracking;
pub mod unsubscribe;
pub mod warmup;
pub mod webhook;

pub use account::User;
pub use campaign::{Campaign, CampaignDraft, CampaignPatch, CampaignRun, Progress, Stats};
pub use email::{Email, InvalidEmail};
pub use ids::{CampaignId, DeliveryId, KeyId, ListId, MessageId, SegmentId, SubscriberId, UserId, WebhookId};
pub use lifecycle::{Action, Status, TransitionError};
pub use subscriber::{List, NewSubscriber, StatusChange, Subscriber, SubscriberPatch, SubscriberStatus};

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

/// Checks a free-text field against a length cap, in characters.
pub fn validate_len(field: &str, s: &str, max: usize) -> Result<(), FieldError> {
    if s.chars().count() > max {
        return Err(FieldError::new(field, format!("longer than {max} characters")));
    }
    Ok(())
}
