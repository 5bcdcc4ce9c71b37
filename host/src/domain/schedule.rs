//! When each subscriber's message is due.
//!
//! With `send_at_local_time`, the wall-clock time of `scheduled_at` (read in
//! UTC) is the time each subscriber should see on their own clock. A time
//! that does not exist locally (a DST gap) moves forward by the gap; a time
//! that exists twice (a DST overlap) takes the first. Subscribers without a
//! timezone get it at `scheduled_at` itself. The campaign starts when the
//! earliest zone, UTC+14, reaches that time.

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// The largest UTC offset in use (Pacific/Kiritimati).
pub const EARLIEST_OFFSET: Duration = Duration::hours(14);

/// The years a `scheduled_at` may name. chrono reads RFC 3339 times
/// hundreds of thousands of years out, where the local-time arithmetic
/// below would overflow; no campaign is meant for them.
pub const YEARS: std::ops::RangeInclusive<i32> = 1970..=9999;

/// Whether `at` is a time a campaign may be scheduled for.
pub fn check_range(at: DateTime<Utc>) -> Result<(), String> {
    if YEARS.contains(&at.year()) {
        Ok(())
    } else {
        Err(format!(
            "must lie between the years {} and {} (RFC 3339, such as 2030-01-31T09:00:00Z)",
            YEARS.start(),
            YEARS.end()
        ))
    }
}

/// When a campaign leaves `scheduled`: its `scheduled_at`, or for local-time
/// sending the moment UTC+14 reaches that wall-clock time. Saturating, so a
/// time stored before `check_range` existed cannot panic here.
pub fn start_at(scheduled_at: Option<DateTime<Utc>>, local_time: bool) -> Option<DateTime<Utc>> {
    let at = scheduled_at?;
    Some(if local_time {
        at.checked_sub_signed(EARLIEST_OFFSET)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    } else {
        at
    })
}

/// The instant a subscriber in `tz` should receive a local-time campaign.
pub fn due_at(scheduled_at: DateTime<Utc>, tz: Option<Tz>) -> DateTime<Utc> {
    let Some(tz) = tz else { return scheduled_at };
    // Out of range (stored before `check_range`): everyone at that instant.
    if check_range(scheduled_at).is_err() {
        return scheduled_at;
    }
    let wall = scheduled_at.naive_utc();
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => forward_over_gap(tz, wall),
    }
}

/// A wall time inside a gap, read with the offset in force before the gap,
/// lands after it by exactly the gap's length (02:30 in New York's March
/// gap becomes 03:30 EDT).
fn forward_over_gap(tz: Tz, wall: NaiveDateTime) -> DateTime<Utc> {
    // Transitions are never less than a day apart, so a day earlier is
    // safely before this one.
    let before = tz.offset_from_utc_datetime(&(wall - Duration::days(1))).fix();
    (wall - Duration::seconds(i64::from(before.local_minus_utc()))).and_utc()
}

/// Parses a stored timezone name; stored names were validated at import.
pub fn parse_tz(name: Option<&str>) -> Option<Tz> {
    name.and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn due(at: &str, tz: &str) -> DateTime<Utc> {
        due_at(t(at), Some(tz.parse().unwrap()))
    }

    #[test]
    fn fixed_and_fractional_offsets() {
        assert_eq!(due("2026-06-10T09:00:00Z", "Asia/Kolkata"), t("2026-06-10T03:30:00Z"));
        assert_eq!(due("2026-06-10T09:00:00Z", "Asia/Kathmandu"), t("2026-06-10T03:15:00Z"));
        assert_eq!(
            due("2026-06-10T09:00:00Z", "Pacific/Kiritimati"),
            t("2026-06-09T19:00:00Z")
        );
        assert_eq!(
            due("2026-06-10T09:00:00Z", "Pacific/Pago_Pago"),
            t("2026-06-10T20:00:00Z")
        );
        assert_eq!(due("2026-06-10T09:00:00Z", "Europe/Paris"), t("2026-06-10T07:00:00Z"));
        assert_eq!(due("2026-01-10T09:00:00Z", "Europe/Paris"), t("2026-01-10T08:00:00Z"));
    }

    #[test]
    fn no_timezone_means_utc() {
        assert_eq!(due_at(t("2026-06-10T09:00:00Z"), None), t("2026-06-10T09:00:00Z"));
    }

    #[test]
    fn dst_gap_moves_forward() {
        // 2026-03-08: New York jumps from 02:00 EST to 03:00 EDT.
        assert_eq!(
            due("2026-03-08T02:30:00Z", "America/New_York"),
            t("2026-03-08T07:30:00Z")
        );
        assert_eq!(
            due("2026-03-08T02:00:00Z", "America/New_York"),
            t("2026-03-08T07:00:00Z")
        );
        // Just outside the gap nothing moves.
        assert_eq!(
            due("2026-03-08T01:59:00Z", "America/New_York"),
            t("2026-03-08T06:59:00Z")
        );
        assert_eq!(
            due("2026-03-08T03:00:00Z", "America/New_York"),
            t("2026-03-08T07:00:00Z")
        );
    }

    #[test]
    fn dst_overlap_takes_the_first() {
        // 2026-11-01: New York's 01:00–02:00 happens twice (EDT, then EST).
        assert_eq!(
            due("2026-11-01T01:30:00Z", "America/New_York"),
            t("2026-11-01T05:30:00Z")
        );
        assert_eq!(
            due("2026-11-01T02:30:00Z", "America/New_York"),
            t("2026-11-01T07:30:00Z")
        );
    }

    #[test]
    fn every_zone_is_due_after_the_start() {
        let at = t("2026-03-08T02:30:00Z");
        let start = start_at(Some(at), true).unwrap();
        assert_eq!(start, t("2026-03-07T12:30:00Z"));
        for tz in chrono_tz::TZ_VARIANTS {
            let d = due_at(at, Some(tz));
            assert!(d >= start, "{tz}: due {d} before start {start}");
            assert!(d <= at + Duration::hours(13), "{tz}: due {d} too late");
        }
    }

    #[test]
    fn extreme_times_are_refused_and_never_panic() {
        let (min, max) = (DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC);
        let year_10000 = chrono::NaiveDate::from_ymd_opt(10_000, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc();
        for at in [min, max, t("1969-12-31T23:59:59Z"), year_10000] {
            assert!(check_range(at).is_err(), "{at}");
            start_at(Some(at), true);
            due_at(at, Some(chrono_tz::Pacific::Kiritimati));
            due_at(at, Some(chrono_tz::America::New_York));
        }
        assert!(check_range(t("1970-01-01T00:00:00Z")).is_ok());
        assert!(check_range(t("9999-12-31T23:59:59Z")).is_ok());
        assert_eq!(start_at(Some(min), true), Some(DateTime::<Utc>::MIN_UTC));
    }

    #[test]
    fn start_is_scheduled_at_without_local_time() {
        let at = t("2026-06-10T09:00:00Z");
        assert_eq!(start_at(Some(at), false), Some(at));
        assert_eq!(start_at(None, true), None);
    }
}
