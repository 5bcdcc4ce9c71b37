//! CSV imports and exports under way, bounded per user and in all. Each
//! holds a connection, a little memory and, while it stores or reads a
//! page, a storage thread; one user opening hundreds of uploads must get
//! 429s, not the server's capacity.

use std::sync::Arc;

use axum::http::StatusCode;

use crate::api::ApiError;
use crate::domain::UserId;
use crate::quota::{Full, Place, Quota};

/// Imports and exports one user may run at once …
pub const PER_USER: usize = 4;
/// … and all users together.
pub const TOTAL: usize = 64;

#[derive(Clone)]
pub struct Transfers(Arc<Quota<UserId>>);

impl Default for Transfers {
    fn default() -> Self {
        Transfers::new(PER_USER, TOTAL)
    }
}

/// One transfer's place, given back on drop.
pub type Turn = Place<UserId>;

impl Transfers {
    pub fn new(per_user: usize, total: usize) -> Transfers {
        Transfers(Quota::new(per_user, total))
    }

    /// A place for one more of `user`'s transfers, or 429 (the user's own
    /// share) / 503 (everyone's) with `Retry-After`.
    pub fn begin(&self, user: UserId) -> Result<Turn, ApiError> {
        self.0.take(user).map_err(|full| match full {
            Full::Key(mine) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_transfers",
                format!("{mine} CSV imports or exports of yours are under way; at most {PER_USER} at once"),
            ),
            Full::Total => ApiError::busy("too many CSV imports and exports are under way; try again shortly"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_user_then_in_all() {
        let t = Transfers::new(2, 3);
        let (a, b) = (UserId::new(1), UserId::new(2));
        let a1 = t.begin(a).unwrap();
        let _a2 = t.begin(a).unwrap();
        assert_eq!(t.begin(a).err().unwrap().status, StatusCode::TOO_MANY_REQUESTS);
        let _b1 = t.begin(b).unwrap();
        assert_eq!(t.begin(b).err().unwrap().status, StatusCode::SERVICE_UNAVAILABLE);
        drop(a1);
        assert!(t.begin(b).is_ok(), "a finished transfer frees its place");
    }
}
