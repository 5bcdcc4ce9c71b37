//! A/B tests: a campaign's variants, who gets which, and the winner.
//!
//! When the send starts, `test_share` of the audience (as counted then)
//! is the test group, split evenly over the variants (`AbWalk::start`).
//! The engine's walk over the audience, in subscriber id order, picks
//! the group as it goes by sequential sampling (Knuth's algorithm S):
//! each subscriber is taken with probability (left to pick) / (left to
//! see), and given a variant with probability (its quota left) / (left to
//! pick), so exactly the quotas are filled in one pass with nothing stored
//! per subscriber. The draws are a hash of the run's seed and the
//! subscriber id. The sampling counters move in the same transaction as
//! the messages the walk makes, so a crash repeats or skips nobody.
//!
//! Once the test's messages are all done, the test is decided
//! `wait_minutes` later by `metric` (or earlier, by choice: `POST
//! …/ab/winner`). The walk then starts over for the rest, passing over
//! whoever already has a message: at most one message per subscriber
//! holds by construction, whatever happened during the test.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::campaign::{MAX_BODY_BYTES, MAX_SUBJECT};
use super::{Campaign, CampaignRun, FieldError, Status, SubscriberId, validate_len};

pub const MIN_VARIANTS: usize = 2;
pub const MAX_VARIANTS: usize = 5;
pub const MIN_SHARE: f64 = 0.05;
pub const MAX_SHARE: f64 = 0.5;
/// Longest wait before the test is decided: 30 days.
pub const MAX_WAIT_MINUTES: u32 = 30 * 24 * 60;

/// What a variant changes; a field left out is the campaign's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_name: Option<String>,
}

/// What decides the test: the share of each variant's recipients who
/// opened, or who clicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Opens,
    Clicks,
}

/// How the winner was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// By `metric`, `wait_minutes` after the test's messages were done.
    Metric,
    /// Picked through `POST …/ab/winner`.
    Choice,
}

/// The `ab_test` of a draft or a PATCH: the test as set up.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AbTestSetup {
    /// 2 to 5.
    pub variants: Vec<Variant>,
    /// The share of the audience the test goes to, 0.05 to 0.5.
    pub test_share: f64,
    pub metric: Metric,
    /// How long after the test's messages are done it is decided.
    #[schema(minimum = 1, maximum = 43_200)]
    pub wait_minutes: u32,
}

/// How one variant's test group responded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VariantResult {
    /// Test messages queued with this variant (skipped ones not counted).
    pub recipients: u64,
    /// Of those, subscribers who opened.
    pub opened: u64,
    /// Of those, subscribers who clicked.
    pub clicked: u64,
    /// `opened` or `clicked` (by the test's metric) over `recipients`.
    pub rate: f64,
}

/// A campaign's A/B test: its setup and, once the send started, how it
/// stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AbTest {
    pub variants: Vec<Variant>,
    pub test_share: f64,
    pub metric: Metric,
    pub wait_minutes: u32,
    /// Per variant, in order.
    #[serde(default)]
    pub results: Vec<VariantResult>,
    /// When the test is decided by its metric: set once its messages are
    /// all done.
    #[serde(default)]
    pub decides_at: Option<DateTime<Utc>>,
    /// The variant the rest of the audience gets, by index.
    #[serde(default)]
    pub winner: Option<u8>,
    #[serde(default)]
    pub decided_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub decided_by: Option<Decision>,
}

impl From<AbTestSetup> for AbTest {
    fn from(s: AbTestSetup) -> AbTest {
        AbTest {
            variants: s.variants,
            test_share: s.test_share,
            metric: s.metric,
            wait_minutes: s.wait_minutes,
            results: Vec::new(),
            decides_at: None,
            winner: None,
            decided_at: None,
            decided_by: None,
        }
    }
}

impl AbTest {
    /// The same setup, nothing sent (a duplicate's, or a new send's).
    pub fn fresh(&self) -> AbTest {
        AbTest {
            results: vec![VariantResult::default(); self.variants.len()],
            decides_at: None,
            winner: None,
            decided_at: None,
            decided_by: None,
            ..self.clone()
        }
    }

