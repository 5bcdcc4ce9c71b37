//! The pure domain: records, validation and the campaign state machine.
//! Nothing here does I/O, so all of it is unit-tested exhaustively.

pub mod bounce;
pub mod campaign;
pub mod dsn;
pub mod email;
pub mod ids;
pub mod lifecycle;
pub mod message;
pub mod schedule;
pub mod sender;
pub mod subscriber;
pub mod subscriber_csv;
pub mod suppression;
pub mod unsubscribe;
pub mod webhook;

pub use campaign::{Campaign, CampaignDraft, CampaignPatch, CampaignRun, Progress, Stats};
pub use email::{Email, InvalidEmail};
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
    pub email: Email,
    /// Admins may act on the server itself (plugin reload). The first user
    /// of a database is an admin.
    #[serde(default)]
    pub admin: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Checks a free-text field against a length cap, in characters.
pub fn validate_len(field: &str, s: &str, max: usize) -> Result<(), FieldError> {
    if s.chars().count() > max {
        return Err(FieldError::new(field, format!("longer than {max} characters")));
    }
    Ok(())
}
