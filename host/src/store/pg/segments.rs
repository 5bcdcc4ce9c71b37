//! Segments on PostgreSQL: the same operations and answers as redb's
//! `store::redb::segments` (the conformance tests run both).

use chrono::{DateTime, Utc};
use tokio_postgres::types::Json;

use super::lists::{owned_list, page};
use super::{PgStore, key};
use crate::domain::segment::{MAX_PER_USER, Segment, SegmentDraft, SegmentPatch};
use crate::domain::{SegmentId, UserId};
use crate::store::{Page, Result, StoreError, segment_in_use};

/// Per-user advisory lock keys for segment creation ("posta_sg" xor user),
/// so that two creations cannot both pass the per-user cap.
const SEGMENT_LOCK: i64 = 0x706f_7374_615f_7367;

impl PgStore {
    pub async fn create_segment(&self, user: UserId, draft: SegmentDraft, now: DateTime<Utc>) -> Result<Segment> {
        // Checked before an id is taken.
        let mut segment = Segment::new(SegmentId::new(0), user, draft, now)?;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        owned_list(&tx, user, segment.list_id, "FOR SHARE").await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&(SEGMENT_LOCK ^ key(user.get()))])
            .await?;
        let count: i64 = tx
            .query_one("SELECT count(*) FROM segments WHERE user_id = $1", &[&key(user.get())])
            .await?
            .get(0);
        if count as usize >= MAX_PER_USER {
            return Err(StoreError::Conflict(format!(
                "at most {MAX_PER_USER} segments per user; delete one first"
            )));
        }
        let id: i64 = tx.query_one("SELECT nextval('segment_ids')", &[]).await?.get(0);
        segment.id = SegmentId::new(id as u64);
        tx.execute(
            "INSERT INTO segments (user_id, id, list_id, record) VALUES ($1, $2, $3, $4)",
            &[&key(user.get()), &id, &key(segment.list_id.get()), &Json(&segment)],
        )
        .await?;
        tx.commit().await?;
        Ok(segment)
    }

    pub async fn segment(&self, user: UserId, id: SegmentId) -> Result<Segment> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT record FROM segments WHERE user_id = $1 AND id = $2",
                &[&key(user.get()), &key(id.get())],
            )
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(row.get::<_, Json<Segment>>(0).0)
    }

    pub async fn segments(&self, user: UserId, after: Option<u64>, limit: usize) -> Result<Page<Segment>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT record FROM segments WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                &[&key(user.get()), &key(after.unwrap_or(0)), &(limit as i64 + 1)],
            )
            .await?;
        Ok(page(
            rows.into_iter().map(|r| r.get::<_, Json<Segment>>(0).0).collect(),
            limit,
            |s| s.id.get(),
        ))
    }

    pub async fn update_segment(
        &self,
        user: UserId,
        id: SegmentId,
        patch: SegmentPatch,
        now: DateTime<Utc>,
    ) -> Result<Segment> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "SELECT record FROM segments WHERE user_id = $1 AND id = $2 FOR UPDATE",
                &[&key(user.get()), &key(id.get())],
            )
            .await?
            .ok_or(StoreError::NotFound)?;
        let segment = row.get::<_, Json<Segment>>(0).0.patched(patch, now)?;
        tx.execute(
            "UPDATE segments SET record = $3 WHERE user_id = $1 AND id = $2",
            &[&key(user.get()), &key(id.get()), &Json(&segment)],
        )
        .await?;
        tx.commit().await?;
        Ok(segment)
    }

    /// Refused while a scheduled campaign will send to it.
    pub async fn delete_segment(&self, user: UserId, id: SegmentId) -> Result<()> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let (user, id) = (key(user.get()), key(id.get()));
        let gone = tx
            .execute("DELETE FROM segments WHERE user_id = $1 AND id = $2", &[&user, &id])
            .await?;
        if gone == 0 {
            return Err(StoreError::NotFound);
        }
        let using = tx
            .query_opt(
                "SELECT id FROM campaigns WHERE user_id = $1 AND status = 'scheduled'
                 AND (run->>'segment_id')::bigint = $2 LIMIT 1",
                &[&user, &id],
            )
            .await?;
        if let Some(row) = using {
            return Err(segment_in_use(row.get::<_, i64>(0) as u64));
        }
        tx.commit().await?;
        Ok(())
    }
}
