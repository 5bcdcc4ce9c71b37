//! How a subscriber record is stored: `record_form`'s frame (a version
//! byte, the status as one byte, then the other fields with postcard).
//!
//! Every send reads each recipient's record when its step queues the
//! message, and segments and exports read whole lists. As JSON that read
//! was most of a step's CPU after the writes: the field names parsed, two
//! RFC 3339 timestamps parsed by chrono, about 2.5 µs a subscriber in a
//! send. Attributes stay JSON text inside the record (postcard cannot
//! carry serde_json's self-describing values); an empty map is stored as
//! empty text and read without a parse. Records written as JSON by earlier
//! versions (they start with `{`) are still read, and rewritten in this
//! form the next time they change; an older binary cannot read this form.
//!
//! Codes and field order are the format: append, never reorder. The
//! mirror structs spell it out so that no serde attribute on the domain
//! type (a rename, a skipped field) can change it unnoticed. The email is
//! parsed again on the way out, as deserializing JSON does: a stored
//! record cannot hand the engine an address `Email::parse` refuses.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::record_form::{Form, Framed, Time, time};
use super::{Result, StoreError, decode as decode_json};
use crate::domain::subscriber::StatusChange;
use crate::domain::{Email, ListId, Subscriber, SubscriberId, SubscriberStatus};

const FORM: Form = Form {
    record: "subscriber",
    version: 1,
};

fn status_code(s: SubscriberStatus) -> u8 {
    match s {
        SubscriberStatus::Subscribed => 0,
        SubscriberStatus::Unsubscribed => 1,
        SubscriberStatus::Bounced => 2,
    }
}

fn status_of(code: u8) -> Result<SubscriberStatus> {
    Ok(match code {
        0 => SubscriberStatus::Subscribed,
        1 => SubscriberStatus::Unsubscribed,
        2 => SubscriberStatus::Bounced,
        _ => return Err(FORM.corrupt(format!("unknown subscriber status code {code}"))),
    })
}

fn at(t: Time) -> Result<DateTime<Utc>> {
    FORM.at(t)
}

#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    id: u64,
    list_id: u64,
    email: Cow<'a, str>,
    name: Cow<'a, str>,
    timezone: Option<Cow<'a, str>>,
    /// JSON text of the attributes; empty for none.
    attributes: Cow<'a, str>,
    status_changed: Option<WireChange<'a>>,
    last_opened_at: Option<Time>,
    last_clicked_at: Option<Time>,
    created_at: Time,
    updated_at: Time,
}

#[derive(Serialize, Deserialize)]
struct WireChange<'a> {
    from: u8,
    by: Cow<'a, str>,
    at: Time,
}

pub(super) fn encode(s: &Subscriber) -> Vec<u8> {
    let attributes = if s.attributes.is_empty() {
        String::new()
    } else {
        serde_json::to_string(&s.attributes).expect("a map of JSON values serializes")
    };
    let wire = Wire {
        id: s.id.get(),
        list_id: s.list_id.get(),
        email: Cow::Borrowed(s.email.as_str()),
        name: Cow::Borrowed(&s.name),
        timezone: s.timezone.as_deref().map(Cow::Borrowed),
        attributes: Cow::Owned(attributes),
        status_changed: s.status_changed.as_ref().map(|c| WireChange {
            from: status_code(c.from),
            by: Cow::Borrowed(&c.by),
            at: time(c.at),
        }),
        last_opened_at: s.last_opened_at.map(time),
        last_clicked_at: s.last_clicked_at.map(time),
        created_at: time(s.created_at),
        updated_at: time(s.updated_at),
    };
    FORM.write(status_code(s.status), &wire)
}

