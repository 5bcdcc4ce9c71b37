//! Users and API keys on PostgreSQL: the same operations and answers as
//! redb's `store::redb::accounts` (keys shown once, stored by SHA-256).

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::Transaction;
use tokio_postgres::types::Json;

use super::{PgStore, key};
use crate::domain::account::{KEY_PREFIX, hash_key, key_hint, new_key};
use crate::domain::sender::SenderDomain;
use crate::domain::{Email, KeyId, User, UserId};
use crate::store::{KeyInfo, Page, Result, StoreError};

/// User creation's advisory lock ("posta_us"): the first user becomes the
/// admin, so creations take turns.
const USERS_LOCK: i64 = 0x706f_7374_615f_7573;

impl PgStore {
    pub async fn create_user(&self, email: String) -> Result<(User, String)> {
        self.create_user_as(email, false).await
    }

    /// Like `create_user`; the user is an admin if `admin` or if it is the
    /// first user.
    pub async fn create_user_as(&self, email: String, admin: bool) -> Result<(User, String)> {
        let email = email.as_str();
        let email = Email::parse(email).map_err(|e| e.at("email"))?;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&USERS_LOCK]).await?;
        let row = tx
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE lower(email) = lower($1)) FROM users",
                &[&email.as_str()],
            )
            .await?;
        let (users, same): (i64, i64) = (row.get(0), row.get(1));
        if same > 0 {
            return Err(StoreError::Conflict(format!("a user with email {email} exists")));
        }
        let id: i64 = tx.query_one("SELECT nextval('user_ids')", &[]).await?.get(0);
        let user = User::new(UserId::new(id as u64), email, admin, users as u64, Utc::now());
        tx.execute(
            "INSERT INTO users (id, email, record) VALUES ($1, $2, $3)",
            &[&id, &user.email.as_str(), &Json(&user)],
        )
        .await?;
        let (key, _) = issue(&tx, user.id).await?;
        tx.commit().await?;
        Ok((user, key))
    }

    /// The user owning this key (looked up by the key's hash).
    pub async fn user_by_key(&self, api_key: String) -> Result<Option<User>> {
        let api_key = api_key.as_str();
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT u.record FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.hash = $1",
                &[&hash_key(api_key).as_slice()],
            )
            .await?;
        Ok(row.map(|r| r.get::<_, Json<User>>(0).0))
    }

    /// Issues another API key for the user with this email.
    pub async fn new_key(&self, email: String) -> Result<(User, String)> {
        let email = email.as_str();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let user = user_by_email(&tx, email).await?;
        let (key, _) = issue(&tx, user.id).await?;
        tx.commit().await?;
        Ok((user, key))
    }

    /// Issues another API key for user `user`: the key (shown once) and
    /// its record.
    pub async fn issue_key(&self, user: UserId) -> Result<(String, KeyInfo)> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        self_user(&tx, user).await?;
        let issued = issue(&tx, user).await?;
        tx.commit().await?;
        Ok(issued)
    }

    /// The keys of user `user`, oldest first.
    pub async fn keys(&self, user: UserId) -> Result<Vec<KeyInfo>> {
        let client = self.pool.get().await?;
        self_user(&client, user).await?;
        let rows = client
            .query(
                "SELECT id, hint, created_at FROM api_keys WHERE user_id = $1 ORDER BY id",
                &[&key(user.get())],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| KeyInfo {
                id: KeyId::new(r.get::<_, i64>(0) as u64),
                hint: r.get(1),
                created_at: r.get(2),
            })
            .collect())
    }

    /// Revokes one key of user `user` by its id.
    pub async fn revoke_key(&self, user: UserId, id: KeyId) -> Result<()> {
        let client = self.pool.get().await?;
        let gone = client
            .execute(
                "DELETE FROM api_keys WHERE user_id = $1 AND id = $2",
                &[&key(user.get()), &key(id.get())],
            )
            .await?;
        if gone == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Users by id, a page at a time.
    pub async fn users(&self, after: Option<u64>, limit: usize) -> Result<Page<User>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT record FROM users WHERE id > $1 ORDER BY id LIMIT $2",
                &[&key(after.unwrap_or(0)), &(limit as i64 + 1)],
            )
            .await?;
        let items = rows.into_iter().map(|r| r.get::<_, Json<User>>(0).0).collect();
        Ok(super::lists::page(items, limit, |u: &User| u.id.get()))
    }

    pub async fn user(&self, id: UserId) -> Result<User> {
        self_user(&self.pool.get().await?, id).await
    }

    /// Revokes one key (`posta_…`) or every key of a user (an email);
    /// returns how many keys stopped working.
    pub async fn revoke(&self, key_or_email: String) -> Result<usize> {
        let key_or_email = key_or_email.as_str();
        let client = self.pool.get().await?;
        let gone = if key_or_email.starts_with(KEY_PREFIX) {
            client
                .execute(
                    "DELETE FROM api_keys WHERE hash = $1",
                    &[&hash_key(key_or_email).as_slice()],
                )
                .await?
        } else {
            let user = user_by_email(&client, key_or_email).await?;
            client
                .execute("DELETE FROM api_keys WHERE user_id = $1", &[&key(user.id.get())])
                .await?
        };
        Ok(gone as usize)
    }

    /// Grants `domain` (parsed) to `user`; granting it again keeps the
    /// first grant.
    pub async fn add_domain(&self, user: UserId, domain: String, now: DateTime<Utc>) -> Result<SenderDomain> {
        let domain = domain.as_str();
        let client = self.pool.get().await?;
        self_user(&client, user).await?;
        let row = client
            .query_one(
                "INSERT INTO sender_domains (user_id, domain, added_at) VALUES ($1, $2, $3)
                 ON CONFLICT (user_id, domain) DO UPDATE SET domain = EXCLUDED.domain
                 RETURNING added_at",
                &[&key(user.get()), &domain, &now],
            )
            .await?;
        Ok(SenderDomain {
            domain: domain.to_string(),
            added_at: row.get(0),
        })
    }

    /// Takes `domain` away from `user` (`NotFound` if not granted).
    pub async fn remove_domain(&self, user: UserId, domain: String) -> Result<()> {
        let domain = domain.as_str();
        let client = self.pool.get().await?;
        let gone = client
            .execute(
                "DELETE FROM sender_domains WHERE user_id = $1 AND domain = $2",
                &[&key(user.get()), &domain],
            )
            .await?;
        if gone == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// `user`'s sender domains in name order (`NotFound` for no such user).
    pub async fn domains(&self, user: UserId) -> Result<Vec<SenderDomain>> {
        let client = self.pool.get().await?;
        self_user(&client, user).await?;
        let rows = client
            .query(
                r#"SELECT domain, added_at FROM sender_domains WHERE user_id = $1 ORDER BY domain COLLATE "C""#,
                &[&key(user.get())],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| SenderDomain {
                domain: r.get(0),
                added_at: r.get(1),
            })
            .collect())
    }

    pub async fn user_count(&self) -> Result<u64> {
        let client = self.pool.get().await?;
        let n: i64 = client.query_one("SELECT count(*) FROM users", &[]).await?.get(0);
        Ok(n as u64)
    }
}

