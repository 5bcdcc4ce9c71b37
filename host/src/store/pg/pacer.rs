//! A pacer every node obeys: the `pacers` row holds the next free send
//! slot of one rate, and a node takes a block of consecutive slots with one
//! `UPDATE … RETURNING`. Slots are spaced by the rate's interval on the
//! database's clock, so however the blocks fall to nodes, no two calls
//! anywhere share a slot and any window of a second holds at most
//! rate/s + 1 of them. A slot not used is lost, never saved up: the row
//! never lags the clock, so an idle rate does not burst later.
//!
//! Each block also returns the database's clock, and the node maps slot
//! times to its own monotonic clock (`ClockMap`) by the reply that came
//! back fastest of the last few: a reply's travel time and the wait until
//! its task ran shift every slot of its block late by as much (several
//! milliseconds on a busy machine), and two nodes' blocks shifted by
//! different amounts crowd the slots where they meet. A send starts on its
//! slot or not at all (`acquire`), so any second holds at most rate/s + 1
//! sends (plus 0.2% of the rate above 500/s, where the 2 ms floor of the
//! tolerance reaches a whole interval).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;

use super::PgStore;
use crate::store::{Result, StoreError};

/// One shared rate, as seen from this node.
pub struct SharedPacer {
    store: PgStore,
    name: String,
    interval: Duration,
    /// Slots per block: about 50 ms of the rate, at least one. Smaller
    /// blocks cost round trips; larger ones leave more slots unused when a
    /// node runs out of work while holding some (the end of a send).
    block: u32,
    /// Slots left in a block when the next is taken: about 20 ms of the
    /// rate, time enough for the round trip; none for one-slot blocks.
    lead: u32,
    local: Mutex<Block>,
}

#[derive(Default)]
struct Block {
    next: Option<Instant>,
    left: u32,
    clock: ClockMap,
    /// The next block, being taken while this one is spent.
    ahead: Option<tokio::task::JoinHandle<Result<Taken>>>,
}

/// A block as the database handed it out.
struct Taken {
    /// Its first slot, on the database's clock.
    first: DateTime<Utc>,
    /// The database's clock when it answered, and when the answer was read.
    db_now: DateTime<Utc>,
    read_at: Instant,
}

/// How many recent replies the clock mapping chooses from: at a block per
/// ~50 ms of the rate, the last second or so on a busy pacer, so a change
/// of the database's clock (an NTP step) is followed within a few blocks.
const CLOCK_SAMPLES: usize = 16;

/// Maps the database's clock to this node's monotonic clock. Each reply
/// pairs the database's `now` with the local instant it was read back; the
/// delay between the two only ever makes a reply look later, so the pairing
/// that maps a database time earliest is the most accurate one.
#[derive(Default)]
struct ClockMap {
    samples: std::collections::VecDeque<(Instant, DateTime<Utc>)>,
}

impl ClockMap {
    /// Records a reply: the database said `db_now`, read back at `local`.
    fn sample(&mut self, local: Instant, db_now: DateTime<Utc>) {
        if self.samples.len() == CLOCK_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((local, db_now));
    }

    /// The local instant of database time `at`, by the fastest recent reply
    /// (none recorded: `None`).
    fn local(&self, at: DateTime<Utc>) -> Option<Instant> {
        self.samples
            .iter()
            .map(|&(local, db_now)| match (at - db_now).to_std() {
                Ok(ahead) => local + ahead,
                Err(_) => local
                    .checked_sub((db_now - at).to_std().unwrap_or_default())
                    .unwrap_or(local),
            })
            .min()
    }
}

impl SharedPacer {
    /// The pacer `name` at `per_minute` sends (e.g. `transport:smtp` or
    /// `campaign:42`); every node naming it shares its slots.
    pub async fn new(store: &PgStore, name: &str, per_minute: u32) -> Result<SharedPacer> {
        let per_minute = per_minute.max(1);
        let interval = Duration::from_micros(60_000_000 / u64::from(per_minute));
        let block = (per_minute / 1_200).clamp(1, 1_000);
        let lead = match block {
            1 => 0,
            _ => (Duration::from_millis(20).as_micros() as u32)
                .div_ceil(interval.as_micros() as u32)
                .clamp(1, block / 2),
        };
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
            lead,
            local: Mutex::new(Block::default()),
        })
    }

    /// Waits for this node's next slot and returns the latest instant its
    /// send may start (`Pool::call_by` checks it again right before the
    /// call; a send that misses it takes the next slot).
    ///
    /// A slot woken up later than `tolerance` — a starved thread, a slow
    /// reply — is let go and the next one taken: sending on it would crowd
    /// the slots after it, other nodes' included. So every send starts
    /// within that tolerance of a slot of its own, which is what bounds any
    /// second's sends; under starvation the rate falls short instead.
    pub async fn acquire(&self) -> Result<Instant> {
        let tolerance = tolerance(self.interval);
        loop {
            let at = self.next_slot().await?;
            tokio::time::sleep_until(at.into()).await;
            if Instant::now() <= at + tolerance {
                return Ok(at + tolerance);
            }
        }
    }

    /// The local instant of this node's next slot. A block of two slots or
    /// more has the next one taken `lead` slots before its end, so no slot waits
    /// on a round trip to the database: taken only when needed, a block
    /// whose first slot is due at once (no other node sending) began with
    /// that slot already late by the round trip, and lost it on a busy
    /// machine. Callers queue on the lock, so slots go out in order.
    pub async fn next_slot(&self) -> Result<Instant> {
        let mut local = self.local.lock().await;
        if local.left == 0 {
            let taken = match local.ahead.take() {
                Some(ahead) => ahead
                    .await
                    .map_err(|e| StoreError::Db(format!("taking pacer slots: {e}")))
                    .and_then(|taken| taken),
                None => take_block(&self.store, &self.name, self.span()).await,
            };
            // Reported here, where the database is asked, not per slot:
            // slots of a block taken earlier are no news about it.
            let taken = match taken {
                Ok(taken) => {
                    self.store.health().ok("pacer");
                    taken
                }
                Err(e) => {
                    self.store.health().failed("pacer", &e);
                    return Err(e);
                }
            };
            local.clock.sample(taken.read_at, taken.db_now);
            local.next = local.clock.local(taken.first);
            local.left = self.block;
        }
        let at = local.next.expect("a block was taken");
        local.next = Some(at + self.interval);
        local.left -= 1;
        if self.lead > 0 && local.left == self.lead {
            let (store, name, span) = (self.store.clone(), self.name.clone(), self.span());
            local.ahead = Some(tokio::spawn(async move { take_block(&store, &name, span).await }));
        }
        Ok(at)
    }

    /// How long a block of slots lasts.
    fn span(&self) -> Duration {
        self.interval * self.block
    }
}

