//! Bounces and complaints on PostgreSQL: the same operations and answers
//! as redb's `store::redb::bounces` — kept per address (the soft-bounce window
//! counts them), marked on their message and its campaign's stats, and
//! turned into suppressions by the policy, all in one transaction.

use chrono::{DateTime, Utc};
use tokio_postgres::Transaction;
use tokio_postgres::types::Json;

use super::campaigns::{lock_campaign, save_campaign};
use super::suppressions::suppress_in;
use super::webhooks::Events;
use super::{PgStore, key};
use crate::domain::bounce::{Bounce, BouncePolicy, BounceType, REPORT_CHUNK, SoftWindow};
use crate::domain::message::MessageRecord;
use crate::domain::suppression::{Suppression, SuppressionReason, normalize};
use crate::domain::webhook::{EventKind, bounce_data};
use crate::domain::{MessageId, UserId};
use crate::store::{BouncePage, BounceReport, Result, StoreError, SuppressReport};

impl PgStore {
    /// The user's bounces by address (then in the order they came), after
    /// `after`.
    pub async fn bounces(&self, user: UserId, after: Option<(String, u64)>, limit: usize) -> Result<BouncePage> {
        let after = after.as_ref().map(|(email, id)| (email.as_str(), *id));
        let client = self.pool.get().await?;
        let (email, id) = after.map_or(("", 0), |(e, id)| (e, id as i64));
        let rows = client
            .query(
                r#"SELECT email, id, record FROM bounces
                   WHERE user_id = $1 AND (email COLLATE "C", id) > ($2, $3)
                   ORDER BY email COLLATE "C", id LIMIT $4"#,
                &[&key(user.get()), &email, &id, &(limit as i64 + 1)],
            )
            .await?;
        let more = rows.len() > limit;
        let rows = &rows[..rows.len().min(limit)];
        let items = rows.iter().map(|r| r.get::<_, Json<Bounce>>(2).0).collect();
        let next_after = more
            .then(|| rows.last().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64)))
            .flatten();
        Ok(BouncePage { items, next_after })
    }

    /// Records a bounce for `user`. With `message` the bounce belongs to
    /// that message, which must be the user's (else `NotFound`), and its
    /// address is the message's.
    pub async fn record_bounce(
        &self,
        user: UserId,
        bounce: Bounce,
        message: Option<MessageId>,
        policy: BouncePolicy,
        now: DateTime<Utc>,
    ) -> Result<BounceReport> {
        let policy = &policy;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let report = bounce_in(&tx, &mut Events::default(), user, bounce, message, policy, now).await?;
        if !report.duplicate {
            tx.commit().await?;
        }
        Ok(report)
    }

    /// Records the bounces one report (DSN or ARF) names, `REPORT_CHUNK`
    /// per transaction as redb does, the report's Message-ID with the
    /// last; a report read before changes nothing and its bounces come
    /// back marked `duplicate`.
    pub async fn record_report(
        &self,
        user: UserId,
        report_id: Option<String>,
        bounces: Vec<(Bounce, Option<MessageId>)>,
        policy: BouncePolicy,
        now: DateTime<Utc>,
    ) -> Result<Vec<BounceReport>> {
        let policy = &policy;
        let report_id = report_id.as_deref();
        let mut client = self.pool.get().await?;
        if let Some(id) = report_id {
            let seen = client
                .execute(
                    "UPDATE reports SET read_at = $3 WHERE user_id = $1 AND id = $2",
                    &[&key(user.get()), &id, &now],
                )
                .await?
                > 0;
            if seen {
                let tx = client.transaction().await?;
                let mut out = Vec::with_capacity(bounces.len());
                for (mut bounce, _) in bounces {
                    bounce.email = normalize(&bounce.email);
                    let suppressed = suppression_of(&tx, user, &bounce.email).await?;
                    out.push(BounceReport {
                        bounce,
                        duplicate: true,
                        soft_in_window: None,
                        suppressed,
                    });
                }
                tx.commit().await?;
                return Ok(out);
            }
        }
        let mut out = Vec::with_capacity(bounces.len());
        let mut rest = bounces.into_iter().peekable();
        loop {
            let tx = client.transaction().await?;
            let mut events = Events::default();
            for (bounce, message) in rest.by_ref().take(REPORT_CHUNK) {
                out.push(bounce_in(&tx, &mut events, user, bounce, message, policy, now).await?);
            }
            let last = rest.peek().is_none();
            if last && let Some(id) = report_id {
                tx.execute(
                    "INSERT INTO reports (user_id, id, read_at) VALUES ($1, $2, $3)
                     ON CONFLICT (user_id, id) DO UPDATE SET read_at = EXCLUDED.read_at",
                    &[&key(user.get()), &id, &now],
                )
                .await?;
            }
            tx.commit().await?;
            if last {
                return Ok(out);
            }
        }
    }
}

