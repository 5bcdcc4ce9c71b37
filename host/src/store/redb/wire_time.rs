//! Times in the binary record forms (`message_codec`, `subscriber_codec`):
//! seconds and nanoseconds since the epoch, two varints, instead of RFC
//! 3339 text formatted and parsed on every write and read.

use chrono::{DateTime, Utc};

use super::{Result, StoreError};

/// A time to the nanosecond, as seconds and nanoseconds since the epoch.
pub(super) type Time = (i64, u32);

pub(super) fn time(t: DateTime<Utc>) -> Time {
    (t.timestamp(), t.timestamp_subsec_nanos())
}

/// The time back, or a corrupt-record error naming `record`.
pub(super) fn at((secs, nanos): Time, record: &str) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp(secs, nanos)
        .ok_or_else(|| StoreError::Corrupt(format!("{record} record: time out of range: {secs}.{nanos}")))
}
