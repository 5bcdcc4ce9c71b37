//! Accounts: users and the API key format. A key is 32 random bytes shown
//! once; only its SHA-256 is stored, so a leaked database leaks no usable
//! key.

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Email, UserId};

/// An account. API keys belong to users and are stored hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    /// Admins may act on the server itself (plugin reload). The first user
    /// of a database is an admin.
    #[serde(default)]
    pub admin: bool,
    pub created_at: DateTime<Utc>,
}

impl User {
    /// A new user, given how many users the database holds already: the
    /// first one is an admin whatever was asked, so a fresh server always
    /// has someone who can run it.
    pub fn new(id: UserId, email: Email, admin: bool, existing_users: u64, now: DateTime<Utc>) -> User {
        User {
            id,
            email,
            admin: admin || existing_users == 0,
            created_at: now,
        }
    }

    /// Whether `email` names this user (addresses compare without case).
    pub fn has_email(&self, email: &str) -> bool {
        self.email.as_str().eq_ignore_ascii_case(email.trim())
    }
}

/// What every API key starts with: `posta user revoke` tells a key from an
/// email by it.
pub const KEY_PREFIX: &str = "posta_";

/// A new API key.
pub fn new_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

/// What a key is stored and looked up by.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A key's first characters (`posta_1a2b`), shown to tell keys apart.
pub fn key_hint(key: &str) -> String {
    key.chars().take(KEY_PREFIX.len() + 4).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_user_is_an_admin_whatever_was_asked() {
        let email = Email::parse("a@example.org").unwrap();
        let now = Utc::now();
        assert!(User::new(UserId::new(1), email.clone(), false, 0, now).admin);
        assert!(!User::new(UserId::new(2), email.clone(), false, 1, now).admin);
        assert!(User::new(UserId::new(2), email, true, 1, now).admin);
    }

    #[test]
    fn keys_carry_the_prefix_and_a_short_hint() {
        let key = new_key();
        assert!(key.starts_with(KEY_PREFIX) && key.len() == KEY_PREFIX.len() + 64);
        assert_eq!(key_hint(&key).len(), KEY_PREFIX.len() + 4);
        assert_ne!(hash_key(&key), hash_key(&new_key()));
    }
}
