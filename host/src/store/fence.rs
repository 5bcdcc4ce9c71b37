//! A node's fence: the instant after which it must not start a transport
//! call, because its claim on the message (its lease, kept by heartbeats
//! that move the fence) may have lapsed by then and another node may be
//! delivering the same message. redb has one process and no fence; on
//! PostgreSQL every message a node claims carries its incarnation's fence
//! (`store::pg::nodes` explains where it falls).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When this node must stop starting transport calls, readable from any
/// thread without a lock.
#[derive(Debug)]
pub struct Fence {
    base: Instant,
    /// Nanoseconds after `base`.
    until: AtomicU64,
}

impl Fence {
    pub(crate) fn new(until: Instant) -> Fence {
        let base = Instant::now();
        let fence = Fence {
            base,
            until: AtomicU64::new(0),
        };
        fence.extend(until);
        fence
    }

    /// Moves the fence to `until` unless it is already later (heartbeats
    /// may finish out of order).
    pub(crate) fn extend(&self, until: Instant) {
        let nanos = u64::try_from(until.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        self.until.fetch_max(nanos, Ordering::AcqRel);
    }

    /// The instant calls must stop.
    pub fn at(&self) -> Instant {
        self.base + Duration::from_nanos(self.until.load(Ordering::Acquire))
    }

    /// Whether a transport call may start now.
    pub fn open(&self) -> bool {
        Instant::now() < self.at()
    }
}
