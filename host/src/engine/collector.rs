//! Stores outcomes in batches: one transaction for up to `MAX_BATCH`
//! outcomes keeps storage off the critical path at high rates, while a
//! lone outcome is stored at once. It ends with the engine: when the runs
//! map it was given is dropped.
//!
//! A batch that cannot be stored (the database is down) is tried again
//! until it is: its messages stay in flight meanwhile, so their driver
//! queues nothing more than its window allows, and once stored (or refused,
//! if their claim lapsed meanwhile) they make room again. Dropping them
//! instead would leave their driver waiting for room forever.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;

use super::Runs;
use crate::domain::CampaignId;
use crate::domain::message::Outcome;
use crate::store::health::Health;
use crate::store::queue::{Claim, Queue};

const MAX_BATCH: usize = 256;

/// How long a small batch waits for more outcomes before it is stored.
/// A commit costs about the same for 2 outcomes as for 60 (its fsync and
/// page writes dominate), and outcomes trickle in a few at a time whenever
/// the transport is the bottleneck: a relay taking hundreds a second, a
/// webhook at a few ms a call. Into Postfix's smtpd at one connection
/// (~370 msg/s) 25 ms rather than 5 took 10–15% off the server's CPU per
/// message at the same throughput (#35). At full speed the wait is
/// skipped: a commit's own time lets `MAX_BATCH / 4` gather. Between the
/// two, a batch waits the 25 ms and takes up to `MAX_BATCH`; ending the
/// wait early at `MAX_BATCH / 4` made more, smaller commits and no
/// difference to the API's latency while sending (five alternating runs of
/// `bench --only latency`, p99 within the runs' noise). Outcomes wait in
/// memory meanwhile, so a crash in that moment flags those messages as
/// possible duplicates: at most the 25 ms's worth, and never more than the
/// campaign's window, which bounds what a crash can flag anyway.
const LINGER: Duration = Duration::from_millis(25);

/// The longest wait between two tries at storing a batch.
const RETRY_CAP: Duration = Duration::from_secs(2);

/// An outcome and the claim its message was delivered under.
pub(super) struct Reported {
    pub(super) outcome: Outcome,
    pub(super) claim: Claim,
}

pub(super) async fn run(
    queue: Arc<dyn Queue>,
    health: Arc<Health>,
    runs: Weak<Runs>,
    mut rx: mpsc::UnboundedReceiver<Reported>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if runs.strong_count() == 0 {
            return;
        }
        // A few outcomes while more are coming (a transport at thousands
        // a second, each call a wait): wait a moment for them, so a
        // commit stores a batch rather than a handful. A lone outcome
        // waits LINGER at most.
        if batch.len() < MAX_BATCH / 4 {
            tokio::time::sleep(LINGER).await;
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
        }
        let mut per_campaign: HashMap<CampaignId, usize> = HashMap::new();
        for r in batch.iter().filter(|r| r.outcome.kind.ends_job()) {
            *per_campaign.entry(r.outcome.campaign_id).or_default() += 1;
        }
        for (claim, outcomes) in by_claim(std::mem::take(&mut batch)) {
            let outcomes = Arc::new(outcomes);
            health
                .until_ok("outcomes", RETRY_CAP, || queue.record(&claim, &outcomes, Utc::now()))
                .await;
        }
        let Some(runs) = runs.upgrade() else { return };
        let runs = runs.lock().expect("runs lock");
        for (id, n) in per_campaign {
            if let Some(run) = runs.get(&id) {
                run.in_flight.fetch_sub(n, Ordering::AcqRel);
                run.wake.notify_one();
            }
        }
    }
}

/// The batch's outcomes per claim, in the order the claims first appear
/// (a batch rarely holds more than one or two).
fn by_claim(batch: Vec<Reported>) -> Vec<(Claim, Vec<Outcome>)> {
    let mut groups: Vec<(Claim, Vec<Outcome>)> = Vec::new();
    for r in batch {
        match groups.iter_mut().find(|(c, _)| c.same(&r.claim)) {
            Some((_, outcomes)) => outcomes.push(r.outcome),
            None => groups.push((r.claim, vec![r.outcome])),
        }
    }
    groups
}
