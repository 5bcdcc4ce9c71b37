//! The message model: one subscriber's message of one campaign, how it
//! starts (queued, skipped or cancelled), how a transport's outcome
//! settles it and how a bounce marks it. Each change comes with its count
//! in the campaign's stats, so the store only has to write both in one
//! transaction for them to agree.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ab::Pick;
use super::bounce::{Bounce, BounceType};
use super::suppression::SuppressionReason;
use super::webhook::{EventKind, bounce_data, message_data};
use super::{Campaign, CampaignId, MessageId, Stats, Status, Subscriber, SubscriberId, SubscriberStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    Queued,
    Sent,
    Failed,
    Skipped,
    Cancelled,
}

impl MessageStatus {
    const ALL: [MessageStatus; 5] = [
        MessageStatus::Queued,
        MessageStatus::Sent,
        MessageStatus::Failed,
        MessageStatus::Skipped,
        MessageStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Queued => "queued",
            MessageStatus::Sent => "sent",
            MessageStatus::Failed => "failed",
            MessageStatus::Skipped => "skipped",
            MessageStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<MessageStatus> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// One subscriber's message of one campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MessageRecord {
    pub subscriber_id: SubscriberId,
    pub email: String,
    pub message_id: String,
    pub status: MessageStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// The transport's id for the delivery, when it gave one.
    pub remote_id: Option<String>,
    /// Set when a crash interrupted this message's delivery, so the
    /// transport may have been called more than once.
    #[serde(default)]
    pub possible_duplicate: bool,
    /// For local-time campaigns: when the subscriber's wall clock showed
    /// the campaign's time.
    #[serde(default)]
    pub due_at: Option<DateTime<Utc>>,
    /// Why a `skipped` message was not sent: the subscriber's status in
    /// the list (`unsubscribed`, `bounced`, …) or the user's suppression
    /// list (`suppressed: REASON`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
    /// Bounces and complaints reported for this message, at most one of
    /// each type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bounces: Vec<MessageBounce>,
    /// When the transport took it (status `sent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<DateTime<Utc>>,
    /// Its opens and clicks, for a campaign that tracks them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engagement: Option<super::tracking::Engagement>,
    /// The A/B test variant whose content it has (by index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<u8>,
    /// Sent as part of the A/B test (not to the rest after it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_test: bool,
    pub updated_at: DateTime<Utc>,
}

/// A bounce or complaint on its message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MessageBounce {
    #[serde(rename = "type")]
    pub kind: BounceType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// A message handed to the delivery workers.
#[derive(Debug, Clone)]
pub struct Job {
    pub campaign_id: CampaignId,
    pub subscriber: Subscriber,
    /// Transport calls already made for this message (before a stop or
    /// crash): `max_attempts` counts them too.
    pub attempts: u32,
    /// The A/B test variant whose content it gets.
    pub variant: Option<u8>,
}

impl Job {
    /// The job delivering `record` (new, or left queued) to `subscriber`.
    pub fn of(campaign_id: CampaignId, record: &MessageRecord, subscriber: Subscriber) -> Job {
        Job {
            campaign_id,
            subscriber,
            attempts: record.attempts,
            variant: record.variant,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum OutcomeKind {
    Sent {
        remote_id: Option<String>,
    },
    Failed {
        error: String,
    },
    /// Failed because the receiving server refused the recipient for good;
    /// also recorded as a hard bounce of the address.
    Rejected {
        error: String,
    },
    /// The campaign was cancelled before the transport was called.
    Cancelled,
    /// Not final: a transient failure, retried after a backoff. Stores the
    /// attempts so far, so a restart does not start counting again.
    Retrying {
        error: String,
    },
    /// Not final: the server is stopping and the retry was put off before
    /// it called the transport; the message leaves `in_flight` for
    /// `deferred` and is delivered again, unflagged, after the next start.
    Deferred,
}

impl OutcomeKind {
    /// Whether the message's job ends with this outcome (the engine counts
    /// it out of the campaign's in-flight messages once stored).
    pub fn ends_job(&self) -> bool {
        !matches!(self, OutcomeKind::Retrying { .. })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub campaign_id: CampaignId,
    pub subscriber_id: SubscriberId,
    pub attempts: u32,
    pub kind: OutcomeKind,
}

/// What storing an outcome did to a queued message.
#[derive(Debug, Clone, PartialEq)]
pub enum Settled {
    /// Still queued; the attempt's error is kept.
    Retrying,
    /// Still queued, put off until the next start.
    Deferred,
    /// Sent, failed or cancelled, and counted in the campaign's stats.
    Final(Ended),
}

/// What a final outcome does beyond its message and counters; the backend
/// stores both in the transaction that stores the message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ended {
    /// The events it announces, with their data: `message.failed` for a
    /// failure or rejection, then `message.bounced` for a rejection.
    /// (Failures are few, so their data is built whether or not a webhook
    /// wants it.)
    pub events: Vec<(EventKind, serde_json::Value)>,
    /// A rejection's hard bounce, to file under its address with the
    /// default policy: a hard bounce suppresses whatever the soft window.
    pub bounce: Option<Bounce>,
}

/// Longest remote id or error text stored on a message: whatever a plugin
/// returns, a stored message stays small.
pub const MAX_STORED_TEXT: usize = 1024;

/// `s` cut to at most `max` bytes (on a character boundary), saying how
/// long it was.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes)", &s[..cut], s.len())
}

impl MessageRecord {
    /// The message `sub` gets when campaign `c` reaches it, counted in
    /// `c.stats`: cancelled if the campaign is, skipped if the subscriber is
    /// not subscribed or `suppressed` names a reason (asked only when it
    /// matters), queued otherwise.
    pub fn create<E>(
        c: &mut Campaign,
        sub: &Subscriber,
        pick: Pick,
        suppressed: impl FnOnce() -> Result<Option<SuppressionReason>, E>,
        due_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<MessageRecord, E> {
        let (status, skip_reason) = if c.status == Status::Cancelled {
            c.stats.cancelled += 1;
            (MessageStatus::Cancelled, None)
        } else {
            let skip_reason = if sub.status != SubscriberStatus::Subscribed {
                Some(sub.status.as_str().to_string())
            } else {
                suppressed()?.map(|r| format!("suppressed: {}", r.as_str()))
            };
            if skip_reason.is_none() {
                c.stats.queued += 1;
                c.count_test_recipient(pick);
                (MessageStatus::Queued, None)
            } else {
                c.stats.skipped += 1;
                (MessageStatus::Skipped, skip_reason)
            }
        };
        Ok(MessageRecord {
            subscriber_id: sub.id,
            email: sub.email.to_string(),
            message_id: c.message_id(sub.id),
            status,
            attempts: 0,
            last_error: None,
            remote_id: None,
            possible_duplicate: false,
            due_at,
            skip_reason,
            bounces: Vec::new(),
            sent_at: None,
            engagement: None,
            variant: pick.variant,
            in_test: pick.in_test,
            updated_at: now,
        })
    }

    /// Applies a transport outcome to this message; `None` when it is no
    /// longer queued (an outcome arriving twice counts once). A final
    /// outcome is counted out of `stats.queued` into its status.
    pub fn settle(&mut self, o: &Outcome, stats: &mut Stats, now: DateTime<Utc>) -> Option<Settled> {
        if self.status != MessageStatus::Queued {
            return None;
        }
        self.attempts = o.attempts;
        self.updated_at = now;
        let (status, error) = match &o.kind {
            OutcomeKind::Retrying { error } => {
                self.last_error = Some(clip(error, MAX_STORED_TEXT));
                return Some(Settled::Retrying);
            }
            OutcomeKind::Deferred => return Some(Settled::Deferred),
            OutcomeKind::Sent { remote_id } => {
                self.remote_id = remote_id.as_deref().map(|r| clip(r, MAX_STORED_TEXT));
                self.sent_at = Some(now);
                stats.sent += 1;
                (MessageStatus::Sent, None)
            }
            OutcomeKind::Failed { error } | OutcomeKind::Rejected { error } => {
                stats.failed += 1;
                (MessageStatus::Failed, Some(error))
            }
            OutcomeKind::Cancelled => {
                stats.cancelled += 1;
                (MessageStatus::Cancelled, None)
            }
        };
        stats.queued -= 1;
        self.status = status;
        if let Some(error) = error {
            self.last_error = Some(clip(error, MAX_STORED_TEXT));
        }
        let mut ended = Ended::default();
        if status == MessageStatus::Failed {
            ended
                .events
                .push((EventKind::MessageFailed, message_data(o.campaign_id, self)));
        }
        if let OutcomeKind::Rejected { error } = &o.kind {
            let reason = Some(clip(error, MAX_STORED_TEXT));
            if self.mark_bounce(stats, BounceType::Hard, reason.clone(), now) {
                let bounce = Bounce::rejection(self, reason, now);
                let message = MessageId {
                    campaign: o.campaign_id,
                    subscriber: self.subscriber_id,
                };
                ended
                    .events
                    .push((EventKind::MessageBounced, bounce_data(&bounce, Some(message))));
                ended.bounce = Some(bounce);
            }
        }
        Some(Settled::Final(ended))
    }

    /// Records a bounce or complaint of `kind`, counted in `stats`; false
    /// when the message already has one of that kind. A message counts as
    /// bounced once, whether hard, soft or both.
    pub fn mark_bounce(
        &mut self,
        stats: &mut Stats,
        kind: BounceType,
        reason: Option<String>,
        now: DateTime<Utc>,
    ) -> bool {
        if self.bounces.iter().any(|b| b.kind == kind) {
            return false;
        }
        let first_bounce = !self.bounces.iter().any(|b| b.kind != BounceType::Complaint);
        match kind {
            BounceType::Complaint => stats.complained += 1,
            BounceType::Hard | BounceType::Soft if first_bounce => stats.bounced += 1,
            _ => {}
        }
        self.bounces.push(MessageBounce { kind, reason, at: now });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CampaignDraft;

    fn campaign(status: Status) -> Campaign {
        let draft: CampaignDraft = serde_json::from_value(serde_json::json!({
            "name": "n", "subject": "s", "from_email": "news@example.org", "list_id": 1
        }))
        .unwrap();
        let mut c = Campaign::from_draft(
            CampaignId::new(7),
            crate::domain::UserId::new(1),
            draft,
            "log".into(),
            Utc::now(),
        );
        c.status = status;
        c
    }

    fn subscriber(status: SubscriberStatus) -> Subscriber {
        let mut s: Subscriber = serde_json::from_value(serde_json::json!({
            "id": 3, "list_id": 1, "email": "a@example.org", "name": "", "timezone": null,
            "attributes": {}, "status": "subscribed",
            "created_at": Utc::now(), "updated_at": Utc::now()
        }))
        .unwrap();
        s.status = status;
        s
    }

    fn create(c: &mut Campaign, sub: SubscriberStatus, suppressed: Option<SuppressionReason>) -> MessageRecord {
        MessageRecord::create(
            c,
            &subscriber(sub),
            Pick::default(),
            || Ok::<_, ()>(suppressed),
            None,
            Utc::now(),
        )
        .unwrap()
    }

    #[test]
    fn a_message_starts_queued_skipped_or_cancelled_and_is_counted() {
        let mut c = campaign(Status::Sending);
        let m = create(&mut c, SubscriberStatus::Subscribed, None);
        assert_eq!((m.status, m.skip_reason.as_deref()), (MessageStatus::Queued, None));
        assert_eq!(m.message_id, "posta.7.3@example.org");
        let m = create(&mut c, SubscriberStatus::Unsubscribed, None);
        assert_eq!(
            (m.status, m.skip_reason.as_deref()),
            (MessageStatus::Skipped, Some("unsubscribed"))
        );
        let m = create(&mut c, SubscriberStatus::Subscribed, Some(SuppressionReason::Bounced));
        assert_eq!(m.skip_reason.as_deref(), Some("suppressed: bounced"));
        assert_eq!((c.stats.queued, c.stats.skipped), (1, 2));

        let mut cancelled = campaign(Status::Cancelled);
        let asked = std::cell::Cell::new(false);
        let m = MessageRecord::create(
            &mut cancelled,
            &subscriber(SubscriberStatus::Subscribed),
            Pick::default(),
            || {
                asked.set(true);
                Ok::<_, ()>(None)
            },
            None,
            Utc::now(),
        )
        .unwrap();
        assert_eq!((m.status, cancelled.stats.cancelled), (MessageStatus::Cancelled, 1));
        assert!(
            !asked.get(),
            "a cancelled campaign's message needs no suppression lookup"
        );
    }

    #[test]
    fn outcomes_settle_a_queued_message_once() {
        let mut c = campaign(Status::Sending);
        let mut m = create(&mut c, SubscriberStatus::Subscribed, None);
        let outcome = |attempts, kind| Outcome {
            campaign_id: CampaignId::new(7),
            subscriber_id: SubscriberId::new(3),
            attempts,
            kind,
        };
        let now = Utc::now();
        let retry = outcome(
            1,
            OutcomeKind::Retrying {
                error: "451 later".into(),
            },
        );
        assert_eq!(m.settle(&retry, &mut c.stats, now), Some(Settled::Retrying));
        assert_eq!((m.status, m.attempts, c.stats.queued), (MessageStatus::Queued, 1, 1));
        assert_eq!(m.last_error.as_deref(), Some("451 later"));

        let long = "x".repeat(5000);
        let sent = outcome(2, OutcomeKind::Sent { remote_id: Some(long) });
        assert_eq!(
            m.settle(&sent, &mut c.stats, now),
            Some(Settled::Final(Ended::default())),
            "a sent message announces nothing"
        );
        assert_eq!((m.status, c.stats.queued, c.stats.sent), (MessageStatus::Sent, 0, 1));
        assert!(m.remote_id.unwrap().ends_with("… (5000 bytes)"));
        m.remote_id = None;
        assert_eq!(m.settle(&sent, &mut c.stats, now), None, "a second outcome is ignored");
        assert_eq!(c.stats.sent, 1);

        let mut m = create(&mut c, SubscriberStatus::Subscribed, None);
        let rejected = outcome(
            1,
            OutcomeKind::Rejected {
                error: "550 no such user".into(),
            },
        );
        let Some(Settled::Final(ended)) = m.settle(&rejected, &mut c.stats, now) else {
            panic!("a rejection is final");
        };
        assert_eq!(
            (m.status, c.stats.failed, c.stats.bounced),
            (MessageStatus::Failed, 1, 1)
        );
        let kinds: Vec<EventKind> = ended.events.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, [EventKind::MessageFailed, EventKind::MessageBounced]);
        let bounce = ended.bounce.expect("a rejection is a hard bounce");
        assert_eq!(
            (bounce.kind, bounce.email.as_str()),
            (BounceType::Hard, "a@example.org")
        );

        let mut m = create(&mut c, SubscriberStatus::Subscribed, None);
        let failed = outcome(
            5,
            OutcomeKind::Failed {
                error: "timeout".into(),
            },
        );
        let Some(Settled::Final(ended)) = m.settle(&failed, &mut c.stats, now) else {
            panic!("a failure is final");
        };
        let kinds: Vec<EventKind> = ended.events.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, [EventKind::MessageFailed], "a failure is no bounce");
        assert!(ended.bounce.is_none());
    }

    #[test]
    fn a_message_counts_as_bounced_once_and_complained_apart() {
        let mut c = campaign(Status::Sent);
        let mut m = create(&mut c, SubscriberStatus::Subscribed, None);
        let now = Utc::now();
        assert!(m.mark_bounce(&mut c.stats, BounceType::Soft, None, now));
        assert!(m.mark_bounce(&mut c.stats, BounceType::Hard, None, now));
        assert!(!m.mark_bounce(&mut c.stats, BounceType::Hard, None, now));
        assert!(m.mark_bounce(&mut c.stats, BounceType::Complaint, None, now));
        assert_eq!((c.stats.bounced, c.stats.complained, m.bounces.len()), (1, 1, 3));
    }

    #[test]
    fn clipping_keeps_characters_whole() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("ééé", 3), "é… (6 bytes)");
    }
}
