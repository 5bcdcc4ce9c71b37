//! Where a campaign's messages go: one transport's lane, or a pool of
//! them (`[pools.NAME]`). A pool spreads messages by weight (smooth
//! weighted round robin, so a 3:1 pool sends A A B A A A B A …, not runs)
//! over the members that may take one now. A member whose relay cannot
//! be reached (the transport says `unreachable:`: refused, timed out, a
//! 4xx greeting — the relay saw no part of the message) counts a failure;
//! after `TRIP_AFTER` in a row it is out for a cool-down, then one message
//! probes it (the others keep going elsewhere): an answer from the relay
//! brings it back, another unreachable doubles the cool-down (capped).
//! The message that found a member unreachable goes on to the next member
//! within the same attempt; it is never with two members at once. A
//! transport alone has no breaker: its failures are retries as before.
//!
//! A warming-up member (`warmup`) takes each message it is given from its
//! day's count in storage (the count campaigns naming the transport itself
//! and, on PostgreSQL, every node share; a message that found it
//! unreachable gives its count back); once the day's cap is reached it
//! takes no more that UTC day and its weight goes to the others. When
//! every member is capped, the pool is: messages wait for the next day,
//! uncharged, and the driver queues no more (`Route::capped_on`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use parking_lot::Mutex;

use super::clock::Clock;
use super::job::Stop;
use super::lane::{Lane, Reply};
use crate::domain::warmup::{Warmup, day_of};
use crate::plugins::bindings::types;
use crate::store::fence::Fence;
use crate::store::{Store, StoreError};

/// Unreachable calls in a row that take a member out.
pub(super) const TRIP_AFTER: u32 = 3;
/// The first cool-down; each failed probe doubles it up to the cap.
pub(super) const COOLDOWN: Duration = Duration::from_secs(5);
pub(super) const MAX_COOLDOWN: Duration = Duration::from_secs(300);

/// The prefix of a transient delivery error that says the relay itself
/// could not be reached (the plugin contract; `posta_plugin_sdk`'s
/// `unreachable` writes it).
pub const UNREACHABLE: &str = "unreachable: ";

pub fn is_unreachable(error: &str) -> bool {
    error.starts_with(UNREACHABLE)
}

/// A member's health: the circuit breaker. Pure; the caller gives the time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaker {
    state: State,
    /// Unreachable calls in a row while closed.
    failures: u32,
    /// The next cool-down.
    cooldown: Duration,
    /// Times it was taken out.
    pub trips: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// One message is finding out whether the relay is back.
    Probing,
}

/// What a member may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Ready,
    /// Out until then (a probe may go at that time).
    OutUntil(Instant),
    /// A probe is under way.
    Probing,
}

impl Default for Breaker {
    fn default() -> Breaker {
        Breaker {
            state: State::Closed,
            failures: 0,
            cooldown: COOLDOWN,
            trips: 0,
        }
    }
}

impl Breaker {
    pub fn availability(&self, now: Instant) -> Availability {
        match self.state {
            State::Closed => Availability::Ready,
            State::Open { until } if until <= now => Availability::Ready,
            State::Open { until } => Availability::OutUntil(until),
            State::Probing => Availability::Probing,
        }
    }

    /// Takes the member for a call; an open member past its cool-down
    /// becomes the probe. False when it may not take one now.
    pub fn take(&mut self, now: Instant) -> bool {
        match self.availability(now) {
            Availability::Ready => {
                if matches!(self.state, State::Open { .. }) {
                    self.state = State::Probing;
                }
                true
            }
            _ => false,
        }
    }

    /// The relay answered (whatever it said about the message).
    pub fn reached(&mut self) {
        self.state = State::Closed;
        self.failures = 0;
        self.cooldown = COOLDOWN;
    }

    /// The relay could not be reached.
    pub fn unreachable(&mut self, now: Instant) {
        match self.state {
            State::Probing => {
                self.cooldown = (self.cooldown * 2).min(MAX_COOLDOWN);
                self.state = State::Open {
                    until: now + self.cooldown,
                };
            }
            State::Closed => {
                self.failures += 1;
                if self.failures >= TRIP_AFTER {
                    self.trips += 1;
                    self.failures = 0;
                    self.state = State::Open {
                        until: now + self.cooldown,
                    };
                }
            }
            // Calls taken before it tripped come back after: nothing new.
            State::Open { .. } => {}
        }
    }

