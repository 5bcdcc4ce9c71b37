//! Signed unsubscribe links: the token proves the link was issued for this
//! campaign and subscriber, so nobody can unsubscribe others by guessing ids.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Hex of the first 16 bytes of HMAC-SHA256(secret, "campaign.subscriber").
pub fn token(secret: &[u8; 32], campaign: u64, subscriber: u64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(format!("{campaign}.{subscriber}").as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

pub fn verify(secret: &[u8; 32], campaign: u64, subscriber: u64, given: &str) -> bool {
    token(secret, campaign, subscriber)
        .as_bytes()
        .ct_eq(given.as_bytes())
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_bind_campaign_and_subscriber() {
        let s = [7u8; 32];
        let t = token(&s, 1, 2);
        assert_eq!(t.len(), 32);
        assert!(verify(&s, 1, 2, &t));
        assert!(!verify(&s, 1, 3, &t));
        assert!(!verify(&s, 2, 2, &t));
        assert!(!verify(&[8u8; 32], 1, 2, &t));
        assert!(!verify(&s, 1, 2, ""));
    }
}
