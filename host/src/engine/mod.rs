//! The delivery engine: drives sending campaigns from subscribers to stored
//! outcomes.
//!
//! Per campaign, a driver task turns subscribers into queued messages one
//! batch per transaction (`Redb::enqueue`, or this node's claim on
//! PostgreSQL: `queue`), keeping at most `window` messages without an
//! outcome. Each queued message becomes a task that
//! personalizes it, waits for a transport slot, delivers it with retries and
//! hands the outcome to the collector, which stores outcomes in batches.
//! Pausing stops the driver from queueing; queued messages still finish.

mod capacity;
pub mod clock;
mod collector;
mod job;
mod lane;
mod provider;
pub mod rate;
mod render;
pub mod route;

pub use provider::ProviderState;
pub use render::{Preview, PreviewHeader, RenderError, TestDelivery};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use chrono::{DateTime, Utc};

use self::clock::Clock;

use crate::store::queue::{Claim, Now, Queue, Step};
use tokio::sync::{Notify, mpsc};

use crate::config::{Config, Delivery};
use crate::domain::message::Job;
use crate::domain::{Campaign, CampaignId, Status, schedule};
use crate::plugins::Plugins;
use crate::store::health::Backoff;
use crate::store::{Store, StoreError};

/// Shared state of one campaign's run.
struct Run {
    in_flight: AtomicUsize,
    /// Of those, messages waiting for their mailbox provider (its backoff,
    /// slots or pace): they leave the window, up to `PARKED_PER_WINDOW`
    /// windows of them, so a slow provider does not hold up the others.
    parked: AtomicUsize,
    /// Set by cancel: messages not yet handed to the transport are dropped.
    cancelled: Arc<AtomicBool>,
    wake: Notify,
    /// Set (under the runs lock) when a transition found this driver
    /// running: a driver that decided to end before seeing it goes round
    /// again, or a resume landing while it exits would leave the campaign
    /// sending with no driver.
    called: AtomicBool,
}

/// How many windows of messages may wait for their providers beside a
/// full window of others. They are not rendered while they wait (a job is
/// its subscriber's record), and a crash flags them with the window.
const PARKED_PER_WINDOW: usize = 8;

impl Run {
    /// A run with nothing in flight yet.
    fn new(cancelled: bool) -> Run {
        Run {
            in_flight: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
            cancelled: Arc::new(AtomicBool::new(cancelled)),
            wake: Notify::new(),
            called: AtomicBool::new(false),
        }
    }

    /// A message waits for its provider: out of the window until the
    /// guard drops (the driver is woken to fill its place).
    fn park(self: &Arc<Run>) -> Parked {
        self.parked.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_one();
        Parked(self.clone())
    }

    /// Messages that count against the window: in flight, less those
    /// parked (at most `PARKED_PER_WINDOW` windows of them).
    fn busy(&self, window: usize) -> usize {
        let parked = self.parked.load(Ordering::Acquire).min(window * PARKED_PER_WINDOW);
        self.in_flight.load(Ordering::Acquire).saturating_sub(parked)
    }
}

pub(super) struct Parked(Arc<Run>);

