//! Campaign records and their lifecycle transitions.

use chrono::{DateTime, Utc};
use redb::ReadableTable;
use serde::de::DeserializeOwned;

use super::members::{Frozen, drop_members};
use super::{
    CAMPAIGNS, Events, IN_FLIGHT, LISTS, MESSAGES, Page, Redb, Result, SUBSCRIBERS, StoreError, USER_CAMPAIGNS, decode,
    encode, next_id,
};
use crate::domain::campaign::audience_list;
use crate::domain::lifecycle::transition;
use crate::domain::webhook::campaign_data;
use crate::domain::{
    Action, Campaign, CampaignDraft, CampaignId, CampaignPatch, CampaignRun, List, ListId, Status, UserId,
};

/// A campaign record as `T`: a `Campaign` as the API shows it (its send's
/// progress left unread), or a `CampaignRun` to change and `save`.
pub(crate) fn load<T: DeserializeOwned>(table: &impl ReadableTable<u64, &'static [u8]>, id: CampaignId) -> Result<T> {
    match table.get(id.get())? {
        Some(v) => decode(v.value()),
        None => Err(StoreError::NotFound),
    }
}

/// A run, for the campaign's owner only: another user's id is as unknown
/// as a missing one.
pub(crate) fn owned(
    table: &impl ReadableTable<u64, &'static [u8]>,
    user_id: UserId,
    id: CampaignId,
) -> Result<CampaignRun> {
    let c: CampaignRun = load(table, id)?;
    if c.user_id != user_id {
        return Err(StoreError::NotFound);
    }
    Ok(c)
}

/// Writes the whole record. It takes a run, never a bare campaign, so a
/// change to the campaign cannot drop its progress.
pub(crate) fn save(table: &mut redb::Table<u64, &'static [u8]>, c: &CampaignRun) -> Result<()> {
    table.insert(c.id.get(), encode(c).as_slice())?;
    Ok(())
}

fn check_list(tx: &redb::WriteTransaction, user_id: UserId, list_id: ListId) -> Result<List> {
    let lists = tx.open_table(LISTS)?;
    let list: Option<List> = lists.get(list_id.get())?.map(|v| decode(v.value())).transpose()?;
    match list {
        Some(l) if l.user_id == user_id => Ok(l),
        _ => Err(crate::domain::FieldError::new("list_id", format!("list {list_id} does not exist")).into()),
    }
}

impl Redb {
    /// Stores a new draft; `build` receives the allocated id.
    pub fn create_campaign(
        &self,
        user_id: UserId,
        draft: CampaignDraft,
        transport: String,
        now: DateTime<Utc>,
    ) -> Result<Campaign> {
        let tx = self.write()?;
        check_list(&tx, user_id, audience_list(draft.list_id, None)?)?;
        let id = CampaignId::new(next_id(&tx, "campaign")?);
        let c = Campaign::from_draft(id, user_id, draft, transport, now);
        c.validate()?;
        save(&mut tx.open_table(CAMPAIGNS)?, &CampaignRun::from(c.clone()))?;
        tx.open_table(USER_CAMPAIGNS)?.insert((user_id.get(), id.get()), ())?;
        tx.commit()?;
        Ok(c)
    }

    /// A campaign whoever owns it: for the engine, never for the API.
    pub fn campaign_by_id(&self, id: CampaignId) -> Result<Campaign> {
        let tx = self.read()?;
        load(&tx.open_table(CAMPAIGNS)?, id)
    }

    pub fn campaign(&self, user_id: UserId, id: CampaignId) -> Result<Campaign> {
        let tx = self.read()?;
        owned(&tx.open_table(CAMPAIGNS)?, user_id, id).map(|run| run.campaign)
    }

