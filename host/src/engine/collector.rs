//! Stores outcomes in batches: one transaction for up to `MAX_BATCH`
//! outcomes keeps storage off the critical path at high rates, while a
//! lone outcome is stored at once. It ends with the engine: when the runs
//! map it was given is dropped.

use std::collections::HashMap;
use std::sync::Weak;
use std::sync::atomic::Ordering;

use chrono::Utc;
use tokio::sync::mpsc;

use super::Runs;
use super::queue::Queue;
use crate::domain::CampaignId;
use crate::domain::message::Outcome;

const MAX_BATCH: usize = 256;

pub(super) async fn run(queue: Queue, runs: Weak<Runs>, mut rx: mpsc::UnboundedReceiver<Outcome>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let Some(runs) = runs.upgrade() else { return };
        let outcomes = std::mem::take(&mut batch);
        let mut per_campaign: HashMap<CampaignId, usize> = HashMap::new();
        for o in outcomes.iter().filter(|o| o.kind.ends_job()) {
            *per_campaign.entry(o.campaign_id).or_default() += 1;
        }
        let count = outcomes.len();
        if let Err(e) = queue.record(outcomes, Utc::now()).await {
            // The messages stay queued in storage and are re-delivered on
            // the next start (or, on PostgreSQL, once this node's lease
            // lapses); counting them done here would lose them.
            tracing::error!(count, "cannot store outcomes: {e}");
            continue;
        }
        let runs = runs.lock().expect("runs lock");
        for (id, n) in per_campaign {
            if let Some(run) = runs.get(&id) {
                run.in_flight.fetch_sub(n, Ordering::AcqRel);
                run.wake.notify_one();
            }
        }
    }
}
