//! Smooth send rates: GCRA (governor) with a burst of one, so a rate of N
//! per minute spaces messages 60/N seconds apart instead of sending N at
//! the top of each minute.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

pub type Limiter = DefaultDirectRateLimiter;

/// A limiter for `per_minute` emails per minute, or none for no limit.
pub fn per_minute(per_minute: Option<u32>) -> Option<Limiter> {
    let n = per_minute.filter(|n| *n > 0)?;
    let period = Duration::from_secs_f64(60.0 / f64::from(n));
    let quota = Quota::with_period(period)?.allow_burst(NonZeroU32::MIN);
    Some(RateLimiter::direct(quota))
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
    use super::*;

    #[test]
    fn window_tracks_the_rate() {
        assert_eq!(window(None, 1024), 1024);
        assert_eq!(window(Some(600), 1024), 5);
        assert_eq!(window(Some(1), 1024), 1);
        assert_eq!(window(Some(6_000_000), 1024), 1024);
    }

    #[test]
    fn burst_is_one() {
        let l = per_minute(Some(60)).unwrap();
        assert!(l.check().is_ok());
        assert!(l.check().is_err(), "a second message in the same second must wait");
        assert!(per_minute(None).is_none());
    }
}
