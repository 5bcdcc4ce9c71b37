//! Users and API keys. Keys are 32 random bytes shown once; only their
//! SHA-256 is stored, so a leaked database leaks no usable key.

use chrono::Utc;
use rand::RngCore;
use redb::ReadableTable;
use sha2::{Digest, Sha256};

use super::{API_KEYS, Result, Store, StoreError, USERS, decode, encode, next_id};
use crate::domain::User;

const KEY_PREFIX: &str = "posta_";

pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn new_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

impl Store {
    /// Creates a user and returns it with its first API key.
    pub fn create_user(&self, email: &str) -> Result<(User, String)> {
        self.create_user_as(email, false)
    }

    /// Like `create_user`; the user is an admin if `admin` or if it is the
    /// first user.
    pub fn create_user_as(&self, email: &str, admin: bool) -> Result<(User, String)> {
        crate::domain::validate_email("email", email)?;
        let tx = self.write()?;
        let user = {
            let mut users = tx.open_table(USERS)?;
            for entry in users.iter()? {
                let (_, v) = entry?;
                let existing: User = decode(v.value())?;
                if existing.email.eq_ignore_ascii_case(email) {
                    return Err(StoreError::Conflict(format!("a user with email {email} exists")));
                }
            }
            let first = redb::ReadableTableMetadata::len(&users)? == 0;
            let id = next_id(&tx, "user")?;
            let user = User {
                id,
                admin: admin || first,
                email: email.to_string(),
                created_at: Utc::now(),
            };
            users.insert(id, encode(&user).as_slice())?;
            user
        };
        let key = new_key();
        tx.open_table(API_KEYS)?.insert(hash_key(&key).as_slice(), user.id)?;
        tx.commit()?;
        Ok((user, key))
    }

    /// The user owning this key. The lookup is by hash, so timing reveals
    /// nothing about stored keys.
    pub fn user_by_key(&self, key: &str) -> Result<Option<User>> {
        let tx = self.read()?;
        let Some(id) = tx
            .open_table(API_KEYS)?
            .get(hash_key(key).as_slice())?
            .map(|v| v.value())
        else {
            return Ok(None);
        };
        let users = tx.open_table(USERS)?;
        let Some(user) = users.get(id)? else {
            return Ok(None);
        };
        Ok(Some(decode(user.value())?))
    }

    fn user_by_email(tx: &redb::WriteTransaction, email: &str) -> Result<User> {
        for entry in tx.open_table(USERS)?.iter()? {
            let (_, v) = entry?;
            let user: User = decode(v.value())?;
            if user.email.eq_ignore_ascii_case(email) {
                return Ok(user);
            }
        }
        Err(StoreError::NotFound)
    }

    /// Issues another API key for an existing user.
    pub fn new_key(&self, email: &str) -> Result<(User, String)> {
        let tx = self.write()?;
        let user = Self::user_by_email(&tx, email)?;
        let key = new_key();
        tx.open_table(API_KEYS)?.insert(hash_key(&key).as_slice(), user.id)?;
        tx.commit()?;
        Ok((user, key))
    }

    /// Revokes one key (`posta_…`) or every key of a user (an email).
    /// Returns how many keys stopped working.
    pub fn revoke(&self, key_or_email: &str) -> Result<usize> {
        let tx = self.write()?;
        let revoked = {
            let mut keys = tx.open_table(API_KEYS)?;
            if key_or_email.starts_with(KEY_PREFIX) {
                usize::from(keys.remove(hash_key(key_or_email).as_slice())?.is_some())
            } else {
                let user = Self::user_by_email(&tx, key_or_email)?;
                let before = redb::ReadableTableMetadata::len(&keys)?;
                keys.retain(|_, id| id != user.id)?;
                (before - redb::ReadableTableMetadata::len(&keys)?) as usize
            }
        };
        tx.commit()?;
        Ok(revoked)
    }

    pub fn user_count(&self) -> Result<u64> {
        let tx = self.read()?;
        Ok(redb::ReadableTableMetadata::len(&tx.open_table(USERS)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hashed_and_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let (user, key) = store.create_user("a@example.org").unwrap();
        assert!(key.starts_with(KEY_PREFIX) && key.len() == KEY_PREFIX.len() + 64);
        assert_eq!(store.user_by_key(&key).unwrap(), Some(user));
        assert_eq!(store.user_by_key("posta_nope").unwrap(), None);
        assert!(matches!(
            store.create_user("A@example.org"),
            Err(StoreError::Conflict(_))
        ));
        let raw = std::fs::read(dir.path().join("db")).unwrap();
        assert!(
            !raw.windows(key.len()).any(|w| w == key.as_bytes()),
            "key stored in clear"
        );
    }

    #[test]
    fn revoking_by_key_or_by_user() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let (_, k1) = store.create_user("a@example.org").unwrap();
        let (_, k2) = store.new_key("a@example.org").unwrap();
        let (_, other) = store.create_user("b@example.org").unwrap();
        assert_eq!(store.revoke(&k1).unwrap(), 1);
        assert!(store.user_by_key(&k1).unwrap().is_none());
        assert!(store.user_by_key(&k2).unwrap().is_some());
        assert_eq!(store.revoke(&k1).unwrap(), 0);
        let (_, k3) = store.new_key("A@example.org").unwrap();
        assert_eq!(store.revoke("a@example.org").unwrap(), 2);
        assert!(store.user_by_key(&k2).unwrap().is_none() && store.user_by_key(&k3).unwrap().is_none());
        assert!(
            store.user_by_key(&other).unwrap().is_some(),
            "other users keep their keys"
        );
        assert!(matches!(store.revoke("nobody@example.org"), Err(StoreError::NotFound)));
    }

    #[test]
    fn the_first_user_is_admin() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        assert!(store.create_user("a@example.org").unwrap().0.admin);
        assert!(!store.create_user("b@example.org").unwrap().0.admin);
        assert!(store.create_user_as("c@example.org", true).unwrap().0.admin);
    }
}
