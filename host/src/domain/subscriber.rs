//! Lists and subscribers.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Email, FieldError, ListId, SubscriberId, UserId, validate_len};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct List {
    pub id: ListId,
    pub user_id: UserId,
    pub name: String,
    pub subscriber_count: u64,
    pub created_at: DateTime<Utc>,
}

impl List {
    /// A new, empty list named `name` (trimmed; at most 256 characters as
    /// sent, the documented maxLength, and not blank).
    pub fn new(id: ListId, user_id: UserId, name: &str, now: DateTime<Utc>) -> Result<List, FieldError> {
        validate_len("name", name, 256)?;
        let name = name.trim();
        if name.is_empty() {
            return Err(FieldError::new("name", "must not be empty"));
        }
        Ok(List {
            id,
            user_id,
            name: name.to_string(),
            subscriber_count: 0,
            created_at: now,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SubscriberStatus {
    #[default]
    Subscribed,
    Unsubscribed,
    Bounced,
}

impl SubscriberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriberStatus::Subscribed => "subscribed",
            SubscriberStatus::Unsubscribed => "unsubscribed",
            SubscriberStatus::Bounced => "bounced",
        }
    }

    pub fn parse(s: &str) -> Option<SubscriberStatus> {
        match s.trim().to_ascii_lowercase().as_str() {
            "subscribed" => Some(SubscriberStatus::Subscribed),
            "unsubscribed" => Some(SubscriberStatus::Unsubscribed),
            "bounced" => Some(SubscriberStatus::Bounced),
            _ => None,
        }
    }

    /// The status an import (upsert by email) leaves: it may unsubscribe
    /// or mark a bounce, but never brings back someone who left or
    /// bounced. Re-importing a list must not re-subscribe people who
    /// unsubscribed (CAN-SPAM, GDPR).
    pub fn after_import(self, requested: SubscriberStatus) -> SubscriberStatus {
        match (self, requested) {
            (SubscriberStatus::Subscribed, r) => r,
            (kept, SubscriberStatus::Subscribed) => kept,
            (_, r) => r,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Subscriber {
    pub id: SubscriberId,
    pub list_id: ListId,
    pub email: Email,
    pub name: String,
    /// IANA timezone name, e.g. `Europe/Paris`.
    pub timezone: Option<String>,
    /// Free-form attributes, available to templates as `subscriber.attributes`.
    #[schema(value_type = Object)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
    pub status: SubscriberStatus,
    /// When and how `status` last changed after creation: `api` (PATCH),
    /// `unsubscribe_link` or `import` (an import may unsubscribe or mark a
    /// bounce, never re-subscribe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_changed: Option<StatusChange>,
    /// Their latest open (or click) of a tracked campaign; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_opened_at: Option<DateTime<Utc>>,
    /// Their latest click of a tracked link; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_clicked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Subscriber {
    /// Moves `last_opened_at` / `last_clicked_at` to `at` for what a
    /// tracked hit recorded (never back: hits of one batch come in any
    /// order). Says whether anything changed.
    pub fn engaged(&mut self, opened: bool, clicked: bool, at: DateTime<Utc>) -> bool {
        let mut changed = false;
        for (yes, field) in [(opened, &mut self.last_opened_at), (clicked, &mut self.last_clicked_at)] {
            if yes && field.is_none_or(|t| t < at) {
                *field = Some(at);
                changed = true;
            }
        }
        changed
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatusChange {
    pub from: SubscriberStatus,
    pub by: String,
    pub at: DateTime<Utc>,
}

impl Subscriber {
    /// A new subscriber `id` of `list_id` as an import brings them.
    pub fn imported(id: SubscriberId, list_id: ListId, new: NewSubscriber, now: DateTime<Utc>) -> Subscriber {
        Subscriber {
            id,
            list_id,
            email: new.email,
            name: new.name,
            timezone: new.timezone,
            attributes: new.attributes,
            status: new.status,
            status_changed: None,
            last_opened_at: None,
            last_clicked_at: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// This subscriber imported again: the import's fields replace theirs,
    /// but an import never re-subscribes someone who left or bounced. Says
    /// whether the status the import asked for was kept back.
    pub fn reimported(&self, new: NewSubscriber, now: DateTime<Utc>) -> (Subscriber, bool) {
        let status = self.status.after_import(new.status);
        let mut sub = Subscriber {
            name: new.name,
            timezone: new.timezone,
            attributes: new.attributes,
            updated_at: now,
            ..self.clone()
        };
        sub.set_status(status, "import", now);
        (sub, status != new.status)
    }

    /// Sets `status`, recording the change when there is one.
    pub fn set_status(&mut self, status: SubscriberStatus, by: &str, at: DateTime<Utc>) {
        if status != self.status {
            self.status_changed = Some(StatusChange {
                from: self.status,
                by: by.to_string(),
                at,
            });
            self.status = status;
        }
    }
}

/// `PATCH /lists/{id}/subscribers/{sid}`: the fields to change. Setting
/// `status` is the one way back to `subscribed` for someone who left or
/// bounced (imports never do that).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriberPatch {
    pub name: Option<String>,
    /// An IANA name; `""` clears it.
    pub timezone: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<serde_json::Map<String, serde_json::Value>>,
    pub status: Option<SubscriberStatus>,
}

impl SubscriberPatch {
    /// The subscriber with the patch applied and validated as an import
    /// would validate it.
    pub fn apply(self, old: &Subscriber, now: DateTime<Utc>) -> Result<Subscriber, FieldError> {
        let checked = NewSubscriber {
            email: old.email.clone(),
            name: self.name.unwrap_or_else(|| old.name.clone()),
            timezone: self.timezone.or_else(|| old.timezone.clone()),
            attributes: self.attributes.unwrap_or_else(|| old.attributes.clone()),
            status: old.status,
        }
        .validate("")?;
        let mut new = Subscriber {
            name: checked.name,
            timezone: checked.timezone,
            attributes: checked.attributes,
            updated_at: now,
            ..old.clone()
        };
        if let Some(status) = self.status {
            new.set_status(status, "api", now);
        }
        Ok(new)
    }
}

/// A subscriber as the API receives it; upserted by email within a list.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSubscriber {
    pub email: Email,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub status: SubscriberStatus,
}

pub const MAX_NAME: usize = 256;
pub const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;

impl NewSubscriber {
    /// Validates and normalizes the other fields (the email was parsed on
    /// the way in); `field` is the JSON path prefix used in errors, e.g.
    /// `subscribers[3]`.
    pub fn validate(mut self, field: &str) -> Result<NewSubscriber, FieldError> {
        let f = |name: &str| {
            if field.is_empty() {
                name.to_string()
            } else {
                format!("{field}.{name}")
            }
        };
        self.name = self.name.trim().to_string();
        validate_len(&f("name"), &self.name, MAX_NAME)?;
        if let Some(tz) = self.timezone.as_deref().map(str::trim) {
            if tz.is_empty() {
                self.timezone = None;
            } else {
                let parsed: chrono_tz::Tz = tz.parse().map_err(|_| {
                    FieldError::new(
                        f("timezone"),
                        format!("unknown timezone {tz:?} (use an IANA name such as Europe/Paris)"),
                    )
                })?;
                self.timezone = Some(parsed.name().to_string());
            }
        }
        let size = serde_json::to_vec(&self.attributes)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > MAX_ATTRIBUTES_BYTES {
            return Err(FieldError::new(
                f("attributes"),
                format!("larger than {MAX_ATTRIBUTES_BYTES} bytes"),
            ));
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_import_never_resubscribes() {
        use SubscriberStatus::*;
        for old in [Subscribed, Unsubscribed, Bounced] {
            for new in [Subscribed, Unsubscribed, Bounced] {
                let after = old.after_import(new);
                if old != Subscribed {
                    assert_ne!(after, Subscribed, "{old:?} + {new:?}");
                }
                if new != Subscribed {
                    assert_eq!(after, new, "an import may still unsubscribe or bounce");
                }
            }
        }
        assert_eq!(Subscribed.after_import(Subscribed), Subscribed);
    }

    fn sub(email: &str, tz: Option<&str>) -> NewSubscriber {
        NewSubscriber {
            email: Email::parse(email).unwrap(),
            name: " Ann ".into(),
            timezone: tz.map(Into::into),
            attributes: Default::default(),
            status: SubscriberStatus::Subscribed,
        }
    }

    #[test]
    fn normalizes_and_validates() {
        let s = sub(" Ann@Example.ORG ", Some("Asia/Kathmandu")).validate("").unwrap();
        assert_eq!(s.email.as_str(), "Ann@example.org");
        assert_eq!(s.name, "Ann");
        assert_eq!(s.timezone.as_deref(), Some("Asia/Kathmandu"));
        assert_eq!(sub("a@b.co", Some(" ")).validate("").unwrap().timezone, None);
    }

    #[test]
    fn unknown_timezone_names_the_field() {
        let err = sub("a@b.co", Some("Mars/Olympus"))
            .validate("subscribers[2]")
            .unwrap_err();
        assert_eq!(err.field, "subscribers[2].timezone");
        assert!(err.message.contains("Mars/Olympus"));
    }
}
