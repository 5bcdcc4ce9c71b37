//! A user's suppression list: addresses none of the user's campaigns may
//! mail, whichever list they are on. Checked when a campaign creates the
//! address's message, so a suppression made during a send applies to every
//! message not yet created.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::bounce::Bounce;
use super::{Email, FieldError};

/// Why an address is suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionReason {
    Unsubscribed,
    Bounced,
    Complained,
    Manual,
}

impl SuppressionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::Unsubscribed => "unsubscribed",
            SuppressionReason::Bounced => "bounced",
            SuppressionReason::Complained => "complained",
            SuppressionReason::Manual => "manual",
        }
    }
}

impl std::str::FromStr for SuppressionReason {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Self, FieldError> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
            FieldError::new(
                "reason",
                format!("{s:?} is not one of unsubscribed, bounced, complained, manual"),
            )
        })
    }
}

/// A suppressed address as stored and returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Suppression {
    /// Lower case: suppression matches addresses case-insensitively.
    pub email: Email,
    pub reason: SuppressionReason,
    /// Free text: the bounce's diagnostic, who added it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// What storing a suppression over the one stored for its address does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merged {
    Added(Suppression),
    /// Reason or detail changed; the first suppression's time is kept (it
    /// says since when).
    Updated(Suppression),
    Unchanged,
}

impl Suppression {
    /// `new` stored over `old`.
    pub fn merged(old: Option<&Suppression>, new: &Suppression) -> Merged {
        match old {
            None => Merged::Added(new.clone()),
            Some(old) if old.reason != new.reason || old.detail != new.detail => Merged::Updated(Suppression {
                created_at: old.created_at,
                ..new.clone()
            }),
            Some(_) => Merged::Unchanged,
        }
    }

    /// The suppression a bounce causes (its detail: the bounce's type and
    /// diagnostic, at most 1,024 characters).
    pub fn for_bounce(email: &Email, reason: SuppressionReason, bounce: &Bounce, now: DateTime<Utc>) -> Suppression {
        let detail = format!(
            "{} bounce{}",
            bounce.kind.as_str(),
            bounce.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
        );
        Suppression {
            email: email.suppression_key(),
            reason,
            detail: Some(detail.chars().take(1024).collect()),
            created_at: now,
        }
    }
}

/// `POST /suppressions` item.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSuppression {
    pub email: Email,
    /// Defaults to `manual`.
    #[serde(default)]
    pub reason: Option<SuppressionReason>,
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub detail: Option<String>,
}

/// Longest `detail` kept.
const MAX_DETAIL: usize = 1024;

impl NewSuppression {
    /// Checks the detail and turns the address into the key it is stored
    /// under.
    pub fn validate(self, field: &str, now: DateTime<Utc>) -> Result<Suppression, FieldError> {
        let at = |name: &str| {
            if field.is_empty() {
                name.to_string()
            } else {
                format!("{field}.{name}")
            }
        };
        if self.detail.as_ref().is_some_and(|d| d.len() > MAX_DETAIL) {
            return Err(FieldError::new(at("detail"), format!("longer than {MAX_DETAIL} bytes")));
        }
        Ok(Suppression {
            email: self.email.suppression_key(),
            reason: self.reason.unwrap_or(SuppressionReason::Manual),
            detail: self.detail,
            created_at: now,
        })
    }
}

/// The form an address is suppressed under. Local parts are case-sensitive
/// in theory and never in practice; a suppression that a change of case
/// could dodge would not be one.
pub fn normalize(email: &str) -> String {
    email.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_lower_cased_and_details_bounded() {
        let now = Utc::now();
        let s = NewSuppression {
            email: Email::parse("Ann@Example.ORG").unwrap(),
            reason: None,
            detail: None,
        }
        .validate("", now)
        .unwrap();
        assert_eq!(
            (s.email.as_str(), s.reason),
            ("ann@example.org", SuppressionReason::Manual)
        );
        let long = NewSuppression {
            email: Email::parse("a@b.co").unwrap(),
            reason: Some(SuppressionReason::Bounced),
            detail: Some("x".repeat(MAX_DETAIL + 1)),
        }
        .validate("items[3]", now)
        .unwrap_err();
        assert_eq!(long.field, "items[3].detail");
    }

    #[test]
    fn reasons_parse_from_their_names() {
        assert_eq!(
            "complained".parse::<SuppressionReason>().unwrap(),
            SuppressionReason::Complained
        );
        assert!("spam".parse::<SuppressionReason>().is_err());
        for r in [
            SuppressionReason::Unsubscribed,
            SuppressionReason::Bounced,
            SuppressionReason::Complained,
            SuppressionReason::Manual,
        ] {
            assert_eq!(r.as_str().parse::<SuppressionReason>().unwrap(), r);
        }
    }
}
