//! Warm-up: a new sending IP earns its reputation by sending a little
//! more each day. A transport's `warmup = [500, 1000, 2000, …]` caps the
//! messages it is handed on each UTC day from `warmup_start` (day 0 gets
//! the first cap; days before the start too); once the list is over it
//! has no cap. Pure: the engine counts per day in storage and asks here.

use chrono::{DateTime, Duration, NaiveDate, Utc};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warmup {
    pub caps: Vec<u64>,
    pub start: NaiveDate,
}

impl Warmup {
    /// The cap on `day`, or none (the schedule is over).
    pub fn cap_on(&self, day: NaiveDate) -> Option<u64> {
        let n = (day - self.start).num_days().max(0);
        self.caps.get(usize::try_from(n).ok()?).copied()
    }
}

/// The UTC day `now` falls on: what the caps and counts are kept by.
pub fn day_of(now: DateTime<Utc>) -> NaiveDate {
    now.date_naive()
}

/// When the next UTC day starts, after `now`: when a capped send goes on.
pub fn next_day(now: DateTime<Utc>) -> DateTime<Utc> {
    (day_of(now) + Duration::days(1))
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn each_day_has_its_cap_and_the_schedule_ends() {
        let w = Warmup {
            caps: vec![500, 1000, 2000],
            start: "2026-12-01".parse().unwrap(),
        };
        let cap = |t: &str| w.cap_on(day_of(at(t)));
        assert_eq!(
            cap("2026-11-20T12:00:00Z"),
            Some(500),
            "before the start: the first day's"
        );
        assert_eq!(cap("2026-12-01T00:00:00Z"), Some(500));
        assert_eq!(cap("2026-12-01T23:59:59Z"), Some(500));
        assert_eq!(cap("2026-12-02T00:00:00Z"), Some(1000), "a new UTC day, a new cap");
        assert_eq!(cap("2026-12-03T18:00:00Z"), Some(2000));
        assert_eq!(cap("2026-12-04T00:00:00Z"), None, "warmed up");
        assert_eq!(next_day(at("2026-12-01T17:30:00Z")), at("2026-12-02T00:00:00Z"));
        assert_eq!(next_day(at("2026-12-31T23:59:59Z")), at("2027-01-01T00:00:00Z"));
    }
}
