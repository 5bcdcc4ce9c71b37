//! Users and API keys. Keys are 32 random bytes shown once; only their
//! SHA-256 is stored, so a leaked database leaks no usable key.

use chrono::{DateTime, Utc};
use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{
    API_KEYS, KeyInfo, Page, Redb, Result, SENDER_DOMAINS, StoreError, USER_KEYS, USERS, decode, encode, next_id,
};
use crate::domain::account::{KEY_PREFIX, hash_key, key_hint, new_key};
use crate::domain::sender::SenderDomain;
use crate::domain::{Email, KeyId, User, UserId};

/// A key as stored in the user's key index.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyRecord {
    id: KeyId,
    hint: String,
    created_at: DateTime<Utc>,
    /// SHA-256 of the key, hex: what `api_keys` is keyed by.
    hash: String,
}

impl From<KeyRecord> for KeyInfo {
    fn from(r: KeyRecord) -> KeyInfo {
        KeyInfo {
            id: r.id,
            hint: r.hint,
            created_at: r.created_at,
        }
    }
}

impl Redb {
    /// Creates a user and returns it with its first API key.
    pub fn create_user(&self, email: String) -> Result<(User, String)> {
        self.create_user_as(email, false)
    }

    /// Like `create_user`; the user is an admin if `admin` or if it is the
    /// first user.
    pub fn create_user_as(&self, email: String, admin: bool) -> Result<(User, String)> {
        let email = email.as_str();
        let email = Email::parse(email).map_err(|e| e.at("email"))?;
        let tx = self.write()?;
        let user = {
            let mut users = tx.open_table(USERS)?;
            for entry in users.iter()? {
                let (_, v) = entry?;
                let existing: User = decode(v.value())?;
                if existing.has_email(email.as_str()) {
                    return Err(StoreError::Conflict(format!("a user with email {email} exists")));
                }
            }
            let existing = redb::ReadableTableMetadata::len(&users)?;
            let id = UserId::new(next_id(&tx, "user")?);
            let user = User::new(id, email, admin, existing, Utc::now());
            users.insert(id.get(), encode(&user).as_slice())?;
            user
        };
        let (key, _) = issue(&tx, user.id)?;
        tx.commit()?;
        Ok((user, key))
    }

