//! A segment campaign's audience, frozen when its send starts:
//! (campaign, subscriber) → (). The engine walks these instead of the
//! list (`delivery::walk`), so edits to subscribers or to the segment
//! during the send, a pause or a crash never change who is in it.
//!
//! The segment is evaluated from a read snapshot before the send's
//! transaction, and the members are written in small bulk transactions
//! that yield to requests: a million-subscriber list never holds the one
//! writer for the seconds its scan takes. The send's transaction then
//! checks that neither the campaign's segment nor its rules changed
//! meanwhile (`Frozen::check`). Members written for a send that did not
//! start are dead weight only: the next freeze clears them first, and
//! deleting the campaign removes them.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::campaigns::owned;
use super::segments::SEGMENTS;
use super::{CAMPAIGNS, Redb, Result, SUBSCRIBERS, StoreError, decode, subscriber_codec};
use crate::domain::lifecycle::transition;
use crate::domain::segment::{Segment, unknown_campaign};
use crate::domain::{Action, Campaign, CampaignId, FieldError, SegmentId, Status, UserId};

/// (campaign, subscriber) → (): who a segment campaign sends to.
pub(crate) const MEMBERS: TableDefinition<(u64, u64), ()> = TableDefinition::new("campaign_members");

/// Members written per bulk transaction.
const CHUNK: usize = 4_096;

/// Campaigns whose audience is being read now: one freeze per campaign at
/// a time, so two sends racing cannot clear each other's members.
pub(crate) type Freezing = Arc<parking_lot::Mutex<HashSet<u64>>>;

pub(crate) fn create_tables(tx: &WriteTransaction) -> Result<()> {
    tx.open_table(MEMBERS)?;
    Ok(())
}

/// Removes a campaign's members (the campaign is being deleted, or a new
/// freeze starts).
pub(crate) fn drop_members(tx: &WriteTransaction, campaign: CampaignId) -> Result<()> {
    let id = campaign.get();
    tx.open_table(MEMBERS)?
        .retain_in((id, 0)..=(id, u64::MAX), |_, _| false)?;
    Ok(())
}

/// What a freeze read: the send's transaction fixes these as the
/// recipients if the segment is still the one read.
pub(crate) struct Frozen {
    /// Held until the send's transaction is done.
    _turn: FreezeTurn,
    segment: SegmentId,
    updated_at: DateTime<Utc>,
    /// The list's newest subscriber id in the snapshot.
    last: u64,
    count: u64,
}

impl Frozen {
    /// The recipients (`(last subscriber, count)`) for the send starting
    /// in `tx`, if the campaign still names the segment that was read and
    /// its rules are unchanged.
    pub(crate) fn check(&self, tx: &WriteTransaction, c: &Campaign) -> Result<(u64, u64)> {
        let segments = tx.open_table(SEGMENTS)?;
        let unchanged = match segments.get((c.user_id.get(), self.segment.get()))? {
            Some(v) => {
                let s: Segment = decode(v.value())?;
                c.segment_id == Some(self.segment) && s.updated_at == self.updated_at
            }
            None => false,
        };
        if !unchanged {
            return Err(StoreError::Conflict(
                "the campaign's segment changed while its audience was being read; send again".into(),
            ));
        }
        Ok((self.last, self.count))
    }
}

/// Whether `action` starts the send of a campaign that sends to a segment.
fn needs_freeze(c: &Campaign, action: Action) -> bool {
    c.segment_id.is_some()
        && matches!(action, Action::Send { future: false } | Action::Fire)
        && transition(c.status, action).is_ok()
}

impl Redb {
    /// Freezes the audience of campaign `id` if `action` starts its send
    /// and it sends to a segment; `None` when it does not need one.
    pub(crate) fn freeze(
        &self,
        user: UserId,
        id: CampaignId,
        action: impl Fn(&Campaign) -> Action,
    ) -> Result<Option<Frozen>> {
        let tx = self.read()?;
        let c = owned(&tx.open_table(CAMPAIGNS)?, user, id)?;
        if !needs_freeze(&c, action(&c)) {
            return Ok(None);
        }
        let turn = FreezeTurn::take(&self.freezing, id)?;
        let segment_id = c.segment_id.expect("checked");
        let segment: Segment = match tx.open_table(SEGMENTS)?.get((user.get(), segment_id.get()))? {
            Some(v) => decode(v.value())?,
            None => {
                return Err(
                    FieldError::new("segment_id", format!("segment {} no longer exists", segment_id.get())).into(),
                );
            }
        };
        if segment.list_id != c.list_id {
            return Err(FieldError::new("segment_id", "the segment is of another list").into());
        }
        let mut filter = segment.filter()?;
        for (rule, campaign) in filter.needs() {
            match self.engaged(user, campaign) {
                Ok(e) => filter.provide(campaign, e),
                Err(StoreError::NotFound) => return Err(unknown_campaign(rule, campaign).into()),
                Err(e) => return Err(e),
            }
        }
        let list = c.list_id.get();
        let (mut members, mut last) = (Vec::new(), 0);
        for entry in tx.open_table(SUBSCRIBERS)?.range((list, 0)..=(list, u64::MAX))? {
            let (k, v) = entry?;
            last = k.value().1;
            if filter.matches(&subscriber_codec::decode(v.value())?) {
                members.push(last);
            }
        }
        drop(tx);
        self.write_members(id, &members)?;
        Ok(Some(Frozen {
            _turn: turn,
            segment: segment_id,
            updated_at: segment.updated_at,
            last,
            count: members.len() as u64,
        }))
    }

    /// Replaces the campaign's members, a chunk per bulk transaction; each
    /// first checks the campaign has not started meanwhile.
    fn write_members(&self, id: CampaignId, members: &[u64]) -> Result<()> {
        let mut chunks = members.chunks(CHUNK).peekable();
        let mut first = true;
        while first || chunks.peek().is_some() {
            let tx = self.write_bulk()?;
            let c: crate::domain::CampaignRun = super::campaigns::load(&tx.open_table(CAMPAIGNS)?, id)?;
            if !matches!(c.status, Status::Draft | Status::Scheduled) {
                return Err(StoreError::Conflict("the campaign's send started meanwhile".into()));
            }
            if first {
                drop_members(&tx, id)?;
                first = false;
            }
            if let Some(chunk) = chunks.next() {
                let mut table = tx.open_table(MEMBERS)?;
                for &sub in chunk {
                    table.insert((id.get(), sub), ())?;
                }
            }
            tx.commit()?;
        }
        Ok(())
    }
}

/// A campaign's place in `Freezing`, given back on drop.
struct FreezeTurn {
    freezing: Freezing,
    id: u64,
}

impl FreezeTurn {
    fn take(freezing: &Freezing, id: CampaignId) -> Result<Self> {
        if !freezing.lock().insert(id.get()) {
            return Err(StoreError::Conflict(
                "the campaign's send is already starting (its audience is being read)".into(),
            ));
        }
        Ok(FreezeTurn {
            freezing: freezing.clone(),
            id: id.get(),
        })
    }
}

impl Drop for FreezeTurn {
    fn drop(&mut self) {
        self.freezing.lock().remove(&self.id);
    }
}