async fn self_user(db: &impl GenericClient, id: UserId) -> Result<User> {
    let row = db
        .query_opt("SELECT record FROM users WHERE id = $1", &[&key(id.get())])
        .await?
        .ok_or(StoreError::NotFound)?;
    Ok(row.get::<_, Json<User>>(0).0)
}

async fn user_by_email(db: &impl GenericClient, email: &str) -> Result<User> {
    let row = db
        .query_opt(
            "SELECT record FROM users WHERE lower(email) = lower($1)",
            &[&email.trim()],
        )
        .await?
        .ok_or(StoreError::NotFound)?;
    Ok(row.get::<_, Json<User>>(0).0)
}

/// Makes a key for `user`, stored by its hash.
async fn issue(tx: &Transaction<'_>, user: UserId) -> Result<(String, KeyInfo)> {
    let api_key = new_key();
    let id: i64 = tx.query_one("SELECT nextval('key_ids')", &[]).await?.get(0);
    let info = KeyInfo {
        id: KeyId::new(id as u64),
        hint: key_hint(&api_key),
        created_at: Utc::now(),
    };
    tx.execute(
        "INSERT INTO api_keys (hash, user_id, id, hint, created_at) VALUES ($1, $2, $3, $4, $5)",
        &[
            &hash_key(&api_key).as_slice(),
            &key(user.get()),
            &id,
            &info.hint,
            &info.created_at,
        ],
    )
    .await?;
    Ok((api_key, info))
}
