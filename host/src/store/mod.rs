//! Storage. The contract (`contract`: one async trait per concern,
//! gathered by `backend::Backend`) is what the server calls, through
//! `Store`, on one of two backends that import nothing from each other:
//! `redb` (one file in the data directory, the default) or `pg`
//! (PostgreSQL, several nodes on one database). What both answer lives
//! here (`answers`) or in `domain`; the rules they apply live in `domain`,
//! so a backend loads, asks the domain and stores.

mod answers;
mod backend;
pub mod contract;
pub mod fence;
pub mod health;
pub mod pg;
pub mod queue;
pub mod redb;

#[cfg(test)]
mod conformance;

pub use answers::{
    BouncePage, BounceReport, DueDelivery, KeyInfo, RowError, SuppressReport, SuppressionPage, UpsertReport,
};
pub use backend::{Backend, Store};
pub use queue::Enqueued;
pub use redb::{DEFAULT_CACHE_BYTES, Redb};

use serde::Serialize;

use crate::domain::{FieldError, TransitionError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("{0}")]
    Conflict(String),
    #[error("storage: {0}")]
    Db(String),
    /// The database could not be reached (down, restarting, out of reach):
    /// the same call may succeed once it is back.
    #[error("storage unreachable: {0}")]
    Unavailable(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// This node's lease on its work lapsed (PostgreSQL): another node may
    /// have taken it over, so this one must register again to go on.
    #[error("this node's lease lapsed")]
    LeaseLapsed,
}

/// Deleting a segment that a scheduled campaign will send to (its send
/// reads the segment when it starts).
pub fn segment_in_use(campaign: u64) -> StoreError {
    StoreError::Conflict(format!(
        "scheduled campaign {campaign} sends to this segment; cancel it or change its segment first"
    ))
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Runs a synchronous storage call off the async workers (redb commits
/// fsync).
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Db(format!("storage task failed: {e}")))?
}

/// A page of results: `next_after` is the cursor for the next page.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_after: Option<u64>,
}

/// Entries a filtered page reads at most: a page of a rare kind (bounced
/// subscribers, failed messages) on a million-entry table then comes back
/// with fewer items and a cursor instead of scanning the whole table.
pub(crate) const SCAN_LIMIT: usize = 5_000;
