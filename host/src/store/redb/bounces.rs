//! Bounces and complaints: kept per address (the soft-bounce window counts
//! them), marked on their message and its campaign's stats, and turned
//! into suppressions by the policy, all in one transaction.

use chrono::{DateTime, Utc};
use redb::ReadableTable;

use super::campaigns::{owned, save};
use super::suppressions::suppress_in;
use super::{
    BOUNCES, CAMPAIGNS, Events, MESSAGES, REPORTS, Redb, Result, SOFT_WINDOWS, SUPPRESSIONS, StoreError, decode,
    encode, message_codec, next_id,
};
use crate::domain::bounce::{Bounce, BouncePolicy, BounceType, REPORT_CHUNK, SoftWindow};
use crate::domain::suppression::{Suppression, SuppressionReason, normalize};
use crate::domain::webhook::{EventKind, bounce_data};
use crate::domain::{MessageId, UserId};
use crate::store::{BouncePage, BounceReport, SuppressReport};
use redb::WriteTransaction;

/// Stores a bounce under its address and applies the policy: returns the
/// soft bounces in the window (soft only) and the suppression it caused.
pub(super) fn file_bounce(
    tx: &WriteTransaction,
    user_id: UserId,
    bounce: &Bounce,
    policy: &BouncePolicy,
    now: DateTime<Utc>,
) -> Result<(Option<u64>, Option<SuppressionReason>)> {
    let mut bounces = tx.open_table(BOUNCES)?;
    let user = user_id.get();
    let id = next_id(tx, "bounce")?;
    bounces.insert((user, bounce.email.as_str(), id), encode(bounce).as_slice())?;
    let soft_in_window = if bounce.kind == BounceType::Soft {
        let mut windows = tx.open_table(SOFT_WINDOWS)?;
        let key = (user, bounce.email.as_str());
        let stored = windows.get(key)?.map(|v| decode::<SoftWindow>(v.value())).transpose()?;
        let mut window = match stored {
            Some(w) => w,
            // First soft bounce since windows were kept: start from the
            // address's history (this bounce is in it already).
            None => {
                let mut history = Vec::new();
                for entry in bounces.range((user, bounce.email.as_str(), 0)..(user, bounce.email.as_str(), id))? {
                    history.push(decode::<Bounce>(entry?.1.value())?);
                }
                SoftWindow::from_history(&history, policy)
            }
        };
        let n = window.add(bounce.at, policy, now);
        windows.insert(key, encode(&window).as_slice())?;
        Some(n)
    } else {
        None
    };
    let suppression = policy.assess(bounce, soft_in_window, now);
    let suppressed = suppression.as_ref().map(|s| s.reason);
    if let Some(s) = suppression {
        let mut table = tx.open_table(SUPPRESSIONS)?;
        suppress_in(&mut table, user_id, &[s], &mut SuppressReport::default())?;
    }
    Ok((soft_in_window, suppressed))
}

/// Records one bounce in `tx` (see `Redb::record_bounce`).
fn bounce_in(
    tx: &WriteTransaction,
    events: &mut Events<'_>,
    user_id: UserId,
    mut bounce: Bounce,
    message: Option<MessageId>,
    policy: &BouncePolicy,
    now: DateTime<Utc>,
) -> Result<BounceReport> {
    if let Some(m) = message {
        let mut campaigns = tx.open_table(CAMPAIGNS)?;
        let mut c = owned(&campaigns, user_id, m.campaign)?;
        let mut messages = tx.open_table(MESSAGES)?;
        let key = (m.campaign.get(), m.subscriber.get());
        let mut record = match messages.get(key)? {
            Some(v) => message_codec::decode(v.value())?,
            None => return Err(StoreError::NotFound),
        };
        if !bounce.attach(&mut record, &mut c.stats, now) {
            let suppressed = suppression_of(tx, user_id, &bounce.email)?;
            return Ok(BounceReport {
                bounce,
                duplicate: true,
                soft_in_window: None,
                suppressed,
            });
        }
        messages.insert(key, message_codec::encode(&record).as_slice())?;
        save(&mut campaigns, &c)?;
    }
    bounce.email = normalize(&bounce.email);
    let (soft_in_window, suppressed) = file_bounce(tx, user_id, &bounce, policy, now)?;
    events.emit(user_id, EventKind::MessageBounced, now, || {
        bounce_data(&bounce, message)
    })?;
    Ok(BounceReport {
        bounce,
        duplicate: false,
        soft_in_window,
        suppressed,
    })
}

fn suppression_of(tx: &WriteTransaction, user_id: UserId, email: &str) -> Result<Option<SuppressionReason>> {
    Ok(tx
        .open_table(SUPPRESSIONS)?
        .get((user_id.get(), email))?
        .map(|v| decode::<Suppression>(v.value()))
        .transpose()?
        .map(|s| s.reason))
}

