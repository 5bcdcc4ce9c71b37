//! What the engine shares between users: personalize slots and the bytes
//! of personalized messages waiting for their transport.
//!
//! Every queued message becomes a task at once (up to `window` per
//! campaign), so without these bounds a campaign could run a thousand
//! personalize calls together (each with its own instance and memory cap)
//! and hold a thousand rendered copies while waiting on a rate limit.
//! A user's calls take that user's slots (one per core by default): calls
//! are CPU-bound on the engine's threads, so one user can keep at most the
//! cores busy and another user's calls interleave with theirs (a slow call
//! yields at every epoch tick). The byte budget bounds rendered messages in
//! memory by configuration, not by content. One semaphore per step: a
//! global slot on top measured 15–20% of Wasm throughput for nothing the
//! per-user slots do not already give.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Delivery;
use crate::domain::UserId;

pub(super) struct Capacity {
    per_user: Mutex<HashMap<UserId, Arc<Semaphore>>>,
    per_user_limit: usize,
    held: Arc<Semaphore>,
    held_limit: u32,
}

/// A personalize call's slot; released on drop.
pub(super) type RenderSlot = OwnedSemaphorePermit;

impl Capacity {
    pub(super) fn new(cfg: &Delivery) -> Capacity {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let per_user_limit = match cfg.personalize_per_user {
            0 => cores,
            n => n,
        };
        let held_limit = u32::try_from(cfg.held_message_mib.saturating_mul(1 << 20)).unwrap_or(u32::MAX);
        Capacity {
            per_user: Mutex::new(HashMap::new()),
            per_user_limit,
            held: Arc::new(Semaphore::new(held_limit as usize)),
            held_limit,
        }
    }

    /// The semaphore that caps one user's personalize calls.
    pub(super) fn user(&self, user_id: UserId) -> Arc<Semaphore> {
        self.per_user
            .lock()
            .expect("capacity lock")
            .entry(user_id)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_user_limit)))
            .clone()
    }

    /// One of the user's slots.
    pub(super) async fn render_slot(&self, user: &Arc<Semaphore>) -> RenderSlot {
        user.clone().acquire_owned().await.expect("never closed")
    }

    /// Reserves `bytes` of the budget for a rendered message until the
    /// permit drops. A message larger than the whole budget takes all of it.
    pub(super) async fn hold(&self, bytes: usize) -> OwnedSemaphorePermit {
        let n = u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .clamp(1, self.held_limit.max(1));
        self.held.clone().acquire_many_owned(n).await.expect("never closed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capacity(per_user: usize, held_mib: u64) -> Capacity {
        Capacity::new(&Delivery {
            personalize_per_user: per_user,
            held_message_mib: held_mib,
            ..Delivery::default()
        })
    }

    #[tokio::test]
    async fn a_user_at_their_cap_leaves_slots_for_others() {
        let c = capacity(1, 1);
        let (a, b) = (c.user(UserId::new(1)), c.user(UserId::new(2)));
        let first = c.render_slot(&a).await;
        // User 1 is at their cap; user 2 still gets a slot at once.
        let blocked = tokio::time::timeout(std::time::Duration::from_millis(50), c.render_slot(&a)).await;
        assert!(blocked.is_err(), "a second call of user 1 waits");
        let other = tokio::time::timeout(std::time::Duration::from_millis(50), c.render_slot(&b)).await;
        assert!(other.is_ok(), "user 2 is not held up by user 1");
        drop(first);
    }

    #[tokio::test]
    async fn held_bytes_are_bounded() {
        let c = capacity(0, 1);
        let big = c.hold(1 << 20).await;
        let more = tokio::time::timeout(std::time::Duration::from_millis(50), c.hold(10)).await;
        assert!(more.is_err(), "the budget is spent");
        drop(big);
        let _ = c.hold(usize::MAX).await; // larger than the budget: takes all of it
    }
}
