//! How a campaign's status change reaches every node fast: the writer's
//! transaction sends `NOTIFY posta_campaigns, 'id:status'` (delivered at
//! commit), each node LISTENs on a connection of its own, and a poll of the
//! live campaigns' statuses catches whatever a dropped connection missed.
//! Either path reports a change once: the watcher remembers the last status
//! it reported per campaign.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use super::PgStore;
use crate::domain::{CampaignId, Status};
use crate::store::Result;

/// The channel campaign changes are announced on.
pub(super) const CHANNEL: &str = "posta_campaigns";

/// The payload of a change: `id:status`.
pub(super) fn payload(id: CampaignId, status: Status) -> String {
    format!("{id}:{}", status.as_str())
}

fn parse(payload: &str) -> Option<(CampaignId, Status)> {
    let (id, status) = payload.split_once(':')?;
    Some((id.parse().ok()?, Status::parse(status)?))
}

/// Campaign status changes, as this node learns of them.
pub struct CampaignWatch {
    rx: mpsc::Receiver<(CampaignId, Status)>,
}

impl CampaignWatch {
    /// The next change; `None` once the watcher stopped (the store's
    /// database went away for good).
    pub async fn next(&mut self) -> Option<(CampaignId, Status)> {
        self.rx.recv().await
    }
}

/// The campaigns last seen under way, for the poll to follow up.
fn known(last: &HashMap<CampaignId, Status>) -> Vec<i64> {
    last.keys().map(|id| id.get() as i64).collect()
}

impl PgStore {
    /// Watches every campaign's status: notifications as they commit, and
    /// a poll every `poll` as the safety net.
    pub async fn watch_campaigns(&self, poll: Duration) -> Result<CampaignWatch> {
        let (tx, rx) = mpsc::channel(1024);
        let (notified_tx, mut notified) = mpsc::unbounded_channel();
        // Listening before the first poll: a change between the two is
        // seen at least once.
        self.listen(notified_tx.clone()).await?;
        let store = self.clone();
        tokio::spawn(async move {
            let mut last: HashMap<CampaignId, Status> = HashMap::new();
            let mut tick = tokio::time::interval(poll);
            loop {
                let changes = tokio::select! {
                    n = notified.recv() => match n {
                        Some(Some(change)) => vec![change],
                        // The listening connection ended: listen again
                        // (the poll covers the gap).
                        Some(None) => {
                            match store.listen(notified_tx.clone()).await {
                                Ok(()) => store.health.ok("notifications"),
                                Err(e) => {
                                    store.health.failed("notifications", &e);
                                    // Tried again at the next tick's poll.
                                    let _ = notified_tx.send(None);
                                    tokio::time::sleep(poll).await;
                                }
                            }
                            continue;
                        }
                        None => return,
                    },
                    _ = tick.tick() => match store.statuses(&known(&last)).await {
                        Ok(all) => {
                            store.health.ok("status poll");
                            all
                        }
                        Err(e) => {
                            store.health.failed("status poll", &e);
                            continue;
                        }
                    },
                };
                for (id, status) in changes {
                    if last.insert(id, status) != Some(status) && tx.send((id, status)).await.is_err() {
                        return;
                    }
                }
                // Finished campaigns are reported once, then forgotten.
                last.retain(|_, s| s.is_under_way());
            }
        });
        Ok(CampaignWatch { rx })
    }

    /// LISTENs on a connection of its own; each notification goes to
    /// `out`, then `None` when the connection ends.
    async fn listen(&self, out: mpsc::UnboundedSender<Option<(CampaignId, Status)>>) -> Result<()> {
        let (client, mut conn) = self.config.connect(NoTls).await?;
        // The connection is read by its own task (which also carries the
        // LISTEN below) and holds the client once it has listened: a
        // dropped client would end the connection.
        let (keep, kept) = tokio::sync::oneshot::channel::<tokio_postgres::Client>();
        tokio::spawn(async move {
            let _kept = kept;
            while let Some(message) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if let Some(change) = parse(n.payload()) {
                            let _ = out.send(Some(change));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "campaign notifications: connection lost");
                        break;
                    }
                }
            }
            let _ = out.send(None);
        });
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        let _ = keep.send(client);
        Ok(())
    }

    /// The status of every campaign under way, and of those in `known`
    /// (under way when last seen).
    async fn statuses(&self, known: &[i64]) -> Result<Vec<(CampaignId, Status)>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT id, status FROM campaigns
                 WHERE status = ANY($2) OR id = ANY($1)",
                &[&known, &Status::UNDER_WAY.map(Status::as_str).as_slice()],
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| Some((CampaignId::new(r.get::<_, i64>(0) as u64), Status::parse(r.get(1))?)))
            .collect())
    }
}
