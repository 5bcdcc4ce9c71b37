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
//! memory by configuration, not by content, and is shared fairly: a user
//! may hold at most an equal share of it beside the users holding some
//! (`Budget`), so one user's messages waiting on a slow transport cannot
//! keep another's from being rendered. One semaphore per step: a global
//! slot on top measured 15–20% of Wasm throughput for nothing the per-user
//! slots do not already give.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::config::Delivery;
use crate::domain::UserId;

pub(super) struct Capacity {
    per_user: Mutex<HashMap<UserId, Arc<Semaphore>>>,
    per_user_limit: usize,
    held: Arc<Budget>,
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
        Capacity {
            per_user: Mutex::new(HashMap::new()),
            per_user_limit,
            held: Arc::new(Budget::new(cfg.held_message_mib.saturating_mul(1 << 20))),
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

    /// Reserves `bytes` of the budget for one of `user`'s rendered
    /// messages until the returned hold drops.
    pub(super) async fn hold(&self, user: UserId, bytes: usize) -> Hold {
        self.held.hold(user, bytes as u64).await
    }
}

/// Bytes of rendered messages held, in all and per user. A user is
/// granted bytes while the total stays within the budget and its own
/// holding within `total / (users holding + 1)`: an equal share beside
/// every user holding some, with one share left for a user yet to come.
/// A user holding nothing may always hold one message if the total has
/// room, so a share smaller than a message delays, never starves.
pub(super) struct Budget {
    total: u64,
    state: Mutex<BudgetState>,
    freed: Notify,
}

#[derive(Default)]
struct BudgetState {
    held: u64,
    by_user: HashMap<UserId, u64>,
}

/// A message's bytes in the budget; given back on drop.
pub(super) struct Hold {
    budget: Arc<Budget>,
    user: UserId,
    bytes: u64,
}

impl Budget {
    fn new(total: u64) -> Budget {
        Budget {
            total: total.max(1),
            state: Mutex::default(),
            freed: Notify::new(),
        }
    }

    async fn hold(self: &Arc<Self>, user: UserId, bytes: u64) -> Hold {
        // A message larger than the whole budget takes all of it.
        let bytes = bytes.clamp(1, self.total);
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a release in between wakes it.
            freed.as_mut().enable();
            if self.try_hold(user, bytes) {
                return Hold {
                    budget: self.clone(),
                    user,
                    bytes,
                };
            }
            freed.await;
        }
    }

    fn try_hold(&self, user: UserId, bytes: u64) -> bool {
        let mut st = self.state.lock().expect("budget lock");
        if st.held + bytes > self.total {
            return false;
        }
        let mine = st.by_user.get(&user).copied().unwrap_or(0);
        let others = st.by_user.len() - usize::from(mine > 0);
        let share = self.total / (others as u64 + 2);
        if mine > 0 && mine + bytes > share {
            return false;
        }
        st.held += bytes;
        *st.by_user.entry(user).or_default() += bytes;
        true
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut st = self.budget.state.lock().expect("budget lock");
        st.held -= self.bytes;
        if let Some(n) = st.by_user.get_mut(&self.user) {
            *n -= self.bytes;
            if *n == 0 {
                st.by_user.remove(&self.user);
            }
        }
        drop(st);
        self.budget.freed.notify_waiters();
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

    async fn soon<T>(f: impl Future<Output = T>) -> Option<T> {
        tokio::time::timeout(std::time::Duration::from_millis(50), f).await.ok()
    }

    #[tokio::test]
    async fn held_bytes_are_bounded() {
        let c = capacity(0, 1);
        let a = UserId::new(1);
        let big = c.hold(a, 1 << 20).await;
        assert!(soon(c.hold(UserId::new(2), 10)).await.is_none(), "the budget is spent");
        drop(big);
        let _all = c.hold(a, usize::MAX).await; // larger than the budget: takes all of it
    }

    #[tokio::test]
    async fn a_user_keeps_a_share_free_for_others() {
        let c = capacity(0, 1);
        let (a, b, d) = (UserId::new(1), UserId::new(2), UserId::new(3));
        let kib = |n: usize| n << 10;
        // Alone, a user may hold half: the other half waits for whoever comes.
        let mut mine = Vec::new();
        while let Some(h) = soon(c.hold(a, kib(64))).await {
            mine.push(h);
        }
        assert_eq!(mine.len(), 8, "512 KiB of 1 MiB");
        // Another user gets room at once; now each may hold a third.
        let b1 = soon(c.hold(b, kib(300))).await.expect("room for a second user");
        assert!(soon(c.hold(b, kib(100))).await.is_none(), "b is at its third");
        assert!(soon(c.hold(a, kib(1))).await.is_none(), "a is over its third");
        // A third user still finds the rest.
        let _d1 = soon(c.hold(d, kib(100))).await.expect("room for a third user");
        drop(b1);
        mine.truncate(2);
        assert!(soon(c.hold(a, kib(64))).await.is_some(), "a is under its share again");
    }
}
