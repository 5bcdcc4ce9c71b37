//! Bounces and complaints: what they are, which message they belong to,
//! and the policy that turns them into suppressions.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Email;
use super::suppression::{Suppression, SuppressionReason};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BounceType {
    /// The address does not exist or will never accept mail (5xx).
    Hard,
    /// A temporary refusal (mailbox full, 4xx after the MTA gave up).
    Soft,
    /// The recipient reported the mail as spam (ARF feedback).
    Complaint,
}

impl BounceType {
    pub fn as_str(self) -> &'static str {
        match self {
            BounceType::Hard => "hard",
            BounceType::Soft => "soft",
            BounceType::Complaint => "complaint",
        }
    }
}

/// A bounce as stored: per address, and on its message when known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Bounce {
    pub email: String,
    #[serde(rename = "type")]
    pub kind: BounceType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The Posta message it answers, when it named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    pub at: DateTime<Utc>,
}

/// When bounces suppress an address (`[bounces]` in posta.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BouncePolicy {
    /// Soft bounces within `soft_window_days` that suppress the address.
    pub soft_limit: u32,
    pub soft_window_days: u32,
    /// A recipient the receiving server refuses for good while the
    /// transport delivers (SMTP 5xx at RCPT TO: a transport's `rejected`
    /// error) is recorded as a hard bounce, so the address is suppressed.
    /// Off: the message just fails.
    pub hard_on_reject: bool,
}

impl Bounce {
    /// The hard bounce a receiving server's refusal of `message`'s
    /// recipient is (`OutcomeKind::Rejected`).
    pub fn rejection(message: &super::message::MessageRecord, reason: Option<String>, at: DateTime<Utc>) -> Bounce {
        Bounce {
            email: super::suppression::normalize(&message.email),
            kind: BounceType::Hard,
            reason,
            message_id: Some(message.message_id.clone()),
            at,
        }
    }

    /// Ties a reported bounce to the message it names: its address and
    /// Message-ID become the message's, and the message counts it in
    /// `stats`. False when the message had a bounce of this kind already:
    /// the bounce is a duplicate and must change nothing else.
    pub fn attach(
        &mut self,
        message: &mut super::message::MessageRecord,
        stats: &mut super::Stats,
        now: DateTime<Utc>,
    ) -> bool {
        self.email = super::suppression::normalize(&message.email);
        self.message_id = Some(message.message_id.clone());
        message.mark_bounce(stats, self.kind, self.reason.clone(), now)
    }
}

impl Default for BouncePolicy {
    fn default() -> Self {
        BouncePolicy {
            soft_limit: 3,
            soft_window_days: 30,
            hard_on_reject: true,
        }
    }
}

impl BouncePolicy {
    /// Start of the window soft bounces are counted in.
    pub fn soft_since(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - Duration::days(i64::from(self.soft_window_days))
    }

    /// Whether this bounce suppresses its address, given how many soft
    /// bounces (this one included) the address had within the window.
    /// Hard bounces and complaints suppress at once.
    pub fn suppresses(&self, kind: BounceType, soft_in_window: u64) -> Option<SuppressionReason> {
        match kind {
            BounceType::Hard => Some(SuppressionReason::Bounced),
            BounceType::Complaint => Some(SuppressionReason::Complained),
            BounceType::Soft if soft_in_window >= u64::from(self.soft_limit.max(1)) => Some(SuppressionReason::Bounced),
            BounceType::Soft => None,
        }
    }

    /// The suppression a filed bounce causes, if any, given the soft
    /// bounces in its window (soft bounces only). An address that does not
    /// parse cannot be mailed, so it needs none (a report may name
    /// anything); its bounce is kept all the same.
    pub fn assess(&self, bounce: &Bounce, soft_in_window: Option<u64>, now: DateTime<Utc>) -> Option<Suppression> {
        let reason = self.suppresses(bounce.kind, soft_in_window.unwrap_or(0))?;
        let email = Email::parse(&bounce.email).ok()?;
        Some(Suppression::for_bounce(&email, reason, bounce, now))
    }
}

