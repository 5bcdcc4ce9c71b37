//! Live progress streams: each open campaign page reads the store once a
//! second, so they are bounded in all and per user, and one user's tabs
//! cannot take the slots everybody shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::domain::UserId;

/// Streams open at once, across users.
const TOTAL: usize = 256;
/// Streams one user may hold open.
const PER_USER: usize = 8;

#[derive(Default)]
pub struct Streams {
    open: Mutex<(usize, HashMap<UserId, usize>)>,
}

/// A held stream slot; dropping it frees the slot.
pub struct Slot {
    streams: Arc<Streams>,
    user: UserId,
}

impl Streams {
    /// A slot for `user`, or `None` when the user or the server is at its cap.
    pub fn open(self: &Arc<Self>, user: UserId) -> Option<Slot> {
        let mut guard = self.open.lock().expect("streams lock");
        let (total, per_user) = &mut *guard;
        let mine = per_user.entry(user).or_default();
        if *total >= TOTAL || *mine >= PER_USER {
            return None;
        }
        *mine += 1;
        *total += 1;
        Some(Slot {
            streams: self.clone(),
            user,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut guard = self.streams.open.lock().expect("streams lock");
        let (total, per_user) = &mut *guard;
        *total -= 1;
        if let Some(n) = per_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                per_user.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_user_cannot_take_every_slot() {
        let s = Arc::new(Streams::default());
        let (a, b) = (UserId::new(1), UserId::new(2));
        let held: Vec<Slot> = (0..PER_USER).map(|_| s.open(a).expect("under the cap")).collect();
        assert!(s.open(a).is_none(), "user 1 is at their cap");
        let other = s.open(b).expect("user 2 still gets one");
        drop(held);
        assert!(s.open(a).is_some(), "closed streams free their slots");
        drop(other);
        assert_eq!(s.open.lock().unwrap().0, 0);
    }
}
