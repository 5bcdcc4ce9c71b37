//! Smooth send rates: a pacer that gives the n-th message of a limited
//! stream the slot `start + n·period`, so a rate of N per minute spaces
//! messages 60/N seconds apart instead of sending N at the top of each
//! minute.
//!
//! Written here rather than taken from governor (used before): GCRA with a
//! burst of one restarts its schedule from *now* whenever a waiter wakes
//! late, so every timer wake-up's lateness is lost and the rate drifts low
//! (−1.7% measured at 6,000/min). Fixed slots do not drift: a late message
//! does not push the next one back. At most one period of unused time is
//! ever kept, so after an idle stretch or a pause no burst builds up; any
//! one-second window holds at most one second's share plus one.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

pub struct Limiter {
    period: Duration,
    /// The slot the next reservation gets.
    next: Mutex<Option<Instant>>,
}

impl Limiter {
    /// Reserves the next slot as of `now` and returns when it is.
    pub fn reserve(&self, now: Instant) -> Instant {
        let mut next = self.next.lock().expect("pacer lock");
        let slot = match *next {
            // On schedule, or behind by less than a period (a late
            // wake-up): keep the schedule.
            Some(n) if n + self.period >= now => n,
            // First use, or idle or paused for longer: start afresh.
            _ => now,
        };
        *next = Some(slot + self.period);
        slot
    }

    /// Waits for this caller's slot.
    pub async fn until_ready(&self) {
        let slot = self.reserve(Instant::now());
        tokio::time::sleep_until(slot).await;
    }
}

/// The least time between two transport calls of one campaign, kept right
/// before each call. A campaign's pacer hands out its slots before a
/// message is rendered (so a waiting message holds no bytes), and what
/// comes between — rendering, the hand-off to a lane worker — delays
/// calls unevenly: a late call followed by one on time put two in one
/// period, and up to 103 calls in a second at 100/s. Keeping the calls a
/// period apart where they happen bounds every second to its share + 1;
/// a late call shifts the ones after it, never the rate.
pub struct Spacing {
    period: Duration,
    last: Mutex<Option<Instant>>,
}

impl Spacing {
    pub fn new(per_minute: u32) -> Spacing {
        Spacing {
            period: Duration::from_secs_f64(60.0 / f64::from(per_minute.max(1))),
            last: Mutex::new(None),
        }
    }

    /// Reserves the start of a call as of `now`: a period after the last
    /// one reserved, and not before `now`.
    pub fn reserve(&self, now: Instant) -> Instant {
        let mut last = self.last.lock().expect("spacing lock");
        let at = match *last {
            Some(l) if l + self.period > now => l + self.period,
            _ => now,
        };
        *last = Some(at);
        at
    }
}

/// A rate a send obeys: this process's own pacer, or the one every process
/// on the storage shares (`Backend::shared_pace`: on PostgreSQL), so a
/// limit holds for the cluster, not per node.
pub enum Pace {
    Local(Limiter),
    Shared(Box<dyn crate::store::queue::SharedPace>),
}

impl Pace {
    /// The pace named `name` at `per_minute` on `store`'s backend, or none
    /// for no limit.
    pub async fn new(
        store: &crate::store::Store,
        name: &str,
        per_minute: Option<u32>,
    ) -> Result<Option<Pace>, crate::store::StoreError> {
        let Some(n) = per_minute.filter(|n| *n > 0) else {
            return Ok(None);
        };
        Ok(match store.shared_pace(name, n).await? {
            Some(shared) => Some(Pace::Shared(shared)),
            None => self::per_minute(Some(n)).map(Pace::Local),
        })
    }

