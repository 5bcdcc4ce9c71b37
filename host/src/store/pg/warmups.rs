//! Warm-up counts per transport and UTC day, shared by every node: a take
//! locks the day's row, so two nodes never both get the last of a cap.

use chrono::NaiveDate;

use super::{PgStore, key};
use crate::store::Result;

impl PgStore {
    pub async fn take_warmup(&self, transport: String, day: NaiveDate, cap: u64, want: u64) -> Result<u64> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO warmup_counts (transport, day, sent) VALUES ($1, $2, 0) ON CONFLICT DO NOTHING",
            &[&transport, &day],
        )
        .await?;
        let used: i64 = tx
            .query_one(
                "SELECT sent FROM warmup_counts WHERE transport = $1 AND day = $2 FOR UPDATE",
                &[&transport, &day],
            )
            .await?
            .get(0);
        let granted = want.min(cap.saturating_sub(used.max(0) as u64));
        if granted > 0 {
            tx.execute(
                "UPDATE warmup_counts SET sent = sent + $3 WHERE transport = $1 AND day = $2",
                &[&transport, &day, &key(granted)],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(granted)
    }

    pub async fn give_back_warmup(&self, transport: String, day: NaiveDate, n: u64) -> Result<()> {
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE warmup_counts SET sent = greatest(sent - $3, 0) WHERE transport = $1 AND day = $2",
                &[&transport, &day, &key(n)],
            )
            .await?;
        Ok(())
    }

    pub async fn warmup_used(&self, transport: String, day: NaiveDate) -> Result<u64> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT sent FROM warmup_counts WHERE transport = $1 AND day = $2",
                &[&transport, &day],
            )
            .await?;
        Ok(row.map_or(0, |r| r.get::<_, i64>(0).max(0) as u64))
    }
}
