//! What storage operations answer besides the domain's records: reports
//! of bulk changes and pages with cursors that are not ids. Both backends
//! build them; the API serializes them as they are.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::KeyId;
use crate::domain::bounce::Bounce;
use crate::domain::subscriber::Subscriber;
use crate::domain::suppression::{Merged, Suppression, SuppressionReason};
use crate::domain::webhook::{Delivery, Webhook};

/// An API key as an admin sees it: never the key, nor its hash.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyInfo {
    pub id: KeyId,
    /// The key's first characters (`posta_1a2b`), to tell keys apart.
    pub hint: String,
    pub created_at: DateTime<Utc>,
}

/// What recording a bounce did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BounceReport {
    pub bounce: Bounce,
    /// The same bounce of the same message was recorded before: nothing
    /// was counted again.
    pub duplicate: bool,
    /// Soft bounces of the address within the policy's window, this one
    /// included (soft bounces only), counted up to `soft_limit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soft_in_window: Option<u64>,
    /// The suppression this bounce caused or found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<SuppressionReason>,
}

/// A page of a user's bounces in address order; `next_after` is the
/// (address, bounce id) to go on after.
#[derive(Debug, Clone)]
pub struct BouncePage {
    pub items: Vec<Bounce>,
    pub next_after: Option<(String, u64)>,
}

/// What a bulk upsert did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UpsertReport {
    pub created: u64,
    pub updated: u64,
    /// Existing subscribers the import asked to make `subscribed` again
    /// whose `unsubscribed` or `bounced` status was kept.
    pub kept_unsubscribed: u64,
    /// The subscribers as stored (JSON imports; a CSV import leaves this
    /// empty: it may hold millions).
    pub subscribers: Vec<Subscriber>,
    /// CSV rows not imported, with their line and column (the first 1,000).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<RowError>,
    /// How many CSV rows were not imported.
    #[serde(skip_serializing_if = "is_zero")]
    pub rejected: u64,
}

impl UpsertReport {
    /// An empty report for a batch of `n`.
    pub(crate) fn for_batch(n: usize) -> UpsertReport {
        UpsertReport {
            created: 0,
            updated: 0,
            kept_unsubscribed: 0,
            subscribers: Vec::with_capacity(n),
            errors: Vec::new(),
            rejected: 0,
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A CSV row that was not imported.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RowError {
    /// The row's line in the file (the header is line 1).
    pub line: u64,
    pub field: String,
    pub reason: String,
}

/// What a bulk suppression did.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct SuppressReport {
    pub added: u64,
    /// Addresses already suppressed whose reason or detail changed.
    pub updated: u64,
    pub unchanged: u64,
}

impl SuppressReport {
    /// Counts what storing one suppression did; the record to write, if
    /// any.
    pub(crate) fn count(&mut self, merged: Merged) -> Option<Suppression> {
        match merged {
            Merged::Added(s) => {
                self.added += 1;
                Some(s)
            }
            Merged::Updated(s) => {
                self.updated += 1;
                Some(s)
            }
            Merged::Unchanged => {
                self.unchanged += 1;
                None
            }
        }
    }
}

/// A page of suppressions; `next_after` is the last email, for `after`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SuppressionPage {
    pub items: Vec<Suppression>,
    pub next_after: Option<String>,
}

/// A delivery whose time has come, with the webhook it goes to.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub delivery: Delivery,
    pub webhook: Webhook,
}
