//! Signed unsubscribe links: the token proves the link was issued for this
//! campaign and subscriber, so nobody can unsubscribe others by guessing ids.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::MessageId;

/// Hex of the first 16 bytes of HMAC-SHA256(secret, "campaign.subscriber").
pub fn token(secret: &[u8; 32], message: MessageId) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(format!("{}.{}", message.campaign, message.subscriber).as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

pub fn verify(secret: &[u8; 32], message: MessageId, given: &str) -> bool {
    token(secret, message).as_bytes().ct_eq(given.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CampaignId, SubscriberId};

    fn m(campaign: u64, subscriber: u64) -> MessageId {
        MessageId {
            campaign: CampaignId::new(campaign),
            subscriber: SubscriberId::new(subscriber),
        }
    }

    #[test]
    fn tokens_bind_campaign_and_subscriber() {
        let s = [7u8; 32];
        let t = token(&s, m(1, 2));
        assert_eq!(t.len(), 32);
        assert!(verify(&s, m(1, 2), &t));
        assert!(!verify(&s, m(1, 3), &t));
        assert!(!verify(&s, m(2, 2), &t));
        assert!(!verify(&[8u8; 32], m(1, 2), &t));
        assert!(!verify(&s, m(1, 2), ""));
    }
}
