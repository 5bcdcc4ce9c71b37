//! How a message record is stored: `record_form`'s frame (a version
//! byte, the status as one byte, then the other fields with postcard).
//!
//! Message records are most of what a send writes (one per subscriber,
//! written when the step queues it and again at its outcome) and most of
//! the database's size. As JSON a sent record was about 290 bytes and
//! its two timestamps were formatted and parsed as text on every write;
//! this form is about 90. Records written as JSON by earlier versions
//! (they start with `{`) are still read, and rewritten in this form the
//! next time they change.
//!
//! Codes and field order are the format: append, never reorder. The
//! mirror structs below spell it out so that no serde attribute on a
//! domain type (a rename, a skipped field) can change it unnoticed.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::record_form::{Form, Framed, Time, time};
use super::{Result, StoreError, decode as decode_json};
use crate::domain::SubscriberId;
use crate::domain::bounce::BounceType;
use crate::domain::message::{MessageBounce, MessageRecord, MessageStatus};
use crate::domain::tracking::Engagement;

const FORM: Form = Form {
    record: "message",
    version: 1,
};

fn status_code(s: MessageStatus) -> u8 {
    match s {
        MessageStatus::Queued => 0,
        MessageStatus::Sent => 1,
        MessageStatus::Failed => 2,
        MessageStatus::Skipped => 3,
        MessageStatus::Cancelled => 4,
    }
}

fn status_of(code: u8) -> Result<MessageStatus> {
    Ok(match code {
        0 => MessageStatus::Queued,
        1 => MessageStatus::Sent,
        2 => MessageStatus::Failed,
        3 => MessageStatus::Skipped,
        4 => MessageStatus::Cancelled,
        _ => return Err(FORM.corrupt(format!("unknown message status code {code}"))),
    })
}

fn bounce_code(t: BounceType) -> u8 {
    match t {
        BounceType::Hard => 0,
        BounceType::Soft => 1,
        BounceType::Complaint => 2,
    }
}

fn bounce_of(code: u8) -> Result<BounceType> {
    Ok(match code {
        0 => BounceType::Hard,
        1 => BounceType::Soft,
        2 => BounceType::Complaint,
        _ => return Err(FORM.corrupt(format!("unknown bounce type code {code}"))),
    })
}

fn at(t: Time) -> Result<DateTime<Utc>> {
    FORM.at(t)
}

#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    subscriber_id: u64,
    email: Cow<'a, str>,
    message_id: Cow<'a, str>,
    attempts: u32,
    last_error: Option<Cow<'a, str>>,
    remote_id: Option<Cow<'a, str>>,
    possible_duplicate: bool,
    due_at: Option<Time>,
    skip_reason: Option<Cow<'a, str>>,
    bounces: Vec<WireBounce<'a>>,
    sent_at: Option<Time>,
    engagement: Option<WireEngagement<'a>>,
    variant: Option<u8>,
    in_test: bool,
    updated_at: Time,
}

#[derive(Serialize, Deserialize)]
struct WireBounce<'a> {
    kind: u8,
    reason: Option<Cow<'a, str>>,
    at: Time,
}

#[derive(Serialize, Deserialize)]
struct WireEngagement<'a> {
    opens: u32,
    clicks: u32,
    first_opened_at: Option<Time>,
    first_clicked_at: Option<Time>,
    links: Cow<'a, [u16]>,
}

pub(super) fn encode(r: &MessageRecord) -> Vec<u8> {
    let wire = Wire {
        subscriber_id: r.subscriber_id.get(),
        email: Cow::Borrowed(&r.email),
        message_id: Cow::Borrowed(&r.message_id),
        attempts: r.attempts,
        last_error: r.last_error.as_deref().map(Cow::Borrowed),
        remote_id: r.remote_id.as_deref().map(Cow::Borrowed),
        possible_duplicate: r.possible_duplicate,
        due_at: r.due_at.map(time),
        skip_reason: r.skip_reason.as_deref().map(Cow::Borrowed),
        bounces: r
            .bounces
            .iter()
            .map(|b| WireBounce {
                kind: bounce_code(b.kind),
                reason: b.reason.as_deref().map(Cow::Borrowed),
                at: time(b.at),
            })
            .collect(),
        sent_at: r.sent_at.map(time),
        engagement: r.engagement.as_ref().map(|e| WireEngagement {
            opens: e.opens,
            clicks: e.clicks,
            first_opened_at: e.first_opened_at.map(time),
            first_clicked_at: e.first_clicked_at.map(time),
            links: Cow::Borrowed(&e.links),
        }),
        variant: r.variant,
        in_test: r.in_test,
        updated_at: time(r.updated_at),
    };
    FORM.write(status_code(r.status), &wire)
}

