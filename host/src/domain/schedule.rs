//! When each subscriber's message is due.
//!
//! With `send_at_local_time`, the wall-clock time of `scheduled_at` (read in
//! UTC) is the time each subscriber should see on their own clock. A time
//! that does not exist locally (a DST gap) moves forward by the gap; a time
//! that exists twice (a DST overlap) takes the first. Subscribers without a
//! timezone get it at `scheduled_at` itself. The campaign starts when the
//! earliest zone, UTC+14, reaches that time.

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// The largest UTC offset in use (Pacific/Kiritimati).
pub const EARLIEST_OFFSET: Duration = Duration::hours(14);

/// When a campaign leaves `scheduled`: its `scheduled_at`, or for local-time
/// sending the moment UTC+14 reaches that wall-clock time.
pub fn start_at(scheduled_at: Option<DateTime<Utc>>, local_time: bool) -> Option<DateTime<Utc>> {
    let at = scheduled_at?;
    Some(if local_time { at - EARLIEST_OFFSET } else { at })
}

/// The instant a subscriber in `tz` should receive a local-time campaign.
pub fn due_at(scheduled_at: DateTime<Utc>, tz: Option<Tz>) -> DateTime<Utc> {
    let Some(tz) = tz else { return scheduled_at };
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
    fn start_is_scheduled_at_without_local_time() {
        let at = t("2026-06-10T09:00:00Z");
        assert_eq!(start_at(Some(at), false), Some(at));
        assert_eq!(start_at(None, true), None);
    }
}