    /// A call that told nothing about the relay (cancelled, stopped): a
    /// probe's turn goes to the next message.
    pub fn released(&mut self, now: Instant) {
        if self.state == State::Probing {
            self.state = State::Open { until: now };
        }
    }

    pub fn is_up(&self) -> bool {
        self.state == State::Closed
    }
}

pub(super) struct Member {
    pub(super) name: String,
    pub(super) lane: Lane,
    pub(super) weight: u32,
    warming: Option<Warming>,
    breaker: Mutex<Breaker>,
    /// Smooth weighted round robin's running weight.
    current: Mutex<i64>,
    up: metrics::Gauge,
    trips: metrics::Counter,
    delivered: metrics::Counter,
}

/// A transport alone, or a pool.
pub(super) struct Route {
    pub(super) name: String,
    pub(super) members: Vec<Member>,
    pooled: bool,
}

/// The member for a message's next call.
pub(super) enum Pick {
    Member(usize),
    /// Every member it has not tried is out: the soonest may probe then.
    WaitUntil(Instant),
    /// Every member has met its warm-up cap for the day.
    Capped,
    /// It tried every member (each unreachable) in this attempt.
    Exhausted,
}

/// A pool member's warm-up: its schedule, and the storage its day's
/// count is kept in.
pub(super) struct Warming {
    schedule: Warmup,
    store: Store,
    clock: Arc<dyn Clock>,
    /// The UTC day its cap was found reached.
    capped: Mutex<Option<NaiveDate>>,
}

impl Warming {
    pub(super) fn new(schedule: Warmup, store: Store, clock: Arc<dyn Clock>) -> Warming {
        Warming {
            schedule,
            store,
            clock,
            capped: Mutex::new(None),
        }
    }

    fn capped_on(&self, day: NaiveDate) -> bool {
        *self.capped.lock() == Some(day)
    }

    /// Takes one message from the day's count: the day it counts on, or
    /// none when the cap is reached (the member is then capped for the
    /// day). A day past the schedule takes nothing from storage.
    async fn take(&self, member: &str) -> Result<Option<Option<NaiveDate>>, StoreError> {
        let day = day_of(self.clock.now());
        let Some(cap) = self.schedule.cap_on(day) else {
            return Ok(Some(None));
        };
        if self.capped_on(day) {
            return Ok(None);
        }
        if self.store.take_warmup(member.to_string(), day, cap, 1).await? == 1 {
            return Ok(Some(Some(day)));
        }
        tracing::info!(
            member,
            cap,
            "the pool member's warm-up cap for today is reached; the others take its share"
        );
        *self.capped.lock() = Some(day);
        Ok(None)
    }
}

/// A member as `GET /transports` shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct MemberState {
    pub name: String,
    pub weight: u32,
    /// `up`, `down` (out for its cool-down) or `probing`.
    pub state: &'static str,
    /// While down: seconds until a message may probe it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_in_seconds: Option<u64>,
    /// Times it was taken out since the server started.
    pub trips: u64,
    /// Its warm-up cap for today (UTC) is reached: the others take its
    /// share until the next day.
    pub capped: bool,
}

impl Route {
    pub(super) fn single(name: &str, lane: Lane) -> Route {
        Route {
            name: name.to_string(),
            members: vec![Member::new(name, name, lane, 1)],
            pooled: false,
        }
    }

    pub(super) fn pool(name: &str, members: Vec<(String, Lane, u32, Option<Warming>)>) -> Route {
        Route {
            name: name.to_string(),
            members: members
                .into_iter()
                .map(|(m, lane, weight, warming)| Member {
                    warming,
                    ..Member::new(name, &m, lane, weight)
                })
                .collect(),
            pooled: true,
        }
    }

    /// Whether every member of the pool met its warm-up cap on `day` (a
    /// transport alone is held by the driver's take before each step).
    pub(super) fn capped_on(&self, day: NaiveDate) -> bool {
        self.pooled
            && self
                .members
                .iter()
                .all(|m| m.warming.as_ref().is_some_and(|w| w.capped_on(day)))
    }

