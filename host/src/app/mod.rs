//! Use cases the API and the dashboard share. Each checks what a change
//! needs (transport, fields, sender domain, templates), makes it through
//! the store and tells the engine, and answers `AppError`: typed for both
//! callers, so the API maps it to a status and code (`api::error`) and the
//! dashboard to a page, neither by reading the other's answer.

pub mod campaigns;
pub mod previews;
pub mod segments;

use crate::domain::{FieldError, TransitionError};
use crate::engine::Engine;
use crate::store::{Store, StoreError};

/// What the use cases work with.
#[derive(Clone)]
pub struct App {
    pub store: Store,
    pub engine: Engine,
    /// Segment counts under way: each scans a whole list on a storage
    /// thread, so one user may run `segments::PER_USER` at once and all
    /// users `segments::TOTAL`.
    pub scans: std::sync::Arc<crate::quota::Quota<crate::domain::UserId>>,
}

/// Why a use case did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Storage said no (not found, a transition, a conflict, a field) or
    /// could not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// A plugin instance could not be had now; the same call may succeed
    /// shortly.
    #[error("{0}")]
    Busy(String),
}

impl AppError {
    /// The thing acted on does not exist for this user (another user's is
    /// as missing as one that never was).
    pub fn is_not_found(&self) -> bool {
        matches!(self, AppError::Store(StoreError::NotFound))
    }
}