pub(super) fn decode(bytes: &[u8]) -> Result<Subscriber> {
    let Framed::Binary { status, body } = FORM.read(bytes)? else {
        return decode_json(bytes);
    };
    let status = status_of(status)?;
    let w: Wire = FORM.body(body)?;
    let attributes = match w.attributes.as_ref() {
        "" => serde_json::Map::new(),
        text => serde_json::from_str(text).map_err(|e| FORM.corrupt(format!("attributes: {e}")))?,
    };
    Ok(Subscriber {
        id: SubscriberId::new(w.id),
        list_id: ListId::new(w.list_id),
        email: Email::parse(&w.email).map_err(|e| FORM.corrupt(e))?,
        name: w.name.into_owned(),
        timezone: w.timezone.map(Cow::into_owned),
        attributes,
        status,
        status_changed: w
            .status_changed
            .map(|c| {
                Ok::<_, StoreError>(StatusChange {
                    from: status_of(c.from)?,
                    by: c.by.into_owned(),
                    at: at(c.at)?,
                })
            })
            .transpose()?,
        last_opened_at: w.last_opened_at.map(at).transpose()?,
        last_clicked_at: w.last_clicked_at.map(at).transpose()?,
        created_at: at(w.created_at)?,
        updated_at: at(w.updated_at)?,
    })
}

/// A record's status alone, for filters that pass most records over.
pub(super) fn status(bytes: &[u8]) -> Result<SubscriberStatus> {
    FORM.status(bytes, status_of)
}

#[cfg(test)]
mod tests {
    use super::super::record_form::checks;
    use super::*;

    fn t(secs: i64, nanos: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, nanos).unwrap()
    }

    /// What an import makes of `email,name`.
    fn imported() -> Subscriber {
        Subscriber {
            id: SubscriberId::new(123_456),
            list_id: ListId::new(7),
            email: Email::parse("reader123456@example.org").unwrap(),
            name: "Reader 123456".into(),
            timezone: None,
            attributes: serde_json::Map::new(),
            status: SubscriberStatus::Subscribed,
            status_changed: None,
            last_opened_at: None,
            last_clicked_at: None,
            created_at: t(1_796_000_000, 123_456_789),
            updated_at: t(1_796_000_000, 123_456_789),
        }
    }

    /// Every field set, each to something other than its default.
    fn everything() -> Subscriber {
        let attributes = serde_json::from_str(
            r#"{"plan": "pro", "n": 41, "big": 18446744073709551615, "f": -2.5e300,
                "list": [1, "two", null, true], "nested": {"b": 1, "a": {"deep": "\u00e9\n<b>"}}}"#,
        )
        .unwrap();
        Subscriber {
            email: Email::parse("Ann.Lee+news@Example.ORG").unwrap(),
            name: "Ann \u{e9} \"Lee\"".into(),
            timezone: Some("Europe/Paris".into()),
            attributes,
            status: SubscriberStatus::Bounced,
            status_changed: Some(StatusChange {
                from: SubscriberStatus::Unsubscribed,
                by: "unsubscribe_link".into(),
                at: t(-86_400, 1),
            }),
            last_opened_at: Some(t(1_796_000_300, 5)),
            last_clicked_at: Some(t(1_796_000_400, 999_999_999)),
            ..imported()
        }
    }

    #[test]
    fn records_read_back_as_written_and_as_json_from_earlier_versions() {
        use SubscriberStatus::*;
        for s in [Subscribed, Unsubscribed, Bounced] {
            for r in [imported(), everything()] {
                let r = Subscriber { status: s, ..r };
                checks::reads_back(&r, s, &encode(&r), decode, status);
                checks::reads_back(&r, s, &super::super::encode(&r), decode, status);
            }
        }
    }

    #[test]
    fn an_imported_record_is_under_half_its_json() {
        let r = imported();
        let (binary, json) = (encode(&r).len(), super::super::encode(&r).len());
        assert!(binary * 2 <= json, "{binary} bytes against {json} as JSON");
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        checks::damage_is_an_error(&encode(&everything()), decode, status);
    }

    #[test]
    fn a_stored_address_is_checked_on_the_way_out() {
        let wire = Wire {
            id: 1,
            list_id: 1,
            email: Cow::Borrowed("not an address"),
            name: Cow::Borrowed(""),
            timezone: None,
            attributes: Cow::Borrowed(""),
            status_changed: None,
            last_opened_at: None,
            last_clicked_at: None,
            created_at: (0, 0),
            updated_at: (0, 0),
        };
        let bytes = FORM.write(0, &wire);
        assert!(matches!(decode(&bytes), Err(StoreError::Corrupt(_))));
    }
}