pub(super) fn decode(bytes: &[u8]) -> Result<MessageRecord> {
    let Framed::Binary { status, body } = FORM.read(bytes)? else {
        return decode_json(bytes);
    };
    let status = status_of(status)?;
    let w: Wire = FORM.body(body)?;
    let owned = |s: Option<Cow<str>>| s.map(Cow::into_owned);
    Ok(MessageRecord {
        subscriber_id: SubscriberId::new(w.subscriber_id),
        email: w.email.into_owned(),
        message_id: w.message_id.into_owned(),
        status,
        attempts: w.attempts,
        last_error: owned(w.last_error),
        remote_id: owned(w.remote_id),
        possible_duplicate: w.possible_duplicate,
        due_at: w.due_at.map(at).transpose()?,
        skip_reason: owned(w.skip_reason),
        bounces: w
            .bounces
            .into_iter()
            .map(|b| {
                Ok(MessageBounce {
                    kind: bounce_of(b.kind)?,
                    reason: owned(b.reason),
                    at: at(b.at)?,
                })
            })
            .collect::<Result<_>>()?,
        sent_at: w.sent_at.map(at).transpose()?,
        engagement: w
            .engagement
            .map(|e| {
                Ok::<_, StoreError>(Engagement {
                    opens: e.opens,
                    clicks: e.clicks,
                    first_opened_at: e.first_opened_at.map(at).transpose()?,
                    first_clicked_at: e.first_clicked_at.map(at).transpose()?,
                    links: e.links.into_owned(),
                })
            })
            .transpose()?,
        variant: w.variant,
        in_test: w.in_test,
        updated_at: at(w.updated_at)?,
    })
}

/// A record's status alone, for filters that pass most records over.
pub(super) fn status(bytes: &[u8]) -> Result<MessageStatus> {
    FORM.status(bytes, status_of)
}

#[cfg(test)]
mod tests {
    use super::super::record_form::checks;
    use super::*;

    fn t(secs: i64, nanos: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, nanos).unwrap()
    }

    fn sent() -> MessageRecord {
        MessageRecord {
            subscriber_id: SubscriberId::new(123_456),
            email: "reader123456@example.org".into(),
            message_id: "<posta.7.123456.0a1b2c3d@example.org>".into(),
            status: MessageStatus::Sent,
            attempts: 1,
            last_error: None,
            remote_id: None,
            possible_duplicate: false,
            due_at: None,
            skip_reason: None,
            bounces: Vec::new(),
            sent_at: Some(t(1_796_000_000, 123_456_789)),
            engagement: None,
            variant: None,
            in_test: false,
            updated_at: t(1_796_000_000, 123_456_789),
        }
    }

    /// Every field set, each to something other than its default.
    fn everything() -> MessageRecord {
        MessageRecord {
            status: MessageStatus::Failed,
            attempts: 3,
            last_error: Some("421 try later \u{e9}".into()),
            remote_id: Some("id-1".into()),
            possible_duplicate: true,
            due_at: Some(t(-86_400, 1)),
            skip_reason: Some("suppressed: complaint".into()),
            bounces: vec![
                MessageBounce {
                    kind: BounceType::Soft,
                    reason: Some("mailbox full".into()),
                    at: t(1_796_000_100, 0),
                },
                MessageBounce {
                    kind: BounceType::Complaint,
                    reason: None,
                    at: t(1_796_000_200, 999_999_999),
                },
            ],
            engagement: Some(Engagement {
                opens: 4,
                clicks: 2,
                first_opened_at: Some(t(1_796_000_300, 5)),
                first_clicked_at: None,
                links: vec![0, 3, 65_535],
            }),
            variant: Some(1),
            in_test: true,
            ..sent()
        }
    }

    #[test]
    fn records_read_back_as_written_and_as_json_from_earlier_versions() {
        use MessageStatus::*;
        for s in [Queued, Sent, Failed, Skipped, Cancelled] {
            for r in [sent(), everything()] {
                let r = MessageRecord { status: s, ..r };
                checks::reads_back(&r, s, &encode(&r), decode, status);
                checks::reads_back(&r, s, &super::super::encode(&r), decode, status);
            }
        }
    }

    #[test]
    fn a_sent_record_is_a_third_of_its_json() {
        let r = sent();
        let (binary, json) = (encode(&r).len(), super::super::encode(&r).len());
        assert!(binary * 3 <= json, "{binary} bytes against {json} as JSON");
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        checks::damage_is_an_error(&encode(&everything()), decode, status);
    }
}