    /// What the pool may still be handed on `day` when every member has a
    /// cap that day: the caps less the counts (other campaigns may take
    /// some first; each message's own take decides). None without a limit.
    pub(super) async fn room_on(&self, day: NaiveDate) -> Result<Option<u64>, StoreError> {
        if !self.pooled {
            return Ok(None);
        }
        let mut room = 0;
        for m in &self.members {
            let Some(w) = &m.warming else { return Ok(None) };
            let Some(cap) = w.schedule.cap_on(day) else {
                return Ok(None);
            };
            if !w.capped_on(day) {
                let left = cap.saturating_sub(w.store.warmup_used(m.name.clone(), day).await?);
                if left == 0 {
                    *w.capped.lock() = Some(day);
                }
                room += left;
            }
        }
        Ok(Some(room))
    }

    /// Waits while every member is capped for the day (the clock read each
    /// second); false when the server is stopping.
    pub(super) async fn until_uncapped(&self, stop: &Stop) -> bool {
        while self.warms() && self.capped_on(day_of(self.clock_now())) {
            if !stop.sleep(Duration::from_secs(1)).await {
                return false;
            }
        }
        true
    }

    /// Whether a member warms up (so a message's day is worth reading).
    fn warms(&self) -> bool {
        self.pooled && self.members.iter().any(|m| m.warming.is_some())
    }

    /// Emails per minute the route may send: its members' limits added up
    /// (none when a member has none).
    pub(super) fn rate_limit(&self) -> Option<u32> {
        self.members.iter().map(|m| m.lane.rate_limit()).sum::<Option<u32>>()
    }

    /// The next member for a message that already tried `tried`, on UTC
    /// `day` if a member warms up.
    pub(super) fn pick(&self, tried: &[usize], now: Instant, day: Option<NaiveDate>) -> Pick {
        if !self.pooled {
            return if tried.is_empty() {
                Pick::Member(0)
            } else {
                Pick::Exhausted
            };
        }
        let untried = (0..self.members.len()).filter(|i| !tried.contains(i));
        let capped =
            |i: usize| day.is_some_and(|day| self.members[i].warming.as_ref().is_some_and(|w| w.capped_on(day)));
        let candidates: Vec<usize> = untried.clone().filter(|&i| !capped(i)).collect();
        if candidates.is_empty() {
            // Capped for the day only if no member was tried: a message
            // that found the others unreachable has had its attempt.
            return if tried.is_empty() && untried.count() > 0 {
                Pick::Capped
            } else {
                Pick::Exhausted
            };
        }
        // Smooth weighted round robin over the members ready now, holding
        // each one's lock only to read or change it.
        loop {
            let ready: Vec<usize> = candidates
                .iter()
                .copied()
                .filter(|&i| self.members[i].breaker.lock().availability(now) == Availability::Ready)
                .collect();
            if ready.is_empty() {
                let soonest = candidates
                    .iter()
                    .map(|&i| match self.members[i].breaker.lock().availability(now) {
                        Availability::OutUntil(t) => t,
                        // A probe under way answers within a call.
                        _ => now + Duration::from_millis(100),
                    })
                    .min()
                    .expect("candidates are not empty");
                return Pick::WaitUntil(soonest);
            }
            let total: i64 = ready.iter().map(|&i| i64::from(self.members[i].weight)).sum();
            let best = *ready
                .iter()
                .max_by_key(|&&i| {
                    let m = &self.members[i];
                    let mut c = m.current.lock();
                    *c += i64::from(m.weight);
                    // Ties go to the first member.
                    (*c, std::cmp::Reverse(i))
                })
                .expect("ready is not empty");
            *self.members[best].current.lock() -= total;
            // Another message may have taken the probe meanwhile.
            if self.members[best].breaker.lock().take(now) {
                return Pick::Member(best);
            }
        }
    }

    /// What member `i`'s call told about its relay.
    pub(super) fn reached(&self, i: usize) {
        if self.pooled {
            let m = &self.members[i];
            let mut b = m.breaker.lock();
            if !b.is_up() {
                tracing::info!(
                    pool = self.name,
                    member = m.name,
                    "transport reachable again: back in the pool"
                );
            }
            b.reached();
            m.up.set(1.0);
        }
    }

    pub(super) fn unreachable(&self, i: usize, now: Instant) {
        if self.pooled {
            let m = &self.members[i];
            let mut b = m.breaker.lock();
            let trips = b.trips;
            let probing = b.availability(now) == Availability::Probing;
            b.unreachable(now);
            if probing {
                tracing::warn!(pool = self.name, member = m.name, "probe: still unreachable");
            }
            if b.trips > trips {
                m.trips.increment(1);
                tracing::warn!(
                    pool = self.name,
                    member = m.name,
                    "transport unreachable {TRIP_AFTER} times in a row: out of the pool for a cool-down"
                );
            }
            m.up.set(if b.is_up() { 1.0 } else { 0.0 });
        }
    }