    /// Checks the setup; fields are named `ab_test.…`.
    pub fn validate(&self) -> Result<(), FieldError> {
        let n = self.variants.len();
        if !(MIN_VARIANTS..=MAX_VARIANTS).contains(&n) {
            return Err(FieldError::new(
                "ab_test.variants",
                format!("give {MIN_VARIANTS} to {MAX_VARIANTS} variants, not {n}"),
            ));
        }
        if !(MIN_SHARE..=MAX_SHARE).contains(&self.test_share) {
            return Err(FieldError::new(
                "ab_test.test_share",
                format!("must be between {MIN_SHARE} and {MAX_SHARE}"),
            ));
        }
        if !(1..=MAX_WAIT_MINUTES).contains(&self.wait_minutes) {
            return Err(FieldError::new(
                "ab_test.wait_minutes",
                format!("must be between 1 and {MAX_WAIT_MINUTES}"),
            ));
        }
        for (i, v) in self.variants.iter().enumerate() {
            let field = |name: &str| format!("ab_test.variants[{i}].{name}");
            if let Some(s) = &v.subject {
                if s.trim().is_empty() {
                    return Err(FieldError::new(
                        field("subject"),
                        "must not be empty (leave it out for the campaign's)",
                    ));
                }
                validate_len(&field("subject"), s, MAX_SUBJECT)?;
            }
            if let Some(s) = &v.from_name {
                validate_len(&field("from_name"), s, 256)?;
            }
            for (name, body) in [("html", &v.html), ("text", &v.text)] {
                if body.as_ref().is_some_and(|b| b.len() > MAX_BODY_BYTES) {
                    return Err(FieldError::new(
                        field(name),
                        format!("larger than {MAX_BODY_BYTES} bytes"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Records a test message queued with variant `v`.
    fn count_recipient(&mut self, v: u8) {
        if let Some(r) = self.results.get_mut(usize::from(v)) {
            r.recipients += 1;
        }
        self.refresh_rates();
    }

    /// Records a test recipient's first open or first click.
    pub fn count_engagement(&mut self, v: u8, first_open: bool, first_click: bool) {
        if let Some(r) = self.results.get_mut(usize::from(v)) {
            r.opened += u64::from(first_open);
            r.clicked += u64::from(first_click);
        }
        self.refresh_rates();
    }

    fn refresh_rates(&mut self) {
        let metric = self.metric;
        for r in &mut self.results {
            r.rate = if r.recipients == 0 {
                0.0
            } else {
                r.responded(metric) as f64 / r.recipients as f64
            };
        }
    }

    /// The variant with the highest rate of the metric; ties go to the
    /// first. Compared exactly, as fractions.
    pub fn best(&self) -> u8 {
        let mut best = 0;
        for (i, r) in self.results.iter().enumerate().skip(1) {
            let b = &self.results[best];
            let (a_num, a_den) = (u128::from(r.responded(self.metric)), u128::from(r.recipients.max(1)));
            let (b_num, b_den) = (u128::from(b.responded(self.metric)), u128::from(b.recipients.max(1)));
            if a_num * b_den > b_num * a_den {
                best = i;
            }
        }
        best as u8
    }
}

impl VariantResult {
    fn responded(&self, metric: Metric) -> u64 {
        match metric {
            Metric::Opens => self.opened,
            Metric::Clicks => self.clicked,
        }
    }
}

impl Campaign {
    /// The campaign as variant `v` of its A/B test sends it (itself when
    /// it has no such variant).
    pub fn with_variant(&self, v: Option<u8>) -> Campaign {
        let mut c = self.clone();
        let Some(variant) = v.and_then(|v| self.ab_test.as_ref()?.variants.get(usize::from(v))) else {
            return c;
        };
        macro_rules! take {
            ($($f:ident),*) => { $(if let Some(x) = &variant.$f { c.$f = x.clone(); })* };
        }
        take!(subject, html, text, from_name);
        c
    }

    /// Counts a test message queued with its variant.
    pub(super) fn count_test_recipient(&mut self, pick: Pick) {
        if let (true, Some(v), Some(ab)) = (pick.in_test, pick.variant, self.ab_test.as_mut()) {
            ab.count_recipient(v);
        }
    }

    /// Each variant's campaign, in order (none without an A/B test).
    pub fn variants(&self) -> Vec<Campaign> {
        let n = self.ab_test.as_ref().map_or(0, |ab| ab.variants.len());
        (0..n as u8).map(|v| self.with_variant(Some(v))).collect()
    }
}

/// Which content a recipient's message gets and whether it is part of the
/// test group (`CampaignRun::pick`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pick {
    /// The variant whose content it gets; none: the campaign's.
    pub variant: Option<u8>,
    pub in_test: bool,
}

/// The walk's side of an A/B test, kept with the run and never shown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbWalk {
    seed: u64,
    /// The audience as counted when the send started.
    audience: u64,
    /// Test members wanted per variant.
    quota: Vec<u64>,
    /// Test members picked per variant so far.
    picked: Vec<u64>,
    /// Audience members the test walk has passed.
    seen: u64,
    /// The walk is over the rest of the audience (the test was decided,
    /// or the campaign was cancelled).
    rest: bool,
}

impl AbWalk {
    /// Quotas for `audience` recipients: `share` of them, at least one
    /// per variant when there are that many, split evenly (the first
    /// variants take the remainder).
    fn start(ab: &AbTest, audience: u64, seed: u64) -> AbWalk {
        let n = ab.variants.len() as u64;
        let wanted = (ab.test_share * audience as f64).round() as u64;
        let k = wanted.max(n).min(audience);
        let quota = (0..n).map(|j| k / n + u64::from(j < k % n)).collect();
        AbWalk {
            seed,
            audience,
            quota,
            picked: vec![0; n as usize],
            seen: 0,
            rest: false,
        }
    }

    /// Whether the test walk takes subscriber `sub`, and with which
    /// variant; counts it as seen.
    fn sample(&mut self, sub: SubscriberId) -> Option<u8> {
        let left: u64 = self.quota.iter().zip(&self.picked).map(|(q, p)| q - p).sum();
        let unseen = self.audience.saturating_sub(self.seen).max(1);
        self.seen += 1;
        if left == 0 {
            return None;
        }
        let draw = uniform(self.seed, sub.get(), 0);
        if draw * (unseen as f64) >= left as f64 {
            return None;
        }
        // A variant with probability (its quota left) / left.
        let mut at = (uniform(self.seed, sub.get(), 1) * left as f64) as u64;
        for (j, (q, p)) in self.quota.iter().zip(self.picked.iter_mut()).enumerate() {
            let room = q - *p;
            if at < room {
                *p += 1;
                return Some(j as u8);
            }
            at -= room;
        }
        // Rounding put `at` at `left`: the last variant with room.
        let j = (0..self.quota.len()).rev().find(|&j| self.picked[j] < self.quota[j])?;
        self.picked[j] += 1;
        Some(j as u8)
    }
}

/// A draw in [0, 1) from (seed, subscriber, stream): splitmix64's mixer.
fn uniform(seed: u64, sub: u64, stream: u64) -> f64 {
    let mut z = seed ^ sub.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

impl CampaignRun {
    /// Sets up the test for a send starting over `audience` recipients.
    pub(super) fn start_ab(&mut self, audience: u64, now: DateTime<Utc>) {
        self.ab_walk = self.campaign.ab_test.as_mut().map(|ab| {
            *ab = ab.fresh();
            let seed = uniform(
                self.campaign.id.get(),
                now.timestamp_nanos_opt().unwrap_or_default() as u64,
                2,
            )
            .to_bits();
            AbWalk::start(ab, audience, seed)
        });
    }

    /// Whether the walk makes subscriber `sub` a message now, and with
    /// what: every recipient of a campaign without a test; in the test
    /// walk, the sampled test group; in the rest walk, whoever has no
    /// message yet (`has_message`, asked only then).
    pub fn pick<E>(
        &mut self,
        sub: SubscriberId,
        has_message: impl FnOnce() -> Result<bool, E>,
    ) -> Result<Option<Pick>, E> {
        let Some(walk) = self.ab_walk.as_mut() else {
            return Ok(Some(Pick::default()));
        };
        if walk.rest {
            if has_message()? {
                return Ok(None);
            }
            let winner = self.campaign.ab_test.as_ref().and_then(|ab| ab.winner);
            return Ok(Some(Pick {
                variant: winner,
                in_test: false,
            }));
        }
        Ok(walk.sample(sub).map(|v| Pick {
            variant: Some(v),
            in_test: true,
        }))
    }

    /// Whether the walk is over the rest of the audience (after the test).
    pub fn ab_rest(&self) -> bool {
        self.ab_walk.as_ref().is_some_and(|w| w.rest)
    }

    /// Whether an A/B test still holds the campaign's completion back.
    pub(super) fn ab_testing(&self) -> bool {
        self.ab_walk.as_ref().is_some_and(|w| !w.rest)
    }

    /// When the walk has something to do next though nothing is due now:
    /// the test's decision, once its messages are done.
    pub fn ab_due(&self) -> Option<DateTime<Utc>> {
        if !self.ab_testing() || self.status != Status::Sending {
            return None;
        }
        self.campaign.ab_test.as_ref()?.decides_at
    }

    /// Moves a test along at the start of a step: once the test walk has
    /// passed everyone and its messages are done, the decision is set
    /// for `wait_minutes` later; at that time the metric picks the winner
    /// and the rest walk starts. A cancelled campaign goes to the rest
    /// walk at once (its messages are cancelled ones). Says whether
    /// anything changed.
    pub fn advance_ab(&mut self, now: DateTime<Utc>) -> bool {
        if !self.ab_testing() {
            return false;
        }
        if self.status == Status::Cancelled {
            self.start_rest();
            return true;
        }
        if self.status != Status::Sending {
            return false;
        }
        let walked = self.progress.cursor >= self.progress.last_subscriber
            && self.progress.planned == 0
            && self.stats.queued == 0;
        let Some(ab) = self.campaign.ab_test.as_mut() else {
            return false;
        };
        match ab.decides_at {
            // Nobody got the test (every test member was skipped): there
            // is nothing to wait for.
            None if walked && ab.results.iter().all(|r| r.recipients == 0) => {
                self.decide(0, Decision::Metric, now);
                true
            }
            None if walked => {
                ab.decides_at = Some(now + chrono::Duration::minutes(i64::from(ab.wait_minutes)));
                true
            }
            Some(at) if at <= now => {
                let best = ab.best();
                self.decide(best, Decision::Metric, now);
                true
            }
            _ => false,
        }
    }

    /// Records the winner the rest of the audience gets, picked by choice
    /// (`Action::PickWinner`).
    pub(super) fn choose_winner(&mut self, v: u8, now: DateTime<Utc>) -> Result<(), FieldError> {
        let Some(ab) = self.campaign.ab_test.as_ref() else {
            return Err(FieldError::new("variant", "the campaign has no A/B test"));
        };
        if let Some(w) = ab.winner {
            return Err(FieldError::new("variant", format!("the winner is already variant {w}")));
        }
        if usize::from(v) >= ab.variants.len() {
            return Err(FieldError::new(
                "variant",
                format!("the test has variants 0 to {}", ab.variants.len() - 1),
            ));
        }
        if !self.ab_testing() {
            return Err(FieldError::new("variant", "the test has not started"));
        }
        self.decide(v, Decision::Choice, now);
        Ok(())
    }

    fn decide(&mut self, v: u8, by: Decision, now: DateTime<Utc>) {
        if let Some(ab) = self.campaign.ab_test.as_mut() {
            ab.winner = Some(v);
            ab.decided_at = Some(now);
            ab.decided_by = Some(by);
        }
        self.start_rest();
    }

    fn start_rest(&mut self) {
        if let Some(walk) = self.ab_walk.as_mut() {
            walk.rest = true;
            self.progress.cursor = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CampaignDraft, CampaignId, ListId, UserId};

    fn setup(n: usize, share: f64) -> AbTest {
        AbTest::from(AbTestSetup {
            variants: (0..n)
                .map(|i| Variant {
                    subject: Some(format!("subject {i}")),
                    ..Variant::default()
                })
                .collect(),
            test_share: share,
            metric: Metric::Opens,
            wait_minutes: 60,
        })
    }

    fn run(ab: AbTest, audience: u64, now: DateTime<Utc>) -> CampaignRun {
        let mut c = Campaign::from_draft(
            CampaignId::new(9),
            UserId::new(1),
            CampaignDraft::minimal(ListId::new(1)),
            "log".into(),
            now,
        );
        c.ab_test = Some(ab);
        c.track_opens = true;
        let mut run = CampaignRun::from(c);
        run.status = Status::Sending;
        run.begin_sending(audience, audience, now);
        run
    }

    /// Walks subscribers 1..=audience; returns the variant each got in
    /// the test walk.
    fn walk(run: &mut CampaignRun, audience: u64) -> Vec<Option<u8>> {
        (1..=audience)
            .map(|s| {
                let pick = run.pick::<()>(SubscriberId::new(s), || Ok(false)).unwrap();
                if let Some(p) = pick {
                    run.campaign.count_test_recipient(p);
                }
                run.progress.cursor = s;
                pick.and_then(|p| p.variant)
            })
            .collect()
    }

    #[test]
    fn the_test_group_is_the_share_split_evenly_and_varies_by_seed() {
        let now = Utc::now();
        for (audience, share, n, expected) in [
            (1000, 0.2, 2, 200),
            (1001, 0.1, 3, 100),
            (7, 0.05, 5, 5),
            (3, 0.5, 5, 3),
        ] {
            let mut r = run(setup(n, share), audience, now);
            let got = walk(&mut r, audience);
            let per: Vec<usize> = (0..n as u8)
                .map(|v| got.iter().filter(|g| **g == Some(v)).count())
                .collect();
            assert_eq!(per.iter().sum::<usize>(), expected, "{audience} × {share}: {per:?}");
            assert!(per.iter().max().unwrap() - per.iter().min().unwrap() <= 1, "{per:?}");
            let results: Vec<u64> = r
                .ab_test
                .as_ref()
                .unwrap()
                .results
                .iter()
                .map(|x| x.recipients)
                .collect();
            assert_eq!(results, per.iter().map(|p| *p as u64).collect::<Vec<_>>());
        }
        // Spread over the audience, not its first ids; another start draws
        // another group.
        let mut a = run(setup(2, 0.2), 1000, now);
        let first = walk(&mut a, 1000);
        assert!(
            first[500..].iter().filter(|v| v.is_some()).count() > 50,
            "picked late ids too"
        );
        let mut b = run(setup(2, 0.2), 1000, now + chrono::Duration::seconds(1));
        assert_ne!(first, walk(&mut b, 1000));
    }

    #[test]
    fn the_test_is_decided_after_the_wait_and_the_rest_skips_test_members() {
        let t0 = Utc::now();
        let mut r = run(setup(2, 0.5), 10, t0);
        let got = walk(&mut r, 10);
        r.progress.cursor = 9;
        assert!(!r.advance_ab(t0), "the walk is not at its end");
        let mut nobody = run(setup(2, 0.5), 10, t0);
        nobody.progress.cursor = 10;
        assert!(nobody.advance_ab(t0));
        assert_eq!(
            nobody.ab_test.as_ref().unwrap().winner,
            Some(0),
            "no test recipients: no wait"
        );
        r.progress.cursor = r.progress.last_subscriber;
        r.stats.queued = 1;
        assert!(!r.advance_ab(t0), "a test message is not done");
        r.stats.queued = 0;
        assert!(r.advance_ab(t0));
        assert_eq!(r.ab_due(), Some(t0 + chrono::Duration::minutes(60)));
        assert!(!r.exhausted(), "the test holds completion back");
        // Variant 1's recipients opened more.
        let ab = r.ab_test.as_mut().unwrap();
        ab.count_engagement(1, true, false);
        assert_eq!(ab.results[1].rate, 1.0 / ab.results[1].recipients as f64);
        assert!(!r.advance_ab(t0 + chrono::Duration::minutes(59)));
        assert!(r.advance_ab(t0 + chrono::Duration::minutes(60)));
        let ab = r.ab_test.as_ref().unwrap();
        assert_eq!((ab.winner, ab.decided_by), (Some(1), Some(Decision::Metric)));
        assert_eq!(r.progress.cursor, 0, "the rest walk starts over");
        for (s, v) in got.iter().enumerate() {
            let sub = SubscriberId::new(s as u64 + 1);
            let pick = r.pick::<()>(sub, || Ok(v.is_some())).unwrap();
            match v {
                Some(_) => assert_eq!(pick, None, "a test member gets nothing more"),
                None => assert_eq!(
                    pick,
                    Some(Pick {
                        variant: Some(1),
                        in_test: false
                    })
                ),
            }
        }
        r.progress.cursor = r.progress.last_subscriber;
        assert!(r.exhausted());
    }

    #[test]
    fn ties_go_to_the_first_and_rates_compare_exactly() {
        let mut ab = setup(3, 0.2).fresh();
        ab.results[0] = VariantResult {
            recipients: 3,
            opened: 1,
            ..VariantResult::default()
        };
        ab.results[1] = VariantResult {
            recipients: 6,
            opened: 2,
            ..VariantResult::default()
        };
        ab.results[2] = VariantResult {
            recipients: 9,
            opened: 3,
            ..VariantResult::default()
        };
        assert_eq!(ab.best(), 0);
        ab.results[2].opened = 4;
        assert_eq!(ab.best(), 2);
        ab.metric = Metric::Clicks;
        assert_eq!(ab.best(), 0, "nobody clicked: the first");
    }

    #[test]
    fn choosing_checks_the_variant_and_decides_once() {
        let now = Utc::now();
        let mut r = run(setup(2, 0.2), 100, now);
        assert_eq!(r.choose_winner(2, now).unwrap_err().field, "variant");
        r.choose_winner(1, now).unwrap();
        assert_eq!(r.ab_test.as_ref().unwrap().decided_by, Some(Decision::Choice));
        assert!(r.ab_rest());
        assert!(
            r.choose_winner(0, now)
                .unwrap_err()
                .message
                .contains("already variant 1")
        );
    }

    #[test]
    fn a_cancelled_test_walks_the_rest_to_cancel_it() {
        let now = Utc::now();
        let mut r = run(setup(2, 0.2), 100, now);
        r.progress.cursor = 40;
        r.status = Status::Cancelled;
        assert!(r.advance_ab(now));
        assert_eq!((r.ab_rest(), r.progress.cursor), (true, 0));
        assert_eq!(r.ab_test.as_ref().unwrap().winner, None);
    }

    #[test]
    fn setup_is_checked_field_by_field() {
        let mut ab = setup(2, 0.2);
        assert!(ab.validate().is_ok());
        ab.variants.push(Variant::default());
        ab.variants
            .extend([Variant::default(), Variant::default(), Variant::default()]);
        assert_eq!(ab.validate().unwrap_err().field, "ab_test.variants");
        ab.variants.truncate(2);
        ab.test_share = 0.6;
        assert_eq!(ab.validate().unwrap_err().field, "ab_test.test_share");
        ab.test_share = f64::NAN;
        assert_eq!(ab.validate().unwrap_err().field, "ab_test.test_share");
        ab.test_share = 0.05;
        ab.wait_minutes = 0;
        assert_eq!(ab.validate().unwrap_err().field, "ab_test.wait_minutes");
        ab.wait_minutes = 1;
        ab.variants[1].subject = Some(" ".into());
        assert_eq!(ab.validate().unwrap_err().field, "ab_test.variants[1].subject");
    }

    #[test]
    fn a_variant_overrides_only_what_it_gives() {
        let now = Utc::now();
        let mut c = run(setup(2, 0.2), 1, now).campaign;
        c.ab_test.as_mut().unwrap().variants[1].html = Some("<p>B</p>".into());
        let b = c.with_variant(Some(1));
        assert_eq!(
            (b.subject.as_str(), b.html.as_str(), b.text.as_str()),
            ("subject 1", "<p>B</p>", "text")
        );
        assert_eq!(c.with_variant(None), c);
        assert_eq!(c.with_variant(Some(7)), c);
        assert_eq!(c.variants().len(), 2);
    }
}