/// Bounces of one report stored per transaction: a few milliseconds of
/// the writer at most, so another user's write never waits long behind a
/// long report.
pub const REPORT_CHUNK: usize = 100;

/// An address's recent soft bounces, as many as the policy needs to
/// decide: the newest `soft_limit` times within the window. Stored per
/// address and updated in O(soft_limit) per bounce, so counting never
/// reads the address's whole history (a report naming one address
/// thousands of times was quadratic).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftWindow {
    /// Oldest first.
    recent: Vec<DateTime<Utc>>,
}

impl SoftWindow {
    /// The window as it stood before this record existed, from the
    /// address's stored bounces (read once, then kept up to date).
    pub fn from_history<'a>(bounces: impl IntoIterator<Item = &'a Bounce>, policy: &BouncePolicy) -> SoftWindow {
        let mut w = SoftWindow::default();
        for b in bounces {
            if b.kind == BounceType::Soft {
                w.recent.push(b.at);
            }
        }
        w.recent.sort();
        w.keep(policy);
        w
    }

    /// Adds a soft bounce at `at`; returns the soft bounces within the
    /// window as of `now`, this one included, counted up to the limit
    /// (past it the address is suppressed, and the exact count decides
    /// nothing).
    pub fn add(&mut self, at: DateTime<Utc>, policy: &BouncePolicy, now: DateTime<Utc>) -> u64 {
        let since = policy.soft_since(now);
        self.recent.retain(|t| *t >= since);
        let i = self.recent.partition_point(|t| *t <= at);
        self.recent.insert(i, at);
        self.keep(policy);
        self.recent.len() as u64
    }

    fn keep(&mut self, policy: &BouncePolicy) {
        let limit = policy.soft_limit.max(1) as usize;
        if self.recent.len() > limit {
            self.recent.drain(..self.recent.len() - limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_window_counts_to_the_limit_within_the_window() {
        let p = BouncePolicy::default();
        let now: DateTime<Utc> = "2026-06-10T09:00:00Z".parse().unwrap();
        let old = now - Duration::days(40);
        let mut w = SoftWindow::default();
        assert_eq!(w.add(old, &p, old), 1);
        assert_eq!(w.add(now, &p, now), 1, "forty days ago is outside the window");
        assert_eq!(w.add(now, &p, now), 2);
        assert_eq!(w.add(now, &p, now), 3);
        assert_eq!(w.add(now, &p, now), 3, "counted up to the limit");
        assert_eq!(w.recent.len(), 3, "and no more kept");
        let hard = Bounce {
            email: "a@example.org".into(),
            kind: BounceType::Hard,
            reason: None,
            message_id: None,
            at: now,
        };
        let soft = |at| Bounce {
            kind: BounceType::Soft,
            at,
            ..hard.clone()
        };
        let history = [soft(old), hard.clone(), soft(now - Duration::days(1))];
        let mut w = SoftWindow::from_history(&history, &p);
        assert_eq!(w.add(now, &p, now), 2);
    }

    #[test]
    fn hard_and_complaint_suppress_at_once_soft_at_the_limit() {
        let p = BouncePolicy::default();
        assert_eq!(p.suppresses(BounceType::Hard, 0), Some(SuppressionReason::Bounced));
        assert_eq!(
            p.suppresses(BounceType::Complaint, 0),
            Some(SuppressionReason::Complained)
        );
        assert_eq!(p.suppresses(BounceType::Soft, 2), None);
        assert_eq!(p.suppresses(BounceType::Soft, 3), Some(SuppressionReason::Bounced));
        let zero = BouncePolicy { soft_limit: 0, ..p };
        assert_eq!(zero.suppresses(BounceType::Soft, 1), Some(SuppressionReason::Bounced));
    }
}
