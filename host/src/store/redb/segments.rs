//! Segments: (user, segment) → Segment. A segment belongs to one of its
//! user's lists and goes when the list goes (`delete_list` calls
//! `drop_of_list` in its transaction).

use chrono::{DateTime, Utc};
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::campaigns::load;
use super::lists::owned_list;
use super::{CAMPAIGNS, LISTS, Page, Redb, Result, StoreError, USER_CAMPAIGNS, decode, encode, next_id, page_records};
use crate::domain::segment::{MAX_PER_USER, Segment, SegmentDraft, SegmentPatch};
use crate::domain::{Campaign, CampaignId, ListId, SegmentId, Status, UserId};

/// (user, segment) → Segment.
pub(crate) const SEGMENTS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("segments");

pub(crate) fn create_tables(tx: &WriteTransaction) -> Result<()> {
    tx.open_table(SEGMENTS)?;
    Ok(())
}

/// Removes the segments of a list being deleted.
pub(crate) fn drop_of_list(tx: &WriteTransaction, user: UserId, list: ListId) -> Result<()> {
    let mut table = tx.open_table(SEGMENTS)?;
    let mut gone = Vec::new();
    for entry in table.range((user.get(), 0)..=(user.get(), u64::MAX))? {
        let (k, v) = entry?;
        let s: Segment = decode(v.value())?;
        if s.list_id == list {
            gone.push(k.value());
        }
    }
    for k in gone {
        table.remove(k)?;
    }
    Ok(())
}

impl Redb {
    pub fn create_segment(&self, user: UserId, draft: SegmentDraft, now: DateTime<Utc>) -> Result<Segment> {
        // Checked before an id is taken.
        let mut segment = Segment::new(SegmentId::new(0), user, draft, now)?;
        let tx = self.write()?;
        owned_list(&tx.open_table(LISTS)?, user, segment.list_id)?;
        {
            let mut table = tx.open_table(SEGMENTS)?;
            if table.range((user.get(), 0)..=(user.get(), u64::MAX))?.count() >= MAX_PER_USER {
                return Err(StoreError::Conflict(format!(
                    "at most {MAX_PER_USER} segments per user; delete one first"
                )));
            }
            segment.id = SegmentId::new(next_id(&tx, "segment")?);
            table.insert((user.get(), segment.id.get()), encode(&segment).as_slice())?;
        }
        tx.commit()?;
        Ok(segment)
    }

    pub fn segment(&self, user: UserId, id: SegmentId) -> Result<Segment> {
        let tx = self.read()?;
        let table = tx.open_table(SEGMENTS)?;
        let v = table.get((user.get(), id.get()))?.ok_or(StoreError::NotFound)?;
        decode(v.value())
    }

    pub fn segments(&self, user: UserId, after: Option<u64>, limit: usize) -> Result<Page<Segment>> {
        let tx = self.read()?;
        page_records(&tx.open_table(SEGMENTS)?, user.get(), after, limit)
    }

    pub fn update_segment(
        &self,
        user: UserId,
        id: SegmentId,
        patch: SegmentPatch,
        now: DateTime<Utc>,
    ) -> Result<Segment> {
        let tx = self.write()?;
        let segment = {
            let mut table = tx.open_table(SEGMENTS)?;
            let current: Segment = {
                let v = table.get((user.get(), id.get()))?.ok_or(StoreError::NotFound)?;
                decode(v.value())?
            };
            let segment = current.patched(patch, now)?;
            table.insert((user.get(), id.get()), encode(&segment).as_slice())?;
            segment
        };
        tx.commit()?;
        Ok(segment)
    }

    /// Refused while a scheduled campaign will send to it.
    pub fn delete_segment(&self, user: UserId, id: SegmentId) -> Result<()> {
        let tx = self.write()?;
        if tx.open_table(SEGMENTS)?.remove((user.get(), id.get()))?.is_none() {
            return Err(StoreError::NotFound);
        }
        {
            let campaigns = tx.open_table(CAMPAIGNS)?;
            for entry in tx
                .open_table(USER_CAMPAIGNS)?
                .range((user.get(), 0)..=(user.get(), u64::MAX))?
            {
                let c: Campaign = load(&campaigns, CampaignId::new(entry?.0.value().1))?;
                if c.status == Status::Scheduled && c.segment_id == Some(id) {
                    return Err(crate::store::segment_in_use(c.id.get()));
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}
