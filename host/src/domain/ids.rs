//! Typed ids. Every record is keyed by a `u64`, and with bare integers a
//! campaign id passed where a subscriber id belongs compiles and reads the
//! wrong row (`messages(user, campaign, …)` took four of them in a row).
//! Each kind gets its own type; the store converts to the `u64` its tables
//! are keyed by (the on-disk key types stay `u64`, so databases written
//! before these types existed open unchanged), and the wire form is the bare
//! number.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! ids {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(transparent)]
        pub struct $name(u64);

        impl $name {
            pub const fn new(raw: u64) -> Self {
                Self(raw)
            }

            /// The number the store keys this record by.
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map(Self)
            }
        }
    )*};
}

ids! {
    /// A user (account) id.
    UserId;
    /// A list id, unique across users.
    ListId;
    /// A subscriber id, unique across lists.
    SubscriberId;
    /// A campaign id, unique across users.
    CampaignId;
    /// A webhook id, unique across users.
    WebhookId;
    /// An API key id, unique across users.
    KeyId;
    /// One event's delivery to one webhook, unique across webhooks.
    DeliveryId;
    /// A segment id, unique across users.
    SegmentId;
}

/// One campaign's message to one subscriber: the key of the message record,
/// and what a Posta Message-ID header names (`posta.CAMPAIGN.SUBSCRIBER@domain`),
/// so a bounce or complaint finds its message again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId {
    pub campaign: CampaignId,
    pub subscriber: SubscriberId,
}

impl MessageId {
    /// The Message-ID header value, stable across retries, restarts and
    /// resumes: it doubles as the transports' idempotency key.
    pub fn header(self, domain: &str) -> String {
        format!("posta.{}.{}@{domain}", self.campaign, self.subscriber)
    }

    /// Reads a Message-ID header this server wrote, with or without angle
    /// brackets; `None` for any other.
    pub fn parse_header(s: &str) -> Option<MessageId> {
        let s = s.trim().trim_start_matches('<').trim_end_matches('>');
        let (local, _) = s.split_once('@')?;
        let mut parts = local.split('.');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("posta"), Some(c), Some(s), None) => Some(MessageId {
                campaign: c.parse().ok()?,
                subscriber: s.parse().ok()?,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_bare_numbers_on_the_wire() {
        let id = CampaignId::new(42);
        assert_eq!(serde_json::to_string(&id).unwrap(), "42");
        assert_eq!(serde_json::from_str::<CampaignId>("42").unwrap(), id);
        assert!(serde_json::from_str::<CampaignId>("-1").is_err());
        assert_eq!("42".parse::<CampaignId>().unwrap(), id);
        assert_eq!(id.to_string(), "42");
    }

    #[test]
    fn message_id_headers_round_trip() {
        let m = MessageId {
            campaign: CampaignId::new(3),
            subscriber: SubscriberId::new(42),
        };
        assert_eq!(m.header("example.org"), "posta.3.42@example.org");
        assert_eq!(MessageId::parse_header("<posta.3.42@example.org>"), Some(m));
        assert_eq!(MessageId::parse_header(" posta.3.42@example.org "), Some(m));
        for bad in [
            "",
            "posta.3@x",
            "posta.3.x@y",
            "other.3.4@y",
            "posta.3.4.5@y",
            "posta.3.4",
            "posta.-3.4@y",
        ] {
            assert_eq!(MessageId::parse_header(bad), None, "{bad}");
        }
    }
}