/// How late a send may start on its slot. Sends each at most this late
/// never put rate/s + 2 in a second while it is under one interval, so it
/// is one interval less 2 ms, kept for the clock mapping's error and the
/// moments between this check and the call. Half an interval (as before)
/// let go of so many slots woken 5 ms late that 3 nodes at 6,000/min fell
/// 4–7% short beside four CPU hogs on two cores; 8 ms, under 1.5%. Never
/// under half an interval, nor under 2 ms (the timer's granularity).
fn tolerance(interval: Duration) -> Duration {
    let margin = Duration::from_millis(2);
    interval.saturating_sub(margin).max(interval / 2).max(margin)
}

/// Takes the next `span` of the pacer `name`'s slots, after every slot
/// handed out so far and not before the database's now.
async fn take_block(store: &PgStore, name: &str, span: Duration) -> Result<Taken> {
    let client = store.pool.get().await?;
    let row = client
        .query_one(
            "UPDATE pacers
             SET next_slot = greatest(next_slot, clock_timestamp()) + make_interval(secs => $2)
             WHERE name = $1
             RETURNING next_slot - make_interval(secs => $2), clock_timestamp()",
            &[&name, &span.as_secs_f64()],
        )
        .await?;
    let read_at = Instant::now();
    Ok(Taken {
        first: row.get(0),
        db_now: row.get(1),
        read_at,
    })
}

#[async_trait::async_trait]
impl crate::store::queue::SharedPace for SharedPacer {
    async fn acquire(&self) -> Result<Instant> {
        SharedPacer::acquire(self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replies read back after random delays (up to 20 ms, as on a loaded
    /// machine): the mapping is off by the smallest recent delay, not by
    /// the last one.
    #[test]
    fn the_fastest_recent_reply_sets_the_clock() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let origin = Instant::now();
        let db_origin = Utc::now();
        let mut clock = ClockMap::default();
        let mut fastest = Vec::new();
        for i in 0..100u32 {
            let true_offset = Duration::from_millis(100) * i;
            let delay = Duration::from_micros(rng.random_range(200..20_000));
            let db_now = db_origin + chrono::Duration::from_std(true_offset).unwrap();
            clock.sample(origin + true_offset + delay, db_now);
            fastest.push(delay);
            let best = fastest.iter().rev().take(CLOCK_SAMPLES).min().unwrap();
            // A slot 50 ms after the database's last `now`.
            let slot = db_now + chrono::Duration::milliseconds(50);
            let mapped = clock.local(slot).unwrap();
            assert_eq!(mapped, origin + true_offset + Duration::from_millis(50) + *best);
        }
    }

    #[test]
    fn a_late_send_stays_within_its_interval() {
        let ms = Duration::from_millis;
        // 6,000/min: 10 ms apart, 8 ms late at most.
        assert_eq!(tolerance(ms(10)), ms(8));
        assert_eq!(tolerance(ms(1_000)), ms(998));
        // 250/s and faster: half an interval, then the 2 ms floor.
        assert_eq!(tolerance(ms(4)), ms(2));
        assert_eq!(tolerance(ms(3)), ms(2));
        assert_eq!(tolerance(Duration::from_micros(500)), ms(2));
    }

    #[test]
    fn a_time_before_the_reply_maps_before_it() {
        let mut clock = ClockMap::default();
        assert!(clock.local(Utc::now()).is_none());
        let local = Instant::now() + Duration::from_secs(1);
        let db_now = Utc::now();
        clock.sample(local, db_now);
        assert_eq!(
            clock.local(db_now - chrono::Duration::milliseconds(30)),
            Some(local - Duration::from_millis(30))
        );
    }
}
