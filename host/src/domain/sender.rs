//! Sender domains: the domains each user may send mail from. A campaign's
//! `from_email` must be on one of its user's domains, so no tenant can put
//! another's domain in From — and, since the host DKIM-signs only mail
//! from the address its campaign names, none can have it signed with
//! another's key. An admin grants domains (API, CLI).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::FieldError;

/// A domain granted to a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SenderDomain {
    /// Lower-case, without a trailing dot (`example.org`).
    pub domain: String,
    pub added_at: DateTime<Utc>,
}

/// A domain as given by an admin, in the form it is stored and compared
/// in: lower-case ASCII (IDNs in their `xn--` form), no trailing dot, at
/// least two labels of letters, digits and inner hyphens.
pub fn parse_domain(raw: &str) -> Result<String, FieldError> {
    let d = normalize(raw);
    let bad = |why: &str| {
        Err(FieldError::new(
            "domain",
            format!("{raw:?} is not a domain name: {why}"),
        ))
    };
    if d.is_empty() || d.len() > 253 {
        return bad("empty or longer than 253 characters");
    }
    let labels: Vec<&str> = d.split('.').collect();
    if labels.len() < 2 {
        return bad("it needs at least two labels (example.org)");
    }
    for l in labels {
        if l.is_empty() || l.len() > 63 {
            return bad("a label is empty or longer than 63 characters");
        }
        if !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') || l.starts_with('-') || l.ends_with('-') {
            return bad("labels are letters, digits and inner hyphens (IDNs in their xn-- form)");
        }
    }
    Ok(d)
}

/// One spelling of a domain: trimmed, lower case, no trailing dot.
fn normalize(domain: &str) -> String {
    domain.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The domain of an address, in the form `parse_domain` stores.
pub fn domain_of(address: &str) -> String {
    address.rsplit_once('@').map(|(_, d)| normalize(d)).unwrap_or_default()
}

/// Whether `from_email` is on one of `domains`; the error names the field
/// and says how to fix it.
pub fn check_from(from_email: &str, domains: &[SenderDomain]) -> Result<(), FieldError> {
    let domain = domain_of(from_email);
    if domains.iter().any(|d| d.domain == domain) {
        return Ok(());
    }
    let yours = if domains.is_empty() {
        "you have none yet".to_string()
    } else {
        let names: Vec<&str> = domains.iter().map(|d| d.domain.as_str()).collect();
        format!("yours: {}", names.join(", "))
    };
    Err(FieldError::new(
        "from_email",
        format!(
            "{domain} is not one of your sender domains ({yours}); an admin adds them with \
             POST /api/v1/admin/users/{{id}}/domains or `posta user domain EMAIL DOMAIN`"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_parsed_to_one_form() {
        assert_eq!(parse_domain(" Example.ORG. ").unwrap(), "example.org");
        assert_eq!(parse_domain("xn--bcher-kva.example").unwrap(), "xn--bcher-kva.example");
        for bad in [
            "",
            "localhost",
            "a..b",
            "-a.org",
            "a-.org",
            "ex ample.org",
            "bü.org",
            "a@b.org",
        ] {
            assert!(parse_domain(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn from_must_be_on_a_granted_domain() {
        let granted = [SenderDomain {
            domain: "example.org".into(),
            added_at: Utc::now(),
        }];
        assert!(check_from("news@Example.org", &granted).is_ok());
        assert!(check_from("news@example.org.", &granted).is_ok());
        let e = check_from("ceo@bank.example", &granted).unwrap_err();
        assert_eq!(e.field, "from_email");
        assert!(
            e.message.contains("bank.example") && e.message.contains("yours: example.org"),
            "{}",
            e.message
        );
        // A subdomain is another domain: grant it explicitly.
        assert!(check_from("news@mail.example.org", &granted).is_err());
        assert!(
            check_from("news@example.org", &[])
                .unwrap_err()
                .message
                .contains("none yet")
        );
    }
}
