//! Email addresses, parsed once where they enter: an `Email` is always
//! trimmed, has its domain lower-cased and passed the checks below, so
//! nothing downstream validates or normalizes again.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::FieldError;

/// A deliverable-looking address. Deserializing parses, so a JSON body or
/// a stored record cannot hold anything else.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "ann@example.org")]
pub struct Email(String);

/// Why a string is not an `Email`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{given:?} is not a valid email address: {why}")]
pub struct InvalidEmail {
    given: String,
    why: &'static str,
}

impl InvalidEmail {
    /// The error as a 422 naming `field`.
    pub fn at(self, field: impl Into<String>) -> FieldError {
        FieldError::new(field, self.to_string())
    }
}

impl Email {
    /// Trims, lower-cases the domain (local parts are case-sensitive by RFC
    /// 5321, though rarely in practice) and checks: one `@`, a non-empty
    /// local part, a dotted domain, no whitespace or control characters.
    /// Full RFC 5322 syntax accepts addresses no MTA will route; this is
    /// deliberately the subset mail senders accept in practice.
    pub fn parse(s: &str) -> Result<Email, InvalidEmail> {
        let bad = |why| {
            Err(InvalidEmail {
                given: s.chars().take(300).collect(),
                why,
            })
        };
        let s = s.trim();
        if s.len() > 254 {
            return bad("longer than 254 characters");
        }
        if s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"'))
        {
            return bad("contains whitespace or a forbidden character");
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return bad("missing @");
        };
        if local.is_empty() || local.len() > 64 || local.contains('@') {
            return bad("bad local part");
        }
        if domain.is_empty()
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains("..")
            || domain
                .split('.')
                .any(|l| l.is_empty() || l.starts_with('-') || l.ends_with('-'))
        {
            return bad("bad domain");
        }
        Ok(Email(format!("{local}@{}", domain.to_ascii_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, d)| d)
    }

    /// The form a suppression matches: all lower case. A suppression that
    /// a change of case could dodge would not be one.
    pub fn suppression_key(&self) -> Email {
        Email(self.0.to_lowercase())
    }
}

impl TryFrom<String> for Email {
    type Error = InvalidEmail;

    fn try_from(s: String) -> Result<Email, InvalidEmail> {
        Email::parse(&s)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> String {
        e.0
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalizes() {
        for ok in ["a@b.co", "first.last+tag@example.org", "x@sub.domain.example"] {
            assert_eq!(Email::parse(ok).unwrap().as_str(), ok);
        }
        let e = Email::parse(" Ann@Example.ORG ").unwrap();
        assert_eq!(e.as_str(), "Ann@example.org", "the local part keeps its case");
        assert_eq!(e.domain(), "example.org");
        assert_eq!(e.suppression_key().as_str(), "ann@example.org");
        for bad in [
            "",
            "plain",
            "@b.co",
            "a@",
            "a@b",
            "a@.b",
            "a@b.",
            "a b@c.de",
            "a@b..c",
            "<a@b.co>",
            "a@-b.co",
            "a@b\u{7}.co",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Email::parse("nope").unwrap_err().at("email").field, "email");
    }

    #[test]
    fn deserializing_parses() {
        let e: Email = serde_json::from_str("\" a@Example.org\"").unwrap();
        assert_eq!(serde_json::to_string(&e).unwrap(), "\"a@example.org\"");
        let err = serde_json::from_str::<Email>("\"nope\"").unwrap_err();
        assert!(err.to_string().contains("not a valid email address"), "{err}");
    }
}