    pub(super) fn released(&self, i: usize, now: Instant) {
        if self.pooled {
            self.members[i].breaker.lock().released(now);
        }
    }

    pub(super) fn is_pool(&self) -> bool {
        self.pooled
    }

    pub(super) fn states(&self, now: Instant) -> Vec<MemberState> {
        self.members
            .iter()
            .map(|m| {
                let b = m.breaker.lock();
                let (state, retry_in) = match b.availability(now) {
                    Availability::Ready if b.is_up() => ("up", None),
                    // Past its cool-down, no probe taken yet.
                    Availability::Ready => ("down", Some(0)),
                    // Rounded up: 0 only once a probe may go.
                    Availability::OutUntil(t) => ("down", Some((t - now).as_millis().div_ceil(1000) as u64)),
                    Availability::Probing => ("probing", None),
                };
                MemberState {
                    name: m.name.clone(),
                    weight: m.weight,
                    state,
                    retry_in_seconds: retry_in,
                    trips: b.trips,
                    capped: (m.warming.as_ref()).is_some_and(|w| w.capped_on(day_of(w.clock.now()))),
                }
            })
            .collect()
    }
}

impl Member {
    fn new(pool: &str, name: &str, lane: Lane, weight: u32) -> Member {
        let labels = [("pool", pool.to_string()), ("member", name.to_string())];
        let up = metrics::gauge!(crate::metrics::POOL_MEMBER_UP, &labels);
        up.set(1.0);
        Member {
            name: name.to_string(),
            lane,
            weight: weight.max(1),
            warming: None,
            breaker: Mutex::new(Breaker::default()),
            current: Mutex::new(0),
            up,
            trips: metrics::counter!(crate::metrics::POOL_MEMBER_TRIPS, &labels),
            delivered: metrics::counter!(crate::metrics::POOL_MEMBER_DELIVERED, &labels),
        }
    }
}

impl Route {
    /// Delivers `message` through a member: the next by weight, and on to
    /// the next when one is unreachable, each in turn (never two at once);
    /// when every member not yet tried is out, waits for the first probe.
    /// The reply is the last member's.
    pub(super) async fn deliver(
        &self,
        message: Arc<types::Message>,
        cancelled: Arc<AtomicBool>,
        fence: Option<Arc<Fence>>,
        spacing: Option<Arc<super::rate::Spacing>>,
        stop: &Stop,
    ) -> Reply {
        let mut tried = Vec::new();
        let mut last = None;
        loop {
            let now = Instant::now();
            let day = self.warms().then(|| day_of(self.clock_now()));
            match self.pick(&tried, now, day) {
                Pick::Member(i) => {
                    let member = &self.members[i];
                    // A warming-up member's count: taken before the call.
                    let counted = match &member.warming {
                        None => None,
                        Some(w) => match w.take(&member.name).await {
                            Ok(Some(day)) => day,
                            // Capped now: the pick skips it from here.
                            Ok(None) => {
                                self.released(i, Instant::now());
                                continue;
                            }
                            Err(e) => {
                                tracing::debug!(pool = self.name, member = member.name, "warm-up count: {e}");
                                self.released(i, Instant::now());
                                if !stop.sleep(Duration::from_millis(250)).await {
                                    return Reply::Stopped;
                                }
                                continue;
                            }
                        },
                    };
                    let reply = member
                        .lane
                        .deliver(message.clone(), cancelled.clone(), fence.clone(), spacing.clone())
                        .await;
                    let given = !matches!(reply, Reply::Delivered(_));
                    match &reply {
                        Reply::Delivered(Ok(Err(types::DeliveryError::Transient(e)))) if is_unreachable(e) => {
                            tracing::debug!(pool = self.name, member = member.name, "{e}");
                            self.unreachable(i, Instant::now());
                            give_back(member, counted).await;
                            tried.push(i);
                            last = Some(reply);
                            continue;
                        }
                        Reply::Delivered(Ok(answer)) => {
                            if self.pooled && answer.is_ok() {
                                member.delivered.increment(1);
                            }
                            self.reached(i)
                        }
                        _ => self.released(i, Instant::now()),
                    }
                    if given {
                        // Not called (cancelled, stopped, fenced).
                        give_back(member, counted).await;
                    }
                    return reply;
                }
                // Each second: the clock decides when the next day begins.
                Pick::Capped => {
                    if !stop.sleep(Duration::from_secs(1)).await {
                        return Reply::Stopped;
                    }
                    if cancelled.load(Ordering::Acquire) {
                        return Reply::Cancelled;
                    }
                }
                Pick::WaitUntil(at) => {
                    if !stop.sleep(at.saturating_duration_since(now)).await {
                        return Reply::Stopped;
                    }
                    if cancelled.load(Ordering::Acquire) {
                        return Reply::Cancelled;
                    }
                }
                Pick::Exhausted => return last.unwrap_or(Reply::Stopped),
            }
        }
    }
}