    /// The user owning this key. The lookup is by hash, so timing reveals
    /// nothing about stored keys.
    pub fn user_by_key(&self, key: String) -> Result<Option<User>> {
        let key = key.as_str();
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
            if user.has_email(email) {
                return Ok(user);
            }
        }
        Err(StoreError::NotFound)
    }

    /// Issues another API key for an existing user.
    pub fn new_key(&self, email: String) -> Result<(User, String)> {
        let email = email.as_str();
        let tx = self.write()?;
        let user = Self::user_by_email(&tx, email)?;
        let (key, _) = issue(&tx, user.id)?;
        tx.commit()?;
        Ok((user, key))
    }

    /// Issues another API key for user `user_id`: the key (shown once) and
    /// its record.
    pub fn issue_key(&self, user_id: UserId) -> Result<(String, KeyInfo)> {
        let tx = self.write()?;
        if tx.open_table(USERS)?.get(user_id.get())?.is_none() {
            return Err(StoreError::NotFound);
        }
        let issued = issue(&tx, user_id)?;
        tx.commit()?;
        Ok(issued)
    }

    /// The keys of user `user_id`, oldest first.
    pub fn keys(&self, user_id: UserId) -> Result<Vec<KeyInfo>> {
        let tx = self.read()?;
        let user_id = user_id.get();
        if tx.open_table(USERS)?.get(user_id)?.is_none() {
            return Err(StoreError::NotFound);
        }
        let table = tx.open_table(USER_KEYS)?;
        let mut out = Vec::new();
        for entry in table.range((user_id, 0)..=(user_id, u64::MAX))? {
            let (_, v) = entry?;
            out.push(decode::<KeyRecord>(v.value())?.into());
        }
        Ok(out)
    }

    /// Revokes one key of user `user_id` by its id.
    pub fn revoke_key(&self, user_id: UserId, key_id: KeyId) -> Result<()> {
        let tx = self.write()?;
        {
            let mut index = tx.open_table(USER_KEYS)?;
            let info: KeyRecord = match index.remove((user_id.get(), key_id.get()))? {
                Some(v) => decode(v.value())?,
                None => return Err(StoreError::NotFound),
            };
            let hash = hex::decode(&info.hash).map_err(|e| StoreError::Db(format!("key record: {e}")))?;
            tx.open_table(API_KEYS)?.remove(hash.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Users by id, a page at a time.
    pub fn users(&self, after: Option<u64>, limit: usize) -> Result<Page<User>> {
        let tx = self.read()?;
        let table = tx.open_table(USERS)?;
        let start = after.map_or(0, |a| a.saturating_add(1));
        let mut items = Vec::with_capacity(limit.min(1000));
        let mut more = false;
        for entry in table.range(start..)? {
            let (_, v) = entry?;
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(decode::<User>(v.value())?);
        }
        let next_after = if more { items.last().map(|u| u.id.get()) } else { None };
        Ok(Page { items, next_after })
    }

    pub fn user(&self, id: UserId) -> Result<User> {
        let tx = self.read()?;
        let users = tx.open_table(USERS)?;
        let v = users.get(id.get())?.ok_or(StoreError::NotFound)?;
        decode(v.value())
    }

    /// Revokes one key (`posta_…`) or every key of a user (an email).
    /// Returns how many keys stopped working.
    pub fn revoke(&self, key_or_email: String) -> Result<usize> {
        let key_or_email = key_or_email.as_str();
        let tx = self.write()?;
        let revoked = {
            let mut keys = tx.open_table(API_KEYS)?;
            let mut index = tx.open_table(USER_KEYS)?;
            if key_or_email.starts_with(KEY_PREFIX) {
                let hash = hash_key(key_or_email);
                let Some(user_id) = keys.remove(hash.as_slice())?.map(|v| v.value()) else {
                    return Ok(0);
                };
                let hash = hex::encode(hash);
                index.retain_in((user_id, 0)..=(user_id, u64::MAX), |_, v| {
                    decode::<KeyRecord>(v).map(|k| k.hash != hash).unwrap_or(true)
                })?;
                1
            } else {
                let user = Self::user_by_email(&tx, key_or_email)?;
                let before = keys.len()?;
                let user_id = user.id.get();
                keys.retain(|_, id| id != user_id)?;
                index.retain_in((user_id, 0)..=(user_id, u64::MAX), |_, _| false)?;
                (before - keys.len()?) as usize
            }
        };
        tx.commit()?;
        Ok(revoked)
    }

    /// Grants `domain` (already parsed, `domain::sender::parse_domain`)
    /// to user `user_id`; granting it again keeps the first grant.
    pub fn add_domain(&self, user_id: UserId, domain: String, now: DateTime<Utc>) -> Result<SenderDomain> {
        let domain = domain.as_str();
        let tx = self.write()?;
        if tx.open_table(USERS)?.get(user_id.get())?.is_none() {
            return Err(StoreError::NotFound);
        }
        let granted = {
            let mut table = tx.open_table(SENDER_DOMAINS)?;
            let existing = table.get((user_id.get(), domain))?.map(|v| v.value());
            match existing {
                Some(at) => at,
                None => {
                    table.insert((user_id.get(), domain), now.timestamp())?;
                    now.timestamp()
                }
            }
        };
        tx.commit()?;
        Ok(sender_domain(domain, granted))
    }

    /// Takes `domain` away from user `user_id` (`NotFound` if not granted).
    pub fn remove_domain(&self, user_id: UserId, domain: String) -> Result<()> {
        let domain = domain.as_str();
        let tx = self.write()?;
        if tx
            .open_table(SENDER_DOMAINS)?
            .remove((user_id.get(), domain))?
            .is_none()
        {
            return Err(StoreError::NotFound);
        }
        tx.commit()?;
        Ok(())
    }

    /// User `user_id`'s sender domains in name order (`NotFound` for no
    /// such user).
    pub fn domains(&self, user_id: UserId) -> Result<Vec<SenderDomain>> {
        let tx = self.read()?;
        if tx.open_table(USERS)?.get(user_id.get())?.is_none() {
            return Err(StoreError::NotFound);
        }
        let user = user_id.get();
        let mut out = Vec::new();
        for entry in tx
            .open_table(SENDER_DOMAINS)?
            .range((user, "")..(user.saturating_add(1), ""))?
        {
            let (k, v) = entry?;
            out.push(sender_domain(k.value().1, v.value()));
        }
        Ok(out)
    }

    pub fn user_count(&self) -> Result<u64> {
        let tx = self.read()?;
        Ok(tx.open_table(USERS)?.len()?)
    }
}

fn sender_domain(domain: &str, granted: i64) -> SenderDomain {
    SenderDomain {
        domain: domain.to_string(),
        added_at: DateTime::from_timestamp(granted, 0).unwrap_or_default(),
    }
}

/// Makes a key for `user_id`, stored by hash and in the user's key index.
fn issue(tx: &WriteTransaction, user_id: UserId) -> Result<(String, KeyInfo)> {
    let key = new_key();
    let hash = hash_key(&key);
    tx.open_table(API_KEYS)?.insert(hash.as_slice(), user_id.get())?;
    let record = KeyRecord {
        id: KeyId::new(next_id(tx, "key")?),
        hint: key_hint(&key),
        created_at: Utc::now(),
        hash: hex::encode(hash),
    };
    tx.open_table(USER_KEYS)?
        .insert((user_id.get(), record.id.get()), encode(&record).as_slice())?;
    Ok((key, record.into()))
}

/// Gives keys issued before the key index existed an entry in it (once:
/// when the index is empty and keys exist). Their hint is unknown.
pub(super) fn index_keys(tx: &WriteTransaction) -> Result<()> {
    let mut index = tx.open_table(USER_KEYS)?;
    let keys = tx.open_table(API_KEYS)?;
    if index.len()? > 0 || keys.len()? == 0 {
        return Ok(());
    }
    let mut ids = Vec::new();
    for entry in keys.iter()? {
        let (hash, user) = entry?;
        ids.push((hash.value().to_vec(), user.value()));
    }
    for (hash, user_id) in ids {
        let info = KeyRecord {
            id: KeyId::new(next_id(tx, "key")?),
            hint: KEY_PREFIX.to_string(),
            created_at: Utc::now(),
            hash: hex::encode(hash),
        };
        index.insert((user_id, info.id.get()), encode(&info).as_slice())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hashed_and_resolve() {
        let (dir, store) = crate::store::redb::temp_store();
        let (user, key) = store.create_user("a@example.org".into()).unwrap();
        assert!(key.starts_with(KEY_PREFIX) && key.len() == KEY_PREFIX.len() + 64);
        assert_eq!(store.user_by_key(key.clone()).unwrap(), Some(user));
        assert_eq!(store.user_by_key("posta_nope".into()).unwrap(), None);
        assert!(matches!(
            store.create_user("A@example.org".into()),
            Err(StoreError::Conflict(_))
        ));
        let raw = std::fs::read(dir.path().join("posta.redb")).unwrap();
        assert!(
            !raw.windows(key.len()).any(|w| w == key.as_bytes()),
            "key stored in clear"
        );
    }

    #[test]
    fn revoking_by_key_or_by_user() {
        let (_dir, store) = crate::store::redb::temp_store();
        let (_, k1) = store.create_user("a@example.org".into()).unwrap();
        let (_, k2) = store.new_key("a@example.org".into()).unwrap();
        let (_, other) = store.create_user("b@example.org".into()).unwrap();
        assert_eq!(store.revoke(k1.clone()).unwrap(), 1);
        assert!(store.user_by_key(k1.clone()).unwrap().is_none());
        assert!(store.user_by_key(k2.clone()).unwrap().is_some());
        assert_eq!(store.revoke(k1.clone()).unwrap(), 0);
        let (_, k3) = store.new_key("A@example.org".into()).unwrap();
        assert_eq!(store.revoke("a@example.org".into()).unwrap(), 2);
        assert!(store.user_by_key(k2.clone()).unwrap().is_none() && store.user_by_key(k3.clone()).unwrap().is_none());
        assert!(
            store.user_by_key(other.clone()).unwrap().is_some(),
            "other users keep their keys"
        );
        assert!(matches!(
            store.revoke("nobody@example.org".into()),
            Err(StoreError::NotFound)
        ));
    }

    #[test]
    fn the_first_user_is_admin() {
        let (_dir, store) = crate::store::redb::temp_store();
        assert!(store.create_user("a@example.org".into()).unwrap().0.admin);
        assert!(!store.create_user("b@example.org".into()).unwrap().0.admin);
        assert!(store.create_user_as("c@example.org".into(), true).unwrap().0.admin);
    }

    #[test]
    fn keys_from_before_the_index_are_listed_and_revocable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let (user, key) = {
            let store = Redb::open(&path).unwrap();
            let (user, key) = store.create_user("a@example.org".into()).unwrap();
            // As a database written before the key index existed.
            let tx = store.write().unwrap();
            tx.open_table(USER_KEYS).unwrap().retain(|_, _| false).unwrap();
            tx.commit().unwrap();
            (user, key)
        };
        let store = Redb::open(&path).unwrap();
        let keys = store.keys(user.id).unwrap();
        assert_eq!(keys.len(), 1);
        store.revoke_key(user.id, keys[0].id).unwrap();
        assert_eq!(store.user_by_key(key.clone()).unwrap(), None);
        // Revoking by the key itself also drops its index entry.
        let (_, again) = store.new_key("a@example.org".into()).unwrap();
        assert_eq!(store.revoke(again.clone()).unwrap(), 1);
        assert!(store.keys(user.id).unwrap().is_empty());
    }
}
