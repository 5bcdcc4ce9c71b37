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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, mpsc};

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
/// message at the same throughput (#35). Between those rates and full
/// speed, a batch waits the 25 ms and takes up to `MAX_BATCH`.
///
/// Unless a driver is waiting for room in its window (`RoomWanted`): its
/// messages cannot leave the window before their outcomes are stored, so
/// a batch then waits only until a quarter of `MAX_BATCH` has come (what
/// the driver needs to queue its next step). At full speed 25 ms is a
/// whole default window (1,024 messages at ~40,000 a second): every
/// linger stalled the send, and ending it early there took the log path
/// from ~36,000 to ~42,000 msg/s (Wasm; +5% native). Ending it early
/// whatever the drivers do made more, smaller commits at medium rates
/// (the webhook into nginx lost ~10%).
///
/// Outcomes wait in memory meanwhile, so a crash in that moment flags
/// those messages as possible duplicates: at most the 25 ms's worth, and
/// never more than the campaign's window, which bounds what a crash can
/// flag anyway.
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
    room: Arc<RoomWanted>,
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
        // waits LINGER at most, and none once the batch holds every
        // message in flight: nothing more is coming (a campaign's last
        // messages, a test send, a window drained), so waiting would only
        // hold up its completion, or its driver waiting for room.
        if batch.len() < MAX_BATCH / 4 && !holds_all_in_flight(&runs, &batch) {
            let until = tokio::time::Instant::now() + LINGER;
            if !room.wanted() {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = room.asked() => {}
                }
            }
            // A driver waits for room: a quarter batch is enough.
            while batch.len() < MAX_BATCH / 4 {
                let more = MAX_BATCH - batch.len();
                match tokio::time::timeout_at(until, rx.recv_many(&mut batch, more)).await {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
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

/// How many drivers wait for outcomes to be stored before they may queue
/// more (their window is full): the collector then stores a batch as soon
/// as it has a quarter of `MAX_BATCH`, instead of lingering.
#[derive(Default)]
pub(super) struct RoomWanted {
    waiting: AtomicUsize,
    asked: Notify,
}

impl RoomWanted {
    /// Marks a driver as waiting until the guard drops.
    pub(super) fn want(self: &Arc<Self>) -> Wanting {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        self.asked.notify_waiters();
        Wanting(self.clone())
    }

    fn wanted(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0
    }

    /// Returns once a driver waits for room.
    async fn asked(&self) {
        let asked = self.asked.notified();
        tokio::pin!(asked);
        // Registered before the count is read, so a driver starting to
        // wait in between still wakes it.
        asked.as_mut().enable();
        if self.wanted() {
            return;
        }
        asked.await;
    }
}

/// A driver waiting for room; it stops counting on drop.
pub(super) struct Wanting(Arc<RoomWanted>);

impl Drop for Wanting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether `batch` ends every message the runs have in flight: an outcome
/// is counted out of its run's `in_flight` only once stored, so when the
/// ending outcomes in hand are as many, no other message is under way.
fn holds_all_in_flight(runs: &Weak<Runs>, batch: &[Reported]) -> bool {
    let Some(runs) = runs.upgrade() else { return true };
    let ending = batch.iter().filter(|r| r.outcome.kind.ends_job()).count();
    let runs = runs.lock().expect("runs lock");
    let in_flight: usize = runs.values().map(|run| run.in_flight.load(Ordering::Acquire)).sum();
    ending >= in_flight
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use chrono::{DateTime, Utc};
    use tokio::time::Instant;

    use super::*;
    use crate::domain::SubscriberId;
    use crate::domain::message::{Job, OutcomeKind};
    use crate::store::StoreError;
    use crate::store::queue::{Step, Wake};

    /// A queue that notes when each batch was stored and its size.
    #[derive(Default)]
    struct Noting(Mutex<Vec<(Instant, usize)>>);

    #[async_trait::async_trait]
    impl Queue for Noting {
        async fn recover(&self, _: CampaignId, _: DateTime<Utc>) -> Result<Vec<Job>, StoreError> {
            unreachable!("the collector only stores")
        }
        async fn step(&self, _: CampaignId, _: usize, _: DateTime<Utc>) -> Result<Step, StoreError> {
            unreachable!("the collector only stores")
        }
        async fn record(&self, _: &Claim, outcomes: &Arc<Vec<Outcome>>, _: DateTime<Utc>) -> Result<(), StoreError> {
            self.0.lock().unwrap().push((Instant::now(), outcomes.len()));
            Ok(())
        }
        fn runs_schedules(&self) -> bool {
            true
        }
        fn idle_poll(&self) -> Option<Duration> {
            None
        }
        fn wakes(&self) -> Option<mpsc::UnboundedReceiver<Wake>> {
            None
        }
        async fn leave(&self) {}
    }

    fn run_with(in_flight: usize) -> Arc<super::super::Run> {
        let run = super::super::Run::new(false);
        run.in_flight.store(in_flight, Ordering::Release);
        Arc::new(run)
    }

    fn sent(campaign: u64, subscriber: u64) -> Reported {
        Reported {
            outcome: Outcome {
                campaign_id: CampaignId::new(campaign),
                subscriber_id: SubscriberId::new(subscriber),
                attempts: 1,
                kind: OutcomeKind::Sent { remote_id: None },
            },
            claim: Claim::alone(),
        }
    }

    /// Sends `outcomes` to a collector over campaigns with these messages
    /// in flight; when each batch was stored, from the first send.
    async fn stored(in_flight: &[(u64, usize)], outcomes: Vec<Reported>) -> Vec<(Duration, usize)> {
        stored_in_steps(in_flight, Arc::default(), vec![(Duration::ZERO, outcomes)]).await
    }

    /// Like `stored`, the outcomes sent in groups, each after a pause.
    async fn stored_in_steps(
        in_flight: &[(u64, usize)],
        room: Arc<RoomWanted>,
        groups: Vec<(Duration, Vec<Reported>)>,
    ) -> Vec<(Duration, usize)> {
        let queue = Arc::new(Noting::default());
        let runs: Arc<Runs> = Arc::new(Mutex::new(
            in_flight
                .iter()
                .map(|&(id, n)| (CampaignId::new(id), run_with(n)))
                .collect::<HashMap<_, _>>(),
        ));
        let (tx, rx) = mpsc::unbounded_channel();
        let started = Instant::now();
        let collector = tokio::spawn(run(
            queue.clone(),
            Arc::new(Health::default()),
            Arc::downgrade(&runs),
            room,
            rx,
        ));
        for (pause, outcomes) in groups {
            tokio::time::sleep(pause).await;
            for r in outcomes {
                tx.send(r).unwrap();
            }
        }
        // Paused time moves on only once every task is idle: the collector
        // has stored what it will by then.
        tokio::time::sleep(LINGER * 4).await;
        drop(runs);
        drop(tx);
        collector.await.unwrap();
        queue
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(at, n)| (*at - started, *n))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_messages_in_flight_are_stored_without_waiting() {
        assert_eq!(stored(&[(1, 1)], vec![sent(1, 1)]).await, vec![(Duration::ZERO, 1)]);
        // Two campaigns' last three, in one batch.
        let last = vec![sent(1, 1), sent(2, 1), sent(2, 2)];
        assert_eq!(stored(&[(1, 1), (2, 2)], last).await, vec![(Duration::ZERO, 3)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_few_outcomes_wait_for_more_while_others_are_in_flight() {
        // Another campaign still has a message under way.
        assert_eq!(stored(&[(1, 1), (2, 1)], vec![sent(1, 1)]).await, vec![(LINGER, 1)]);
        // Retries end no message: they do not count as the last ones.
        let retrying = Reported {
            outcome: Outcome {
                kind: OutcomeKind::Retrying { error: "busy".into() },
                ..sent(1, 1).outcome
            },
            claim: Claim::alone(),
        };
        assert_eq!(stored(&[(1, 1)], vec![retrying]).await, vec![(LINGER, 1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_driver_waiting_for_room_cuts_the_wait_short() {
        let ms = Duration::from_millis;
        let outcomes = |from: u64, n: u64| (from..from + n).map(|s| sent(1, s)).collect::<Vec<_>>();
        let steps = || {
            vec![
                (ms(0), outcomes(0, 10)),
                (ms(5), outcomes(10, 30)),
                (ms(5), outcomes(40, 30)),
            ]
        };
        // No driver waits: the batch lingers its 25 ms and takes all.
        assert_eq!(
            stored_in_steps(&[(1, 1024)], Arc::default(), steps()).await,
            vec![(LINGER, 70)]
        );
        // A driver waits: stored once a quarter batch has come.
        let room = Arc::new(RoomWanted::default());
        let waiting = room.want();
        assert_eq!(
            stored_in_steps(&[(1, 1024)], room.clone(), steps()).await,
            vec![(ms(10), 70)]
        );
        drop(waiting);
        // A driver that starts waiting during the linger ends it there.
        let room = Arc::new(RoomWanted::default());
        let asking = {
            let room = room.clone();
            tokio::spawn(async move {
                tokio::time::sleep(ms(12)).await;
                let _waiting = room.want();
                tokio::time::sleep(LINGER * 4).await;
            })
        };
        assert_eq!(stored_in_steps(&[(1, 1024)], room, steps()).await, vec![(ms(12), 70)]);
        asking.abort();
    }
}