    pub fn campaigns(
        &self,
        user_id: UserId,
        status: Option<Status>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Page<Campaign>> {
        let tx = self.read()?;
        let index = tx.open_table(USER_CAMPAIGNS)?;
        let table = tx.open_table(CAMPAIGNS)?;
        let start = after.map(|a| a.saturating_add(1)).unwrap_or(0);
        let mut items = Vec::new();
        let mut more = false;
        for entry in index.range((user_id.get(), start)..=(user_id.get(), u64::MAX))? {
            let id = CampaignId::new(entry?.0.value().1);
            let c: Campaign = load(&table, id)?;
            if status.is_some_and(|s| s != c.status) {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(c);
        }
        let next_after = if more {
            items.last().map(|c: &Campaign| c.id.get())
        } else {
            None
        };
        Ok(Page { items, next_after })
    }

    /// Applies a lifecycle action in one transaction. Pause, resume and
    /// cancel change only the campaign record and its events, after every
    /// check, so they ride the next commit (group commit,
    /// `Redb::write_riding`); the others have a commit of their own.
    pub fn act(&self, user_id: UserId, id: CampaignId, action: Action, now: DateTime<Utc>) -> Result<Campaign> {
        if matches!(action, Action::Pause | Action::Resume | Action::Cancel) {
            let (c, wrote) = self.write_riding(move |tx| apply(tx, user_id, id, |_| action, now, None, |_| {}))?;
            self.wake_deliverer(wrote);
            return Ok(c);
        }
        let frozen = self.freeze(user_id, id, |_| action)?;
        self.act_as(user_id, id, |_| action, now, frozen, |_| {})
    }

    /// PATCH of a draft: the edit applied, validated and saved.
    pub fn edit_campaign(
        &self,
        user_id: UserId,
        id: CampaignId,
        patch: CampaignPatch,
        now: DateTime<Utc>,
    ) -> Result<Campaign> {
        self.act_as(user_id, id, |_| Action::Edit, now, None, |c| c.apply(patch))
    }

    /// `act` with the action decided from the stored campaign.
    fn act_as(
        &self,
        user_id: UserId,
        id: CampaignId,
        action: impl FnOnce(&Campaign) -> Action,
        now: DateTime<Utc>,
        frozen: Option<Frozen>,
        f: impl FnOnce(&mut Campaign),
    ) -> Result<Campaign> {
        let tx = self.write()?;
        let (c, wrote) = apply(&tx, user_id, id, action, now, frozen.as_ref(), f)?;
        tx.commit()?;
        self.wake_deliverer(wrote);
        Ok(c)
    }

    /// POST …/send: draft → scheduled when the campaign's start (for
    /// local-time sending, when UTC+14 reaches the time) lies ahead of `now`,
    /// else draft → sending with the recipients fixed.
    pub fn send(&self, user_id: UserId, id: CampaignId, now: DateTime<Utc>) -> Result<Campaign> {
        let frozen = self.freeze(user_id, id, |c| c.send_action(now))?;
        self.act_as(user_id, id, |c| c.send_action(now), now, frozen, |_| {})
    }

    /// The recipients a send starting in the caller's transaction gets:
    /// the list's highest subscriber id now, and its count.
    fn recipients(tx: &redb::WriteTransaction, list: &List) -> Result<(u64, u64)> {
        let subs = tx.open_table(SUBSCRIBERS)?;
        let last = subs
            .range((list.id.get(), 0)..=(list.id.get(), u64::MAX))?
            .next_back()
            .transpose()?
            .map(|(k, _)| k.value().1)
            .unwrap_or(0);
        Ok((last, list.subscriber_count))
    }

    pub fn duplicate_campaign(&self, user_id: UserId, id: CampaignId, now: DateTime<Utc>) -> Result<Campaign> {
        let tx = self.write()?;
        let copy = {
            let mut table = tx.open_table(CAMPAIGNS)?;
            let c = owned(&table, user_id, id)?;
            transition(c.status, Action::Duplicate)?;
            let copy = c.duplicate(CampaignId::new(next_id(&tx, "campaign")?), now);
            save(&mut table, &CampaignRun::from(copy.clone()))?;
            tx.open_table(USER_CAMPAIGNS)?
                .insert((user_id.get(), copy.id.get()), ())?;
            copy
        };
        tx.commit()?;
        Ok(copy)
    }

    /// Deletes a campaign and all its messages.
    pub fn delete_campaign(&self, user_id: UserId, id: CampaignId) -> Result<()> {
        let tx = self.write()?;
        {
            let mut table = tx.open_table(CAMPAIGNS)?;
            let c = owned(&table, user_id, id)?;
            transition(c.status, Action::Delete)?;
            let id = id.get();
            table.remove(id)?;
            tx.open_table(super::DELETED_CAMPAIGNS)?.insert(id, c.list_id.get())?;
            tx.open_table(USER_CAMPAIGNS)?.remove((user_id.get(), id))?;
            tx.open_table(MESSAGES)?
                .retain_in((id, 0)..=(id, u64::MAX), |_, _| false)?;
            tx.open_table(IN_FLIGHT)?
                .retain_in((id, 0)..=(id, u64::MAX), |_, _| false)?;
            tx.open_table(super::DEFERRED)?
                .retain_in((id, 0)..=(id, u64::MAX), |_, _| false)?;
            tx.open_table(super::DUE)?
                .retain_in((id, 0, 0)..=(id, u64::MAX, u64::MAX), |_, _| false)?;
        }
        drop_members(&tx, id)?;
        tx.commit()?;
        Ok(())
    }

    /// Campaigns the engine must drive (`CampaignRun::needs_driving`),
    /// across all users.
    pub fn active_campaigns(&self) -> Result<Vec<Campaign>> {
        let tx = self.read()?;
        let table = tx.open_table(CAMPAIGNS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, v) = entry?;
            let c: CampaignRun = decode(v.value())?;
            if c.needs_driving() {
                out.push(c.campaign);
            }
        }
        Ok(out)
    }
}

/// A lifecycle action inside `tx`; returns the campaign and whether events
/// were written. Sending (send, or a schedule firing) fixes the recipients:
/// the list's, or the members `frozen` read for a segment's campaign.
/// Everything is read and checked before the first write.
fn apply(
    tx: &redb::WriteTransaction,
    user_id: UserId,
    id: CampaignId,
    action: impl FnOnce(&Campaign) -> Action,
    now: DateTime<Utc>,
    frozen: Option<&Frozen>,
    f: impl FnOnce(&mut Campaign),
) -> Result<(Campaign, bool)> {
    let mut events = Events::new(tx);
    let c = {
        let mut table = tx.open_table(CAMPAIGNS)?;
        let mut c = owned(&table, user_id, id)?;
        let change = c.begin(action(&c), f)?;
        let list = check_list(tx, user_id, c.list_id)?;
        let recipients = match (change.fixes_recipients(), frozen) {
            (false, _) => None,
            (true, Some(frozen)) => Some(frozen.check(tx, &c)?),
            (true, None) if c.segment_id.is_some() => {
                return Err(StoreError::Conflict(
                    "the campaign's segment changed while its send was starting; send again".into(),
                ));
            }
            (true, None) => Some(Redb::recipients(tx, &list)?),
        };
        let event = c.finish(change, recipients, now)?;
        save(&mut table, &c)?;
        if let Some(kind) = event {
            events.emit(user_id, kind, now, || campaign_data(&c))?;
        }
        c.campaign
    };
    Ok((c, events.into_written()))
}