impl Drop for Parked {
    fn drop(&mut self) {
        self.0.parked.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The campaigns being driven, by id.
type Runs = Mutex<HashMap<CampaignId, Arc<Run>>>;

pub(crate) struct Inner {
    /// Where every engine task runs (see `Engine::start`).
    rt: tokio::runtime::Handle,
    clock: Arc<dyn Clock>,
    store: Store,
    /// Where steps and outcomes go: redb, or this node's claims on
    /// PostgreSQL.
    queue: Arc<dyn Queue>,
    cfg: Delivery,
    base_url: String,
    secret: [u8; 32],
    /// What the message tasks use (`job`): plugins, capacity, the stop
    /// signal, the outcome channel, the retry policy.
    jobs: Arc<job::Shared>,
    runs: Arc<Runs>,
    /// Each transport alone, and each pool, by name.
    routes: route::Routes,
    /// Transports warming up, by name.
    warmups: HashMap<String, crate::domain::warmup::Warmup>,
    /// Drivers whose window is full tell the collector so.
    room: Arc<collector::RoomWanted>,
}

#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Starts the outcome collector and resumes every campaign that was
    /// sending, paused with queued mail, or scheduled when the server stopped.
    /// Engine tasks run on the current runtime; see `start_on`.
    pub async fn start(
        store: Store,
        plugins: Arc<Plugins>,
        config: &Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Engine, StoreError> {
        Engine::start_on(tokio::runtime::Handle::current(), store, plugins, config, clock).await
    }

    /// Like `start`, with every engine task on `rt`. The server gives the
    /// engine its own runtime so that thousands of runnable message tasks
    /// never queue ahead of an API request. It reads `config`'s
    /// `[delivery]`, `[bounces]`, the base URL and, on PostgreSQL, where
    /// the engine joins the cluster as a node, `[database]`.
    pub async fn start_on(
        rt: tokio::runtime::Handle,
        store: Store,
        plugins: Arc<Plugins>,
        config: &Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Engine, StoreError> {
        let (cfg, bounces, base_url) = (config.delivery.clone(), config.bounces, config.base_url());
        let (tx, rx) = mpsc::unbounded_channel();
        let store_secret = store.secret("unsubscribe").await?;
        let now: Now = {
            let clock = clock.clone();
            Arc::new(move || clock.now())
        };
        let queue = store.open_queue(&config.database, &rt, now).await?;
        let stop = Arc::new(job::Stop::default());
        // Another node may take over a claim whose lease lapsed: this
        // node's calls have fences (PostgreSQL), unless it is the only
        // sender (the one that runs the schedules, redb).
        let fenced = !queue.runs_schedules();
        let mut lanes = HashMap::new();
        for (name, t) in &plugins.transports {
            // Transport-wide: shared by every campaign on the transport
            // (and on PostgreSQL by every node).
            let pace = rate::Pace::new(&store, &format!("transport:{name}"), t.info.rate_limit).await?;
            let lane = lane::Lane::start(&rt, t.clone(), pace.map(Arc::new), stop.clone(), fenced);
            lanes.insert(name.clone(), lane);
        }
        let mut routes: route::Routes = lanes
            .iter()
            .map(|(name, lane)| (name.clone(), Arc::new(route::Route::single(name, lane.clone()))))
            .collect();
        for (name, pool) in &config.pools {
            let members = pool
                .members()
                .filter_map(|(member, weight)| {
                    let warming = (config.transports.get(member))
                        .and_then(|t| t.warmup())
                        .map(|w| route::Warming::new(w, store.clone(), clock.clone()));
                    Some((member.to_string(), lanes.get(member)?.clone(), weight, warming))
                })
                .collect();
            routes.insert(name.clone(), Arc::new(route::Route::pool(name, members)));
        }
        let providers = provider::Providers::new(&store, queue.as_ref(), &config.providers).await?;
        let jobs = Arc::new(job::Shared {
            providers,
            capacity: capacity::Capacity::new(&cfg),
            plugins,
            stop,
            outcomes: tx,
            retry: job::Retry {
                max_attempts: cfg.max_attempts,
                base_ms: cfg.retry_base_ms,
                max_ms: cfg.retry_max_ms,
                hard_on_reject: bounces.hard_on_reject,
            },
            personalize_seconds: metrics::histogram!(crate::metrics::PERSONALIZE_CALL),
        });
        let inner = Arc::new(Inner {
            rt: rt.clone(),
            clock,
            store,
            queue,
            cfg,
            base_url,
            secret: store_secret,
            jobs,
            runs: Arc::new(Mutex::new(HashMap::new())),
            routes,
            warmups: config
                .transports
                .iter()
                .filter_map(|(name, t)| Some((name.clone(), t.warmup()?)))
                .collect(),
            room: Arc::default(),
        });
        rt.spawn(collector::run(
            inner.queue.clone(),
            inner.store.health().clone(),
            Arc::downgrade(&inner.runs),
            inner.room.clone(),
            rx,
        ));
        let engine = Engine { inner };
        let active = engine.inner.store.active_campaigns().await?;
        for c in active {
            engine.kick(&c);
        }
        if let Some(mut wakes) = engine.inner.queue.wakes() {
            let engine = engine.clone();
            rt.spawn(async move {
                while let Some(w) = wakes.recv().await {
                    engine.drive(w.id, w.cancelled, w.campaign);
                }
            });
        }
        Ok(engine)
    }

    /// Messages handed to delivery tasks and not yet stored, per running
    /// campaign (the `posta_campaign_in_flight` gauge).
    pub fn in_flight(&self) -> Vec<(CampaignId, usize)> {
        let runs = self.inner.runs.lock().expect("runs lock");
        runs.iter()
            .map(|(id, r)| (*id, r.in_flight.load(Ordering::Acquire)))
            .collect()
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn plugins(&self) -> &Arc<Plugins> {
        &self.inner.jobs.plugins
    }

    /// The transport a campaign gets when it names none.
    pub fn default_transport(&self) -> String {
        self.inner.jobs.plugins.default_transport.clone()
    }

    /// A campaign may only name a configured transport or pool.
    pub fn check_transport(&self, name: &str) -> Result<(), crate::domain::FieldError> {
        if self.inner.routes.contains_key(name) {
            return Ok(());
        }
        let mut known = self.route_names();
        known.sort();
        Err(crate::domain::FieldError::new(
            "transport",
            format!("unknown transport {name:?}; configured: {}", known.join(", ")),
        ))
    }

    /// Stops queueing, lets every transport call under way finish and its
    /// outcome be stored, and returns how many campaigns still had messages
    /// in flight when `timeout` ran out (0 after a clean stop). Messages
    /// left queued are delivered after the next start.
    pub async fn shutdown(&self, timeout: Duration) -> usize {
        self.inner.jobs.stop.stop();
        for run in self.inner.runs.lock().expect("runs lock").values() {
            run.wake.notify_one();
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = self.inner.runs.lock().expect("runs lock").len();
            if left == 0 {
                self.inner.queue.leave().await;
                return 0;
            }
            if tokio::time::Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every name a campaign's `transport` may be: transports and pools.
    pub fn route_names(&self) -> Vec<String> {
        self.inner.routes.keys().cloned().collect()
    }

    /// Each pool's members and their state, by pool name.
    pub fn pools(&self) -> Vec<(String, Vec<route::MemberState>)> {
        let now = std::time::Instant::now();
        let mut pools: Vec<_> = self
            .inner
            .routes
            .values()
            .filter(|r| r.is_pool())
            .map(|r| (r.name.clone(), r.states(now)))
            .collect();
        pools.sort_by(|a, b| a.0.cmp(&b.0));
        pools
    }

    /// A warming-up transport's cap today, and today (UTC); none once its
    /// schedule is over or without one.
    pub fn warmup_today(&self, transport: &str) -> Option<(u64, chrono::NaiveDate)> {
        let day = crate::domain::warmup::day_of(self.now());
        Some((self.inner.warmups.get(transport)?.cap_on(day)?, day))
    }

    /// Each provider's state, as this node last saw it.
    pub fn providers(&self) -> Vec<provider::ProviderState> {
        self.inner.jobs.providers.all.iter().map(|p| p.state()).collect()
    }

    /// The engine's now: what due times and schedules are measured against.
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// Makes sure the campaign is being driven after a status change.
    pub fn kick(&self, c: &Campaign) {
        match c.status {
            s if s.has_messages_to_settle() => self.drive(c.id, s == Status::Cancelled, Some(c.clone())),
            // On PostgreSQL the scheduler's leader fires every node's
            // scheduled campaigns (`shared`).
            Status::Scheduled if self.inner.queue.runs_schedules() => self.schedule(c),
            _ => {}
        }
    }

    fn schedule(&self, c: &Campaign) {
        let inner = self.inner.clone();
        let (id, user) = (c.id, c.user_id);
        let start = schedule::start_at(c.scheduled_at, c.send_at_local_time);
        self.inner.rt.spawn(async move {
            if let Some(start) = start {
                // Re-read the clock at least every second, so a changed clock
                // (or a long sleep of the machine) is noticed.
                while let Ok(wait) = (start - inner.clock.now()).to_std() {
                    if wait.is_zero() {
                        break;
                    }
                    tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
                }
            }
            let now = inner.clock.now();
            match inner.store.act(user, id, crate::domain::Action::Fire, now).await {
                Ok(c) => Engine { inner }.drive(c.id, false, Some(c)),
                // Cancelled, deleted or already fired meanwhile: nothing to do.
                Err(StoreError::Transition(_) | StoreError::NotFound) => {}
                Err(e) => tracing::error!(campaign = id.get(), "cannot start scheduled campaign: {e}"),
            }
        });
    }

    /// Makes sure campaign `id` has a driver (waking the one it has).
    /// `known` is the campaign as the caller just stored it, if it has it:
    /// a new driver starts from that instead of reading it again.
    fn drive(&self, id: CampaignId, cancelled: bool, known: Option<Campaign>) {
        let run = {
            let mut runs = self.inner.runs.lock().expect("runs lock");
            if let Some(run) = runs.get(&id) {
                run.cancelled.fetch_or(cancelled, Ordering::AcqRel);
                run.called.store(true, Ordering::Release);
                run.wake.notify_one();
                return;
            }
            let run = Arc::new(Run::new(cancelled));
            runs.insert(id, run.clone());
            run
        };
        let inner = self.inner.clone();
        self.inner.rt.spawn(async move {
            let mut known = known;
            loop {
                // What the driver reads from here on is newer than any
                // call made so far.
                run.called.store(false, Ordering::Release);
                let ended = drive(&inner, id, &run, known.take()).await;
                match &ended {
                    Ok(()) => {}
                    // Deleted meanwhile: nothing left to send.
                    Err(StoreError::NotFound) => {}
                    Err(e) => tracing::error!(campaign = id.get(), "delivery stopped: {e}"),
                }
                let mut runs = inner.runs.lock().expect("runs lock");
                // A transition since the driver's last read (a resume
                // while it saw the pause): read the campaign again. Only
                // after a clean end, which leaves nothing in flight (a
                // second driver's recovery would re-deliver it).
                if ended.is_ok() && run.called.load(Ordering::Acquire) && !inner.jobs.stop.is_stopping() {
                    continue;
                }
                runs.remove(&id);
                break;
            }
        });
    }
}

/// Runs `f` until it succeeds or fails for a reason other than storage
/// being out of reach (which it waits out, with a capped backoff, while the
/// server is not stopping: `None` then). A database restart or failover
/// pauses a send; it must not end it.
async fn persist<T, F, Fut>(inner: &Inner, task: &'static str, mut f: F) -> Result<Option<T>, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let health = inner.store.health();
    let mut backoff = Backoff::new(Duration::from_secs(2));
    loop {
        match f().await {
            Ok(v) => {
                health.ok(task);
                return Ok(Some(v));
            }
            Err(StoreError::Db(e) | StoreError::Unavailable(e)) => {
                health.failed(task, &e);
                if inner.jobs.stop.is_stopping() {
                    return Ok(None);
                }
                tokio::time::sleep(backoff.next_wait()).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn drive(inner: &Arc<Inner>, id: CampaignId, run: &Arc<Run>, known: Option<Campaign>) -> Result<(), StoreError> {
    let campaign = match known {
        Some(c) => c,
        None => {
            let read = persist(inner, "driver", || inner.store.campaign_by_id(id)).await?;
            let Some(c) = read else {
                return Ok(());
            };
            c
        }
    };
    let Some(ctx) = persist(inner, "driver", || context(inner, &campaign, run.clone())).await? else {
        return Ok(());
    };
    let ctx = Arc::new(ctx);
    let Some(recovered) = persist(inner, "driver", || inner.queue.recover(id, inner.clock.now())).await? else {
        return Ok(());
    };
    if !recovered.is_empty() {
        tracing::warn!(
            campaign = id.get(),
            count = recovered.len(),
            "re-delivering messages left in flight by a stop"
        );
    }
    dispatch(inner, run, &ctx, recovered, Claim::alone());
    // Paced by its own send_rate or by its transport's rate_limit, the
    // campaign queues only what the slower of them sends in half a second.
    let transport_rate = ctx.transport.as_ref().and_then(|l| l.rate_limit());
    let window = rate::window(rate::slowest(campaign.send_rate, transport_rate), inner.cfg.window);
    let mut skipped = campaign.stats.skipped;
    let warmup = inner.warmups.get(&campaign.transport).cloned();
    // The day whose warm-up cap this campaign found reached.
    let mut capped = None;
    loop {
        let notified = run.wake.notified();
        if inner.jobs.stop.is_stopping() {
            if run.in_flight.load(Ordering::Acquire) == 0 {
                return Ok(());
            }
            notified.await;
            continue;
        }
        // Never more than `window` without an outcome (besides messages
        // parked at their providers, never called while parked): that is
        // the bound on what a crash can flag as a possible duplicate. A
        // batch waits for a quarter of its size to be free, so the queue is
        // not refilled one tiny transaction per outcome.
        let full = inner.cfg.batch_size.min(window);
        let room = window.saturating_sub(run.busy(window));
        if room < (full / 4).max(1) {
            let _waiting = inner.room.want();
            notified.await;
            continue;
        }
        let batch = full.min(room);
        // A pool whose members all warm up queues no more than they may
        // still take today, and nothing once all met their caps (each
        // member's count is taken per message, in the route).
        let mut batch = batch;
        if let Some(route) = ctx.transport.as_ref().filter(|r| r.is_pool()) {
            let now = inner.clock.now();
            let day = crate::domain::warmup::day_of(now);
            let Some(room) = persist(inner, "driver", || route.room_on(day)).await? else {
                continue;
            };
            // Messages in flight may not have taken their count yet.
            let in_flight = run.in_flight.load(Ordering::Acquire) as u64;
            match room {
                Some(0) => {
                    capped_wait(now, notified).await;
                    continue;
                }
                Some(room) if room <= in_flight => {
                    capped_wait(now, notified).await;
                    continue;
                }
                Some(room) => batch = batch.min(usize::try_from(room - in_flight).unwrap_or(usize::MAX)),
                None => {}
            }
        }
        // A warming-up transport's messages of the day are taken before
        // the step queues them, and what the step did not use given back.
        let taken = match warmup.as_ref().filter(|_| !run.cancelled.load(Ordering::Acquire)) {
            None => None,
            Some(w) => {
                let now = inner.clock.now();
                let day = crate::domain::warmup::day_of(now);
                match w.cap_on(day) {
                    None => None,
                    // Today's cap is reached: still sending, it goes on
                    // the next UTC day (the clock read again each second).
                    Some(_) if capped == Some(day) => {
                        capped_wait(now, notified).await;
                        continue;
                    }
                    Some(cap) => {
                        let transport = campaign.transport.clone();
                        let want = batch as u64;
                        let Some(got) = persist(inner, "driver", || {
                            inner.store.take_warmup(transport.clone(), day, cap, want)
                        })
                        .await?
                        else {
                            continue;
                        };
                        if got == 0 {
                            tracing::info!(
                                campaign = id.get(),
                                transport = campaign.transport,
                                cap,
                                "the transport's warm-up cap for today is reached; the send goes on tomorrow (UTC)"
                            );
                            capped = Some(day);
                            continue;
                        }
                        Some((day, got))
                    }
                }
            }
        };
        let batch = taken.map_or(batch, |(_, got)| got as usize);
        let Some(Step { enqueued: step, claim }) =
            persist(inner, "driver", || inner.queue.step(id, batch, inner.clock.now())).await?
        else {
            continue;
        };
        if let Some((day, got)) = taken {
            let unused = got.saturating_sub(step.jobs.len() as u64);
            if unused > 0 {
                let transport = campaign.transport.clone();
                persist(inner, "driver", || {
                    inner.store.give_back_warmup(transport.clone(), day, unused)
                })
                .await?;
            }
        }
        let c = step.campaign;
        if c.stats.skipped > skipped {
            ctx.counters.skipped.increment(c.stats.skipped - skipped);
            skipped = c.stats.skipped;
        }
        if c.status == Status::Cancelled {
            run.cancelled.store(true, Ordering::Release);
        }
        if !step.jobs.is_empty() {
            dispatch(inner, run, &ctx, step.jobs, claim);
            continue;
        }
        if step.progressed {
            continue;
        }
        if run.in_flight.load(Ordering::Acquire) == 0 && c.status != Status::Sending {
            return Ok(());
        }
        // Waiting for outcomes, a resume or cancel, the next local time,
        // or (on PostgreSQL) other nodes' progress and lapsed leases.
        let due = step.next_due.map(|due| {
            (due - inner.clock.now())
                .to_std()
                .unwrap_or_default()
                .max(Duration::from_millis(10))
        });
        match due.into_iter().chain(inner.queue.idle_poll()).min() {
            Some(wait) => {
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(wait.min(Duration::from_secs(1))) => {}
                }
            }
            None => notified.await,
        }
    }
}

/// Waits a second at most (or for a wake) while today's warm-up cap is
/// reached; the caller reads the clock again (a new day takes afresh).
async fn capped_wait(now: DateTime<Utc>, woken: tokio::sync::futures::Notified<'_>) {
    let wait = (crate::domain::warmup::next_day(now) - now)
        .to_std()
        .unwrap_or_default();
    tokio::select! {
        _ = woken => {}
        _ = tokio::time::sleep(wait.min(Duration::from_secs(1))) => {}
    }
}

/// What every message of campaign `c` shares during this run.
async fn context(inner: &Inner, c: &Campaign, run: Arc<Run>) -> Result<job::Context, StoreError> {
    let campaign_rate = rate::Pace::new(&inner.store, &format!("campaign:{}", c.id), c.send_rate).await?;
    let spacing = match (&campaign_rate, c.send_rate) {
        (Some(rate::Pace::Local(_)), Some(n)) => Some(Arc::new(rate::Spacing::new(n))),
        _ => None,
    };
    Ok(job::Context {
        run,
        campaign_rate,
        spacing,
        campaign: c.clone(),
        wit: Arc::new(c.into()),
        variants: c.variants().iter().map(|v| Arc::new(v.into())).collect(),
        transport: inner.routes.get(&c.transport).cloned(),
        unsubscribe_base: format!("{}/unsubscribe", inner.base_url),
        secret: inner.secret,
        // Marks are signed with the unsubscribe links' secret; their MAC
        // is domain-separated (`tracking::Mark::seal`).
        tracking: (c.track_opens || c.track_clicks).then(|| crate::domain::tracking::Rewriter {
            links: crate::domain::tracking::Links::of_campaign(c),
            base: inner.base_url.trim_end_matches('/').to_string(),
            secret: inner.secret,
            opens: c.track_opens,
            clicks: c.track_clicks,
        }),
        user_slots: inner.jobs.capacity.user(c.user_id),
        max_message_bytes: inner.jobs.plugins.personalizer.pool().meta.limits.max_message_bytes,
        counters: crate::metrics::MessageCounters::new(&c.transport),
    })
}

/// Starts a delivery task per job, all taken under `claim` (whose fence,
/// on PostgreSQL, is when their transport calls must have started by).
fn dispatch(inner: &Arc<Inner>, run: &Arc<Run>, ctx: &Arc<job::Context>, jobs: Vec<Job>, claim: Claim) {
    for j in jobs {
        run.in_flight.fetch_add(1, Ordering::AcqRel);
        let shared = inner.jobs.clone();
        let ctx = ctx.clone();
        let claim = claim.clone();
        inner.rt.spawn(async move {
            let outcome = job::deliver(&shared, &ctx, j, &claim).await;
            // The collector decrements in_flight once the outcome is stored.
            let _ = shared.outcomes.send(collector::Reported { outcome, claim });
        });
    }
}