impl Route {
    /// The engine's clock, through any warming-up member.
    fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        (self.members.iter())
            .find_map(|m| m.warming.as_ref())
            .map_or_else(chrono::Utc::now, |w| w.clock.now())
    }
}

/// Gives a warming-up member's count back for a message it did not take
/// (best effort: a count not given back only sends less that day).
async fn give_back(member: &Member, counted: Option<NaiveDate>) {
    if let (Some(w), Some(day)) = (&member.warming, counted)
        && let Err(e) = w.store.give_back_warmup(member.name.clone(), day, 1).await
    {
        tracing::debug!(member = member.name, "warm-up count: {e}");
    }
}

/// Shared by every campaign naming the route.
pub(super) type Routes = std::collections::HashMap<String, Arc<Route>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_unreachable_calls_trip_it_then_one_probe_decides() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..TRIP_AFTER - 1 {
            b.unreachable(t0);
            assert!(b.take(t0), "still in");
        }
        b.reached();
        for _ in 0..TRIP_AFTER {
            assert!(b.take(t0));
            b.unreachable(t0);
        }
        assert_eq!(
            (b.trips, b.availability(t0)),
            (1, Availability::OutUntil(t0 + COOLDOWN))
        );
        assert!(!b.take(t0 + COOLDOWN / 2));
        let t1 = t0 + COOLDOWN;
        assert!(b.take(t1), "the probe");
        assert!(!b.take(t1), "one probe at a time");
        b.unreachable(t1);
        assert_eq!(b.availability(t1), Availability::OutUntil(t1 + COOLDOWN * 2), "doubled");
        let t2 = t1 + COOLDOWN * 2;
        assert!(b.take(t2));
        b.released(t2);
        assert!(b.take(t2), "a probe that told nothing hands its turn on");
        b.reached();
        assert!(b.is_up());
        assert_eq!(b.cooldown, COOLDOWN, "back to the first cool-down");
    }

    fn pool(weights: &[u32]) -> Route {
        let members = weights
            .iter()
            .enumerate()
            .map(|(i, w)| (format!("m{i}"), Lane::detached(), *w, None))
            .collect();
        Route::pool("p", members)
    }

    fn picks(r: &Route, n: usize, now: Instant) -> Vec<usize> {
        (0..n)
            .map(|_| match r.pick(&[], now, None) {
                Pick::Member(i) => {
                    r.reached(i);
                    i
                }
                _ => panic!("no member"),
            })
            .collect()
    }

    #[test]
    fn weights_interleave_and_a_member_out_is_skipped_until_its_probe() {
        let now = Instant::now();
        let r = pool(&[3, 1]);
        assert_eq!(picks(&r, 8, now), [0, 0, 1, 0, 0, 0, 1, 0]);
        // Member 1 unreachable three times: out; the others take it all.
        for _ in 0..TRIP_AFTER {
            r.unreachable(1, now);
        }
        assert!(picks(&r, 10, now).iter().all(|&i| i == 0));
        assert!(matches!(r.pick(&[0], now, None), Pick::WaitUntil(t) if t == now + COOLDOWN));
        // After its cool-down it gets its share again, the first as a probe.
        let later = now + COOLDOWN;
        let got = picks(&r, 8, later);
        assert_eq!(got.iter().filter(|&&i| i == 1).count(), 2, "{got:?}");
        assert!(matches!(r.pick(&[0, 1], later, None), Pick::Exhausted));
    }

    #[test]
    fn the_cool_down_is_capped() {
        let mut now = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..TRIP_AFTER {
            b.unreachable(now);
        }
        for _ in 0..20 {
            now += MAX_COOLDOWN;
            assert!(b.take(now));
            b.unreachable(now);
        }
        assert_eq!(b.availability(now), Availability::OutUntil(now + MAX_COOLDOWN));
    }
}