impl Redb {
    /// The user's bounces by address (then in the order they came), after
    /// `after`.
    pub fn bounces(&self, user_id: UserId, after: Option<(String, u64)>, limit: usize) -> Result<BouncePage> {
        let after = after.as_ref().map(|(email, id)| (email.as_str(), *id));
        let tx = self.read()?;
        let table = tx.open_table(BOUNCES)?;
        let user = user_id.get();
        let (email, id) = after.map_or(("", 0), |(e, id)| (e, id.saturating_add(1)));
        let mut items = Vec::new();
        let mut last = None;
        for entry in table.range((user, email, id)..(user.saturating_add(1), "", 0))? {
            if items.len() == limit {
                return Ok(BouncePage {
                    items,
                    next_after: last,
                });
            }
            let (k, v) = entry?;
            let (_, email, id) = k.value();
            last = Some((email.to_string(), id));
            items.push(decode(v.value())?);
        }
        Ok(BouncePage {
            items,
            next_after: None,
        })
    }

    /// Records a bounce for `user_id`. With `message` (campaign,
    /// subscriber) the bounce belongs to that message, which must be the
    /// user's (else `NotFound`), and its address is the message's.
    pub fn record_bounce(
        &self,
        user_id: UserId,
        bounce: Bounce,
        message: Option<MessageId>,
        policy: BouncePolicy,
        now: DateTime<Utc>,
    ) -> Result<BounceReport> {
        let policy = &policy;
        let tx = self.write()?;
        let mut events = Events::new(&tx);
        let report = bounce_in(&tx, &mut events, user_id, bounce, message, policy, now)?;
        let wrote = events.into_written();
        if !report.duplicate {
            tx.commit()?;
            self.wake_deliverer(wrote);
        }
        Ok(report)
    }

    /// Records the bounces one report (DSN or ARF) names, `REPORT_CHUNK`
    /// at a time, so a long report never holds the writer for long; the
    /// report's Message-ID is stored with the last chunk. A report read
    /// before changes nothing: its bounces come back marked `duplicate`.
    /// (Cut short by a crash, a report posted again records its bounces
    /// again: those on a message count once, as always.)
    pub fn record_report(
        &self,
        user_id: UserId,
        report_id: Option<String>,
        bounces: Vec<(Bounce, Option<MessageId>)>,
        policy: BouncePolicy,
        now: DateTime<Utc>,
    ) -> Result<Vec<BounceReport>> {
        let policy = &policy;
        let report_id = report_id.as_deref();
        let seen = match report_id {
            Some(id) => self.read()?.open_table(REPORTS)?.get((user_id.get(), id))?.is_some(),
            None => false,
        };
        if seen {
            let tx = self.read()?;
            let table = tx.open_table(SUPPRESSIONS)?;
            let mut out = Vec::with_capacity(bounces.len());
            for (mut bounce, _) in bounces {
                bounce.email = normalize(&bounce.email);
                let suppressed = table
                    .get((user_id.get(), bounce.email.as_str()))?
                    .map(|v| decode::<Suppression>(v.value()))
                    .transpose()?
                    .map(|s| s.reason);
                out.push(BounceReport {
                    bounce,
                    duplicate: true,
                    soft_in_window: None,
                    suppressed,
                });
            }
            return Ok(out);
        }
        let mut out = Vec::with_capacity(bounces.len());
        let mut rest = bounces.into_iter().peekable();
        loop {
            let tx = self.write()?;
            let mut events = Events::new(&tx);
            for (bounce, message) in rest.by_ref().take(REPORT_CHUNK) {
                out.push(bounce_in(&tx, &mut events, user_id, bounce, message, policy, now)?);
            }
            let last = rest.peek().is_none();
            if last && let Some(id) = report_id {
                tx.open_table(REPORTS)?.insert((user_id.get(), id), now.timestamp())?;
            }
            let wrote = events.into_written();
            tx.commit()?;
            self.wake_deliverer(wrote);
            if last {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    #[test]
    fn soft_bounces_outside_the_window_do_not_count() {
        let (_dir, store) = crate::store::redb::temp_store();
        let (user, _) = store.create_user("a@example.org".into()).unwrap();
        let policy = BouncePolicy::default();
        let now = Utc::now();
        let soft = |at: DateTime<Utc>| Bounce {
            email: "x@example.org".into(),
            kind: BounceType::Soft,
            reason: None,
            message_id: None,
            at,
        };
        for days_ago in [45, 40] {
            let at = now - Duration::days(days_ago);
            store.record_bounce(user.id, soft(at), None, policy, at).unwrap();
        }
        let r = store.record_bounce(user.id, soft(now), None, policy, now).unwrap();
        assert_eq!((r.soft_in_window, r.suppressed), (Some(1), None), "{r:?}");
        let r = store.record_bounce(user.id, soft(now), None, policy, now).unwrap();
        let r2 = store.record_bounce(user.id, soft(now), None, policy, now).unwrap();
        assert_eq!((r.soft_in_window, r2.soft_in_window), (Some(2), Some(3)));
        assert_eq!(r2.suppressed, Some(SuppressionReason::Bounced));
        assert!(store.suppression(user.id, "X@example.org".into()).is_ok());
    }
}