/// Records one bounce in `tx` (see `record_bounce`).
async fn bounce_in(
    tx: &Transaction<'_>,
    events: &mut Events,
    user: UserId,
    mut bounce: Bounce,
    message: Option<MessageId>,
    policy: &BouncePolicy,
    now: DateTime<Utc>,
) -> Result<BounceReport> {
    if let Some(m) = message {
        let mut c = match lock_campaign(tx, m.campaign).await {
            Ok(c) if c.user_id == user => c,
            Ok(_) | Err(StoreError::NotFound) => return Err(StoreError::NotFound),
            Err(e) => return Err(e),
        };
        let row = tx
            .query_opt(
                "SELECT record FROM messages WHERE campaign_id = $1 AND subscriber_id = $2 FOR UPDATE",
                &[&key(m.campaign.get()), &key(m.subscriber.get())],
            )
            .await?
            .ok_or(StoreError::NotFound)?;
        let mut record = row.get::<_, Json<MessageRecord>>(0).0;
        if !bounce.attach(&mut record, &mut c.stats, now) {
            let suppressed = suppression_of(tx, user, &bounce.email).await?;
            return Ok(BounceReport {
                bounce,
                duplicate: true,
                soft_in_window: None,
                suppressed,
            });
        }
        tx.execute(
            "UPDATE messages SET record = $3 WHERE campaign_id = $1 AND subscriber_id = $2",
            &[&key(m.campaign.get()), &key(m.subscriber.get()), &Json(&record)],
        )
        .await?;
        save_campaign(tx, &c).await?;
    }
    bounce.email = normalize(&bounce.email);
    let (soft_in_window, suppressed) = file_bounce(tx, user, &bounce, policy, now).await?;
    events
        .emit(tx, user, EventKind::MessageBounced, now, || {
            bounce_data(&bounce, message)
        })
        .await?;
    Ok(BounceReport {
        bounce,
        duplicate: false,
        soft_in_window,
        suppressed,
    })
}

async fn suppression_of(tx: &Transaction<'_>, user: UserId, email: &str) -> Result<Option<SuppressionReason>> {
    let row = tx
        .query_opt(
            "SELECT record FROM suppressions WHERE user_id = $1 AND email = $2",
            &[&key(user.get()), &email],
        )
        .await?;
    Ok(row.map(|r| r.get::<_, Json<Suppression>>(0).0.reason))
}

/// Stores a bounce under its address and applies the policy, in the
/// caller's transaction: the soft bounces in the window (soft only) and the
/// suppression it caused.
pub(super) async fn file_bounce(
    tx: &Transaction<'_>,
    user: UserId,
    bounce: &Bounce,
    policy: &BouncePolicy,
    now: DateTime<Utc>,
) -> Result<(Option<u64>, Option<SuppressionReason>)> {
    let soft_in_window = if bounce.kind == BounceType::Soft {
        Some(count_soft(tx, user, bounce, policy, now).await?)
    } else {
        None
    };
    tx.execute(
        "INSERT INTO bounces (user_id, email, record) VALUES ($1, $2, $3)",
        &[&key(user.get()), &bounce.email, &Json(bounce)],
    )
    .await?;
    let suppression = policy.assess(bounce, soft_in_window, now);
    let suppressed = suppression.as_ref().map(|s| s.reason);
    if let Some(s) = suppression {
        suppress_in(tx, user, &[s], &mut SuppressReport::default()).await?;
    }
    Ok((soft_in_window, suppressed))
}

/// Adds a soft bounce to its address's window (made from the address's
/// history the first time) and returns the count in the window. The
/// window's row is locked first, so two reports on one address count in
/// turn.
async fn count_soft(
    tx: &Transaction<'_>,
    user: UserId,
    bounce: &Bounce,
    policy: &BouncePolicy,
    now: DateTime<Utc>,
) -> Result<u64> {
    tx.execute(
        "INSERT INTO soft_windows (user_id, email, record) VALUES ($1, $2, NULL) ON CONFLICT DO NOTHING",
        &[&key(user.get()), &bounce.email],
    )
    .await?;
    let row = tx
        .query_one(
            "SELECT record FROM soft_windows WHERE user_id = $1 AND email = $2 FOR UPDATE",
            &[&key(user.get()), &bounce.email],
        )
        .await?;
    let mut window = match row.get::<_, Option<Json<SoftWindow>>>(0) {
        Some(Json(w)) => w,
        None => {
            let history: Vec<Bounce> = tx
                .query(
                    "SELECT record FROM bounces WHERE user_id = $1 AND email = $2",
                    &[&key(user.get()), &bounce.email],
                )
                .await?
                .into_iter()
                .map(|r| r.get::<_, Json<Bounce>>(0).0)
                .collect();
            SoftWindow::from_history(&history, policy)
        }
    };
    let n = window.add(bounce.at, policy, now);
    tx.execute(
        "UPDATE soft_windows SET record = $3 WHERE user_id = $1 AND email = $2",
        &[&key(user.get()), &bounce.email, &Json(&window)],
    )
    .await?;
    Ok(n)
}
