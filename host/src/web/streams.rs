//! Live progress streams: each open campaign page reads the store once a
//! second, so they are bounded in all and per user, and one user's tabs
//! cannot take the slots everybody shares.

use std::sync::Arc;

use crate::domain::UserId;
use crate::quota::{Place, Quota};

/// Streams open at once, across users.
const TOTAL: usize = 256;
/// Streams one user may hold open.
const PER_USER: usize = 8;

pub struct Streams(Arc<Quota<UserId>>);

impl Default for Streams {
    fn default() -> Self {
        Streams(Quota::new(PER_USER, TOTAL))
    }
}

/// A held stream slot; dropping it frees the slot.
pub type Slot = Place<UserId>;

impl Streams {
    /// A slot for `user`, or `None` when the user or the server is at its cap.
    pub fn open(&self, user: UserId) -> Option<Slot> {
        self.0.take(user).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_user_cannot_take_every_slot() {
        let s = Streams::default();
        let (a, b) = (UserId::new(1), UserId::new(2));
        let held: Vec<Slot> = (0..PER_USER).map(|_| s.open(a).expect("under the cap")).collect();
        assert!(s.open(a).is_none(), "user 1 is at their cap");
        let other = s.open(b).expect("user 2 still gets one");
        drop(held);
        assert!(s.open(a).is_some(), "closed streams free their slots");
        drop(other);
        assert_eq!(s.0.held(), 0);
    }
}
