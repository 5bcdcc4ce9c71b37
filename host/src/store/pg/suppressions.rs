//! A user's suppression list on PostgreSQL: the same operations and
//! answers as redb's `store::redb::suppressions`. Addresses are ordered by their
//! bytes (`COLLATE "C"`), as redb's keys are, whatever the database's
//! locale.

use std::collections::HashMap;

use tokio_postgres::Transaction;
use tokio_postgres::types::Json;

use super::{PgStore, key, scan_page};
use crate::domain::UserId;
use crate::domain::suppression::{Suppression, SuppressionReason, normalize};
use crate::store::{Result, SCAN_LIMIT, StoreError, SuppressReport, SuppressionPage};

impl PgStore {
    /// Adds or updates suppressions; an address already suppressed keeps
    /// the time it was first suppressed.
    pub async fn suppress(&self, user: UserId, items: Vec<Suppression>) -> Result<SuppressReport> {
        let items = items.as_slice();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut report = SuppressReport::default();
        suppress_in(&tx, user, items, &mut report).await?;
        tx.commit().await?;
        Ok(report)
    }

    /// Removes an address from the list; the next campaign mails it again.
    pub async fn unsuppress(&self, user: UserId, email: String) -> Result<()> {
        let email = email.as_str();
        let client = self.pool.get().await?;
        let gone = client
            .execute(
                "DELETE FROM suppressions WHERE user_id = $1 AND email = $2",
                &[&key(user.get()), &normalize(email)],
            )
            .await?;
        if gone == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    pub async fn suppression(&self, user: UserId, email: String) -> Result<Suppression> {
        let email = email.as_str();
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT record FROM suppressions WHERE user_id = $1 AND email = $2",
                &[&key(user.get()), &normalize(email)],
            )
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(row.get::<_, Json<Suppression>>(0).0)
    }

    /// Suppressions in address order after `after`, optionally of one
    /// reason; like redb's, a reason filter reads at most `SCAN_LIMIT`
    /// entries per page and the cursor is the last one read.
    pub async fn suppressions(
        &self,
        user: UserId,
        reason: Option<SuppressionReason>,
        after: Option<String>,
        limit: usize,
    ) -> Result<SuppressionPage> {
        let after = after.as_deref();
        let client = self.pool.get().await?;
        let start = after.map(normalize).unwrap_or_default();
        let window = if reason.is_some() { SCAN_LIMIT } else { limit };
        let rows = client
            .query(
                r#"SELECT email, record FROM suppressions
                   WHERE user_id = $1 AND email COLLATE "C" > $2
                   ORDER BY email COLLATE "C" LIMIT $3"#,
                &[&key(user.get()), &start, &(window as i64 + 1)],
            )
            .await?;
        let (items, next_after) = scan_page(
            &rows,
            limit,
            |row| row.get::<_, String>(0),
            |row| {
                let s = row.get::<_, Json<Suppression>>(1).0;
                reason.is_none_or(|r| r == s.reason).then_some(s)
            },
        );
        Ok(SuppressionPage { items, next_after })
    }
}

/// Adds or updates suppressions inside a caller's transaction.
pub(super) async fn suppress_in(
    tx: &Transaction<'_>,
    user: UserId,
    items: &[Suppression],
    report: &mut SuppressReport,
) -> Result<()> {
    let emails: Vec<&str> = items.iter().map(|s| s.email.as_str()).collect();
    let rows = tx
        .query(
            "SELECT email, record FROM suppressions WHERE user_id = $1 AND email = ANY($2) FOR UPDATE",
            &[&key(user.get()), &emails],
        )
        .await?;
    let mut known: HashMap<String, Suppression> = rows
        .into_iter()
        .map(|r| (r.get(0), r.get::<_, Json<Suppression>>(1).0))
        .collect();
    let mut changed: Vec<String> = Vec::new();
    for s in items {
        let Some(stored) = report.count(Suppression::merged(known.get(s.email.as_str()), s)) else {
            continue;
        };
        changed.push(stored.email.as_str().to_string());
        known.insert(stored.email.as_str().to_string(), stored);
    }
    changed.sort();
    changed.dedup();
    let records: Vec<Json<&Suppression>> = changed.iter().map(|e| Json(&known[e])).collect();
    tx.execute(
        "INSERT INTO suppressions (user_id, email, record)
         SELECT $1, * FROM unnest($2::text[], $3::jsonb[])
         ON CONFLICT (user_id, email) DO UPDATE SET record = excluded.record",
        &[&key(user.get()), &changed, &records],
    )
    .await?;
    Ok(())
}
