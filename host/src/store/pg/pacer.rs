//! A pacer every node obeys: the `pacers` row holds the next free send
//! slot of one rate, and a node takes a block of consecutive slots with one
//! `UPDATE … RETURNING`. Slots are spaced by the rate's interval on the
//! database's clock, so however the blocks fall to nodes, no two calls
//! anywhere share a slot and any window of a second holds at most
//! rate/s + 1 of them. A slot not used is lost, never saved up: the row
//! never lags the clock, so an idle rate does not burst later.
//!
//! Each block also returns the database's clock, and the node maps slot
//! times to its own monotonic clock by that offset; the error is the reply's
//! travel time (sub-millisecond on a LAN). A send starts on its slot or
//! not at all (`acquire`), so any second holds at most rate/s + 1 sends
//! (plus 0.2% of the rate above 250/s, where the 2 ms floor of the
//! tolerance exceeds half an interval).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;

use super::PgStore;
use crate::store::Result;

/// One shared rate, as seen from this node.
pub struct SharedPacer {
    store: PgStore,
    name: String,
    interval: Duration,
    /// Slots per block: about 100 ms of the rate, at least one.
    block: u32,
    local: Mutex<Block>,
}

#[derive(Default)]
struct Block {
    next: Option<Instant>,
    left: u32,
}

impl SharedPacer {
    /// The pacer `name` at `per_minute` sends (e.g. `transport:smtp` or
    /// `campaign:42`); every node naming it shares its slots.
    pub async fn new(store: &PgStore, name: &str, per_minute: u32) -> Result<SharedPacer> {
        let per_minute = per_minute.max(1);
        let interval = Duration::from_micros(60_000_000 / u64::from(per_minute));
        let block = (per_minute / 600).clamp(1, 1_000);
        let client = store.pool.get().await?;
        client
            .execute(
                "INSERT INTO pacers (name, next_slot) VALUES ($1, clock_timestamp())
                 ON CONFLICT (name) DO NOTHING",
                &[&name],
            )
            .await?;
        Ok(SharedPacer {
            store: store.clone(),
            name: name.to_string(),
            interval,
            block,
            local: Mutex::new(Block::default()),
        })
    }

    /// Waits for this node's next slot; the caller sends right after.
    ///
    /// A slot woken up for more than half an interval (at least 2 ms) late
    /// — a starved thread, a slow reply — is let go and the next one taken:
    /// sending on it would crowd the slots after it, other nodes' included.
    /// So every send starts within that tolerance of a slot of its own,
    /// which is what bounds any second's sends; under starvation the rate
    /// falls short instead.
    pub async fn acquire(&self) -> Result<()> {
        let tolerance = (self.interval / 2).max(Duration::from_millis(2));
        loop {
            let at = self.next_slot().await?;
            tokio::time::sleep_until(at.into()).await;
            if Instant::now() <= at + tolerance {
                return Ok(());
            }
        }
    }

    /// The local instant of this node's next slot, taking a new block when
    /// the last is used up. Callers queue on the lock, so slots go out in
    /// order.
    pub async fn next_slot(&self) -> Result<Instant> {
        let mut local = self.local.lock().await;
        if local.left == 0 {
            let (first, now_db) = self.take_block().await?;
            let ahead = (first - now_db).to_std().unwrap_or_default();
            local.next = Some(Instant::now() + ahead);
            local.left = self.block;
        }
        let at = local.next.expect("a block was taken");
        local.next = Some(at + self.interval);
        local.left -= 1;
        Ok(at)
    }

    async fn take_block(&self) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
        let client = self.store.pool.get().await?;
        let span = self.interval * self.block;
        let row = client
            .query_one(
                "UPDATE pacers
                 SET next_slot = greatest(next_slot, clock_timestamp()) + make_interval(secs => $2)
                 WHERE name = $1
                 RETURNING next_slot - make_interval(secs => $2), clock_timestamp()",
                &[&self.name, &span.as_secs_f64()],
            )
            .await?;
        Ok((row.get(0), row.get(1)))
    }
}
