//! Opens and clicks: a batch of hits recorded in one bulk transaction
//! (it yields to API writes like the engine's batches), each on its
//! message, its campaign's stats and link counts and its subscriber, by
//! `domain::tracking::record`.

use std::collections::BTreeMap;

use redb::ReadableTable;

use super::campaigns::{load, owned, save};
use super::{CAMPAIGNS, Events, MESSAGES, Redb, Result, SUBSCRIBERS, message_codec, subscriber_codec};
use crate::domain::message::MessageStatus;
use crate::domain::segment::Engaged;
use crate::domain::tracking::{Hit, LinkCount, Links, record};
use crate::domain::{Campaign, CampaignId, CampaignRun, UserId};

impl Redb {
    /// Records `hits`; returns how many counted (the others were
    /// scanners, or for messages or campaigns that are gone).
    pub fn record_hits(&self, hits: Vec<Hit>) -> Result<usize> {
        let mut by_campaign: BTreeMap<CampaignId, Vec<Hit>> = BTreeMap::new();
        for h in hits {
            by_campaign.entry(h.campaign).or_default().push(h);
        }
        let tx = self.write_bulk()?;
        let mut events = Events::new(&tx);
        let mut counted = 0;
        {
            let mut campaigns = tx.open_table(CAMPAIGNS)?;
            let mut messages = tx.open_table(MESSAGES)?;
            let mut subs = tx.open_table(SUBSCRIBERS)?;
            for (id, hits) in by_campaign {
                let mut run: CampaignRun = match load(&campaigns, id) {
                    Ok(run) => run,
                    Err(crate::store::StoreError::NotFound) => continue,
                    Err(e) => return Err(e),
                };
                let links = Links::of_campaign(&run);
                let list = run.list_id.get();
                for hit in hits {
                    let key = (id.get(), hit.subscriber.get());
                    let mut message = match messages.get(key)? {
                        Some(v) => message_codec::decode(v.value())?,
                        None => continue,
                    };
                    let Some(done) = record(&hit, &mut message, &mut run, &links) else {
                        continue;
                    };
                    counted += 1;
                    messages.insert(key, message_codec::encode(&message).as_slice())?;
                    let sub_key = (list, hit.subscriber.get());
                    let sub = subs
                        .get(sub_key)?
                        .map(|v| subscriber_codec::decode(v.value()))
                        .transpose()?;
                    if let Some(mut sub) = sub
                        && sub.engaged(done.opened, done.clicked, hit.at)
                    {
                        subs.insert(sub_key, subscriber_codec::encode(&sub).as_slice())?;
                    }
                    for (kind, data) in done.events {
                        events.emit(run.user_id, kind, hit.at, || data)?;
                    }
                }
                save(&mut campaigns, &run)?;
            }
        }
        let wrote = events.into_written();
        tx.commit()?;
        self.wake_deliverer(wrote);
        Ok(counted)
    }

    /// Who got the owner's campaign `id`, and who opened and clicked it.
    pub fn engaged(&self, user: UserId, id: CampaignId) -> Result<Engaged> {
        let tx = self.read()?;
        owned(&tx.open_table(CAMPAIGNS)?, user, id)?;
        let mut e = Engaged::default();
        for entry in tx.open_table(MESSAGES)?.range((id.get(), 0)..=(id.get(), u64::MAX))? {
            let (k, v) = entry?;
            let sub = k.value().1;
            if message_codec::status(v.value())? != MessageStatus::Sent {
                continue;
            }
            e.received.push(sub);
            if let Some(en) = message_codec::decode(v.value())?.engagement {
                if en.first_opened_at.is_some() {
                    e.opened.push(sub);
                }
                if en.clicks > 0 {
                    e.clicked.push(sub);
                }
            }
        }
        Ok(e)
    }

    /// A campaign with its clicks per link, for its owner.
    pub fn link_clicks(&self, user: UserId, id: CampaignId) -> Result<(Campaign, Vec<LinkCount>)> {
        let tx = self.read()?;
        let run = owned(&tx.open_table(CAMPAIGNS)?, user, id)?;
        Ok((run.campaign, run.link_clicks))
    }
}
