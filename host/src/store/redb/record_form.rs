//! What the binary record forms (`message_codec`, `subscriber_codec`)
//! share: the frame — a version byte, the record's status as one byte (a
//! status filter reads two bytes), then the fields with postcard (varints,
//! no field names) —, the JSON earlier versions wrote (it starts with `{`,
//! which no version byte is, and is still read), and times as seconds and
//! nanoseconds instead of RFC 3339 text formatted and parsed each time.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Result, StatusOf, StoreError, decode as decode_json};

/// One kind of record's form: its name (for errors) and version byte.
pub(super) struct Form {
    pub(super) record: &'static str,
    pub(super) version: u8,
}

/// A stored record's bytes.
pub(super) enum Framed<'a> {
    /// Written as JSON by an earlier version.
    Json,
    Binary {
        status: u8,
        body: &'a [u8],
    },
}

impl Form {
    pub(super) fn corrupt(&self, why: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt(format!("{} record: {why}", self.record))
    }

    pub(super) fn write<T: Serialize>(&self, status: u8, wire: &T) -> Vec<u8> {
        postcard::to_extend(wire, vec![self.version, status]).expect("a Vec grows as needed")
    }

    pub(super) fn read<'a>(&self, bytes: &'a [u8]) -> Result<Framed<'a>> {
        match bytes {
            [b'{', ..] => Ok(Framed::Json),
            [version, status, body @ ..] if *version == self.version => Ok(Framed::Binary { status: *status, body }),
            _ => Err(self.corrupt(format!("unknown format (first byte {:?})", bytes.first()))),
        }
    }

    pub(super) fn body<'a, T: Deserialize<'a>>(&self, body: &'a [u8]) -> Result<T> {
        postcard::from_bytes(body).map_err(|e| self.corrupt(e))
    }

    /// A record's status alone, for filters that pass most records over:
    /// the status byte, or the JSON's `status` without the other fields.
    pub(super) fn status<S: DeserializeOwned>(&self, bytes: &[u8], of: impl Fn(u8) -> Result<S>) -> Result<S> {
        match self.read(bytes)? {
            Framed::Json => Ok(decode_json::<StatusOf<S>>(bytes)?.status),
            Framed::Binary { status, .. } => of(status),
        }
    }

    pub(super) fn at(&self, (secs, nanos): Time) -> Result<DateTime<Utc>> {
        DateTime::from_timestamp(secs, nanos).ok_or_else(|| self.corrupt(format!("time out of range: {secs}.{nanos}")))
    }
}

/// A time to the nanosecond, as seconds and nanoseconds since the epoch.
pub(super) type Time = (i64, u32);

pub(super) fn time(t: DateTime<Utc>) -> Time {
    (t.timestamp(), t.timestamp_subsec_nanos())
}

/// What every codec's tests hold it to.
#[cfg(test)]
pub(super) mod checks {
    use std::fmt::Debug;

    use super::Result;

    /// `bytes` read back as `record`, and its status alone as `status`.
    pub(in super::super) fn reads_back<R: PartialEq + Debug, S: PartialEq + Debug>(
        record: &R,
        status: S,
        bytes: &[u8],
        decode: fn(&[u8]) -> Result<R>,
        status_of: fn(&[u8]) -> Result<S>,
    ) {
        assert_eq!(&decode(bytes).unwrap(), record);
        assert_eq!(status_of(bytes).unwrap(), status);
    }

    /// Every truncation of `bytes`, an unknown status code and an unknown
    /// version are errors, never panics or another record.
    pub(in super::super) fn damage_is_an_error<R: Debug, S: Debug>(
        bytes: &[u8],
        decode: fn(&[u8]) -> Result<R>,
        status_of: fn(&[u8]) -> Result<S>,
    ) {
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = bytes.to_vec();
        bad[1] = 9;
        assert!(decode(&bad).is_err() && status_of(&bad).is_err());
        bad = bytes.to_vec();
        bad[0] = 2;
        assert!(decode(&bad).is_err() && status_of(&bad).is_err());
    }
}