    /// Waits for this caller's slot and returns the latest instant its send
    /// may start, if there is one: a shared pacer's slots hold the
    /// cluster's limit only when each send starts on its own (the lane
    /// takes another if the call would start later); this process's own
    /// pacer keeps its rate whatever the lateness. A shared pacer that
    /// cannot reach the database holds the send back (a send without a slot
    /// could break the cluster's limit) and tries again.
    pub async fn until_ready(&self) -> Option<std::time::Instant> {
        match self {
            Pace::Local(l) => {
                l.until_ready().await;
                None
            }
            Pace::Shared(p) => loop {
                match p.acquire().await {
                    Ok(start_by) => return Some(start_by),
                    // Reported to the store's health by the pacer.
                    Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            },
        }
    }
}

/// A limiter for `per_minute` emails per minute, or none for no limit.
pub fn per_minute(per_minute: Option<u32>) -> Option<Limiter> {
    let n = per_minute.filter(|n| *n > 0)?;
    Some(Limiter {
        period: Duration::from_secs_f64(60.0 / f64::from(n)),
        next: Mutex::new(None),
    })
}

/// The slower of two optional rates per minute (0 is no limit).
pub fn slowest(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    a.into_iter().chain(b).filter(|n| *n > 0).min()
}

/// Messages worth queueing ahead of a limited campaign: about half a
/// second's share, so that a pause leaves little mail still to go out.
pub fn window(per_minute: Option<u32>, max: usize) -> usize {
    match per_minute {
        Some(n) => ((n as usize).div_ceil(120)).clamp(1, max),
        None => max,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn calls_stay_a_period_apart_and_a_late_one_shifts_the_rest() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let s = Spacing::new(6_000);
        assert_eq!(s.reserve(t0), t0);
        // Bunched behind it: pushed to the next period.
        assert_eq!(s.reserve(t0 + ms(3)), t0 + ms(10));
        // Late: starts at once, and the next keeps its distance.
        assert_eq!(s.reserve(t0 + ms(35)), t0 + ms(35));
        assert_eq!(s.reserve(t0 + ms(40)), t0 + ms(45));
        // After a pause: at once.
        assert_eq!(s.reserve(t0 + ms(500)), t0 + ms(500));
    }

    use super::*;

    const T: Duration = Duration::from_millis(10);

    fn pacer() -> Limiter {
        per_minute(Some(6_000)).unwrap()
    }

    #[test]
    fn window_tracks_the_rate() {
        assert_eq!(window(None, 1024), 1024);
        assert_eq!(window(Some(600), 1024), 5);
        assert_eq!(window(Some(1), 1024), 1);
        assert_eq!(window(Some(6_000_000), 1024), 1024);
        assert!(per_minute(None).is_none());
        assert!(per_minute(Some(0)).is_none());
        assert_eq!(slowest(Some(600), Some(6_000)), Some(600));
        assert_eq!(slowest(None, Some(6_000)), Some(6_000));
        assert_eq!(slowest(Some(0), None), None);
    }

    #[test]
    fn waiting_callers_get_consecutive_slots() {
        let p = pacer();
        let t0 = Instant::now();
        let slots: Vec<Instant> = (0..100).map(|_| p.reserve(t0)).collect();
        for (i, s) in slots.iter().enumerate() {
            assert_eq!(*s, t0 + T * i as u32);
        }
    }

    #[test]
    fn idle_time_is_not_banked() {
        let p = pacer();
        let t0 = Instant::now();
        p.reserve(t0);
        // Ten periods later: the next message goes now, the one after a
        // full period later — not ten at once.
        let later = t0 + T * 10;
        assert_eq!(p.reserve(later), later);
        assert_eq!(p.reserve(later), later + T);
    }

    /// Each message is sent when its slot comes plus a random wake-up
    /// lateness below one period, then the caller asks for the next slot.
    /// Over 6,000 messages the rate stays exact and no one-second window
    /// holds more than its share plus one.
    #[test]
    fn late_wake_ups_neither_slow_the_rate_nor_burst() {
        use rand::{Rng, SeedableRng};
        for seed in 0..20u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let p = pacer();
            let t0 = Instant::now();
            let mut now = t0;
            let mut sent = Vec::new();
            for _ in 0..6_000 {
                let slot = p.reserve(now);
                let late = Duration::from_micros(rng.random_range(0..9_900));
                now = now.max(slot) + late;
                sent.push(now);
            }
            let span = (*sent.last().unwrap() - sent[0]).as_secs_f64();
            let per_minute = (sent.len() - 1) as f64 / span * 60.0;
            assert!(
                (per_minute / 6_000.0 - 1.0).abs() < 0.002,
                "seed {seed}: {per_minute}/min"
            );
            let mut lo = 0;
            for hi in 0..sent.len() {
                while sent[hi] - sent[lo] >= Duration::from_secs(1) {
                    lo += 1;
                }
                let in_window = hi - lo + 1;
                assert!(in_window <= 101, "seed {seed}: {in_window} in one second");
            }
        }
    }
}
