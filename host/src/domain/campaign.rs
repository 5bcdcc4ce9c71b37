//! Campaign records, their validation and their counters.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ab::{AbTest, AbTestSetup, AbWalk};
use super::lifecycle::{TransitionError, transition};
use super::tracking::LinkCount;
use super::webhook::EventKind;
use super::{
    Action, CampaignId, Email, FieldError, ListId, MessageId, SegmentId, Status, SubscriberId, UserId, validate_len,
};

/// Fastest `send_rate` accepted, emails per minute (over a million a
/// second: "as fast as possible" is no rate at all).
pub const MAX_SEND_RATE: u32 = 100_000_000;

/// Message counters. `pending` is derived: subscribers of the campaign that
/// have no message yet (or are waiting for their local time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    pub total: u64,
    pub pending: u64,
    pub queued: u64,
    pub sent: u64,
    pub failed: u64,
    pub skipped: u64,
    pub cancelled: u64,
    /// Messages whose delivery a crash interrupted and which were delivered
    /// again: the transport may have been called twice for each.
    #[serde(default)]
    pub possible_duplicates: u64,
    /// Messages that bounced (hard or soft) after being sent.
    #[serde(default)]
    pub bounced: u64,
    /// Messages their recipient reported as spam.
    #[serde(default)]
    pub complained: u64,
    /// Subscribers who opened (the pixel loaded, or a link clicked).
    #[serde(default)]
    pub opened: u64,
    /// Subscribers who clicked a tracked link.
    #[serde(default)]
    pub clicked: u64,
    /// Pixel loads, all told.
    #[serde(default)]
    pub opens: u64,
    /// Tracked link clicks, all told.
    #[serde(default)]
    pub clicks: u64,
}

impl Stats {
    pub fn finished(&self) -> u64 {
        self.sent + self.failed + self.skipped + self.cancelled
    }

    /// Recomputes `pending` from the other counters.
    pub fn with_pending(mut self) -> Stats {
        self.pending = self.total.saturating_sub(self.queued + self.finished());
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Campaign {
    pub id: CampaignId,
    pub user_id: UserId,
    pub name: String,
    pub subject: String,
    pub from_email: String,
    pub from_name: String,
    pub list_id: ListId,
    /// Sends to this segment of the list, as it is evaluated when the send
    /// starts, instead of the whole list.
    #[serde(default)]
    pub segment_id: Option<SegmentId>,
    pub html: String,
    pub text: String,
    /// Name of the transport in posta.toml.
    pub transport: String,
    /// Emails per minute; none means as fast as the transport allows.
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub send_rate: Option<u32>,
    pub send_at_local_time: bool,
    pub scheduled_at: Option<DateTime<Utc>>,
    /// A 1×1 image under `server.base_url` ends the HTML part; its loads
    /// count opens.
    #[serde(default)]
    pub track_opens: bool,
    /// The `http(s)` links written in the templates go through a signed
    /// redirect under `server.base_url` that counts clicks.
    #[serde(default)]
    pub track_clicks: bool,
    /// An A/B test of up to five variants on a share of the audience; the
    /// rest gets the winner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ab_test: Option<AbTest>,
    pub status: Status,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub stats: Stats,
}

/// Where a campaign's send stands: the engine's state, kept with the
/// campaign but not part of it as the API shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Subscribers of the list with ids up to this one (the list's newest
    /// when sending started) belong to the campaign.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub last_subscriber: u64,
    /// The highest subscriber id that already has a message.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cursor: u64,
    /// Subscribers waiting for their local time (due entries).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub planned: u64,
}

/// A campaign with its send's progress: the record the store keeps and
/// the engine drives. Stored as one flat JSON object, so records written
/// before the split read the same. It derefs to the campaign: a run is
/// that campaign, plus where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignRun {
    #[serde(flatten)]
    pub campaign: Campaign,
    #[serde(flatten)]
    pub progress: Progress,
    /// Clicks per tracked link, by index (`domain::tracking::Links`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link_clicks: Vec<LinkCount>,
    /// Where the walk stands in the campaign's A/B test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ab_walk: Option<AbWalk>,
}

impl std::ops::Deref for CampaignRun {
    type Target = Campaign;

    fn deref(&self) -> &Campaign {
        &self.campaign
    }
}

impl std::ops::DerefMut for CampaignRun {
    fn deref_mut(&mut self) -> &mut Campaign {
        &mut self.campaign
    }
}

impl From<Campaign> for CampaignRun {
    /// A campaign that has not started sending.
    fn from(campaign: Campaign) -> CampaignRun {
        CampaignRun {
            campaign,
            progress: Progress::default(),
            link_clicks: Vec::new(),
            ab_walk: None,
        }
    }
}

/// A lifecycle action under way on a run (`CampaignRun::begin`): checked
/// and applied to the record; `finish` completes it once the backend has
/// read what it needs.
#[must_use]
pub struct Change {
    from: Status,
    fixes_recipients: bool,
    /// The A/B test's winner this change picks.
    winner: Option<u8>,
}

impl Change {
    /// The send starts with this change: the backend reads the recipients
    /// (the list's highest subscriber id and its count, under whatever lock
    /// holds imports off) and passes them to `finish`.
    pub fn fixes_recipients(&self) -> bool {
        self.fixes_recipients
    }
}

impl CampaignRun {
    /// The first half of a lifecycle action: checks the transition and
    /// lets `edit` change the record (PATCH while draft).
    pub fn begin(&mut self, action: Action, edit: impl FnOnce(&mut Campaign)) -> Result<Change, TransitionError> {
        let from = self.status;
        self.status = transition(self.status, action)?;
        edit(&mut self.campaign);
        Ok(Change {
            from,
            fixes_recipients: self.status == Status::Sending && matches!(action, Action::Send { .. } | Action::Fire),
            winner: match action {
                Action::PickWinner { variant } => Some(variant),
                _ => None,
            },
        })
    }

    /// The second half: fixes the recipients when the send starts
    /// (`recipients` is `(last subscriber id, count)`, required then),
    /// stamps and validates the record. Returns the event the change
    /// announces, if any; the backend saves the run and emits it in the
    /// same transaction.
    pub fn finish(
        &mut self,
        change: Change,
        recipients: Option<(u64, u64)>,
        now: DateTime<Utc>,
    ) -> Result<Option<EventKind>, FieldError> {
        if change.fixes_recipients {
            let (last, total) = recipients.expect("a send that starts is given its recipients");
            self.begin_sending(last, total, now);
        }
        if let Some(v) = change.winner {
            self.choose_winner(v, now)?;
        }
        self.updated_at = now;
        self.validate()?;
        Ok(EventKind::of_transition(change.from, self.status))
    }

    /// Starts the send over the list's subscribers with ids up to
    /// `last_subscriber`, `total` of them.
    pub fn begin_sending(&mut self, last_subscriber: u64, total: u64, now: DateTime<Utc>) {
        self.progress = Progress {
            last_subscriber,
            ..Progress::default()
        };
        self.stats = Stats {
            total,
            ..Stats::default()
        }
        .with_pending();
        self.started_at = Some(now);
        self.start_ab(total, now);
    }

    /// Every subscriber has a message and no message waits for an outcome.
    pub fn exhausted(&self) -> bool {
        let p = &self.progress;
        p.cursor >= p.last_subscriber && p.planned == 0 && self.stats.queued == 0 && !self.ab_testing()
    }

    /// Whether the engine must take this campaign up at start: it is under
    /// way, or cancelled with messages still waiting for their outcome.
    pub fn needs_driving(&self) -> bool {
        self.status.is_under_way() || (self.status == Status::Cancelled && !self.exhausted())
    }

    /// Turns a sending campaign that is exhausted into sent; says whether
    /// it did.
    pub fn complete_if_done(&mut self, now: DateTime<Utc>) -> bool {
        if self.status == Status::Sending && self.exhausted() {
            self.status = transition(self.status, Action::Complete).expect("sending → sent");
            self.completed_at = Some(now);
            self.updated_at = now;
            return true;
        }
        false
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// POST /campaigns body.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignDraft {
    pub name: String,
    pub subject: String,
    pub from_email: String,
    #[serde(default)]
    pub from_name: String,
    /// Required unless `segment_id` is given (then it is the segment's
    /// list, and may be omitted).
    #[serde(default)]
    pub list_id: Option<ListId>,
    /// Send to this segment of the list instead of all of it.
    #[serde(default)]
    pub segment_id: Option<SegmentId>,
    #[serde(default)]
    pub html: String,
    #[serde(default)]
    pub text: String,
    /// Defaults to the configured default transport.
    #[serde(default)]
    pub transport: Option<String>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub send_rate: Option<u32>,
    #[serde(default)]
    pub send_at_local_time: bool,
    #[serde(default)]
    pub scheduled_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub track_opens: bool,
    #[serde(default)]
    pub track_clicks: bool,
    #[serde(default)]
    pub ab_test: Option<AbTestSetup>,
}

impl CampaignDraft {
    /// A plain-text draft to `list_id` with every optional field unset
    /// (tests and benchmarks start from it).
    pub fn minimal(list_id: ListId) -> CampaignDraft {
        CampaignDraft {
            name: "campaign".into(),
            subject: "subject".into(),
            from_email: "news@example.org".into(),
            from_name: String::new(),
            list_id: Some(list_id),
            segment_id: None,
            html: String::new(),
            text: "text".into(),
            transport: None,
            send_rate: None,
            send_at_local_time: false,
            scheduled_at: None,
            track_opens: false,
            track_clicks: false,
            ab_test: None,
        }
    }
}

/// The list a campaign sends to: `list_id`, or the segment's list when
/// only the segment is named. A segment of another list is refused.
pub fn audience_list(list_id: Option<ListId>, segment: Option<&super::segment::Segment>) -> Result<ListId, FieldError> {
    match (list_id, segment) {
        (Some(list), Some(s)) if s.list_id != list => Err(FieldError::new(
            "list_id",
            format!(
                "segment {} is of list {}; give that list or leave list_id out",
                s.id.get(),
                s.list_id.get()
            ),
        )),
        (_, Some(s)) => Ok(s.list_id),
        (Some(list), None) => Ok(list),
        (None, None) => Err(FieldError::new("list_id", "required (or a segment_id)")),
    }
}

/// PATCH body: every field optional; `null` clears the optional ones.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignPatch {
    pub name: Option<String>,
    pub subject: Option<String>,
    pub from_email: Option<String>,
    pub from_name: Option<String>,
    pub list_id: Option<ListId>,
    /// A segment of the campaign's list; `null` sends to the whole list.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u64>)]
    pub segment_id: Option<Option<SegmentId>>,
    pub html: Option<String>,
    pub text: Option<String>,
    pub transport: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u32>)]
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub send_rate: Option<Option<u32>>,
    pub send_at_local_time: Option<bool>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub scheduled_at: Option<Option<DateTime<Utc>>>,
    pub track_opens: Option<bool>,
    pub track_clicks: Option<bool>,
    /// `null` removes the test.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<AbTestSetup>)]
    pub ab_test: Option<Option<AbTestSetup>>,
}

/// Distinguishes an absent field (None) from an explicit null (Some(None)).
fn double_option<'de, T, D>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

pub const MAX_SUBJECT: usize = 998;
pub const MAX_CAMPAIGN_NAME: usize = 256;
pub const MAX_BODY_BYTES: usize = 512 * 1024;

impl Campaign {
    /// Builds a draft from the API body; the caller has resolved the list
    /// (`CampaignDraft::list_id` is set: a segment's list when only the
    /// segment was named) and the transport name.
    pub fn from_draft(
        id: CampaignId,
        user_id: UserId,
        d: CampaignDraft,
        transport: String,
        now: DateTime<Utc>,
    ) -> Campaign {
        Campaign {
            id,
            user_id,
            name: d.name.trim().to_string(),
            subject: d.subject,
            from_email: d.from_email.trim().to_string(),
            from_name: d.from_name.trim().to_string(),
            // No list is list 0, which no user owns: the store refuses it.
            list_id: d.list_id.unwrap_or(ListId::new(0)),
            segment_id: d.segment_id,
            html: d.html,
            text: d.text,
            transport,
            send_rate: d.send_rate,
            send_at_local_time: d.send_at_local_time,
            scheduled_at: d.scheduled_at,
            track_opens: d.track_opens,
            track_clicks: d.track_clicks,
            ab_test: d.ab_test.map(AbTest::from),
            status: Status::Draft,
            created_at: now,
            updated_at: now,
            started_at: None,
            completed_at: None,
            stats: Stats::default(),
        }
    }

    pub fn apply(&mut self, p: CampaignPatch) {
        macro_rules! set {
            ($($f:ident),*) => { $(if let Some(v) = p.$f { self.$f = v; })* };
        }
        set!(
            name,
            subject,
            from_email,
            from_name,
            list_id,
            segment_id,
            html,
            text,
            transport,
            send_rate,
            send_at_local_time,
            scheduled_at,
            track_opens,
            track_clicks
        );
        if let Some(ab) = p.ab_test {
            self.ab_test = ab.map(AbTest::from);
        }
        self.name = self.name.trim().to_string();
        self.from_email = self.from_email.trim().to_string();
    }

    /// Field checks that need no storage; list, transport and template
    /// checks happen where those live.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.name.is_empty() {
            return Err(FieldError::new("name", "must not be empty"));
        }
        validate_len("name", &self.name, MAX_CAMPAIGN_NAME)?;
        if self.subject.trim().is_empty() {
            return Err(FieldError::new("subject", "must not be empty"));
        }
        validate_len("subject", &self.subject, MAX_SUBJECT)?;
        // Checked, not stored parsed: `Email` lower-cases the domain, and
        // campaigns stored before kept it as typed; their Message-IDs (the
        // transports' idempotency keys) must not change mid-send.
        Email::parse(&self.from_email).map_err(|e| e.at("from_email"))?;
        validate_len("from_name", &self.from_name, 256)?;
        if self.html.trim().is_empty() && self.text.trim().is_empty() {
            return Err(FieldError::new("html", "html or text must be given"));
        }
        for (field, body) in [("html", &self.html), ("text", &self.text)] {
            if body.len() > MAX_BODY_BYTES {
                return Err(FieldError::new(field, format!("larger than {MAX_BODY_BYTES} bytes")));
            }
        }
        if self.send_rate.is_some_and(|r| r == 0 || r > MAX_SEND_RATE) {
            return Err(FieldError::new(
                "send_rate",
                format!("must be between 1 and {MAX_SEND_RATE} emails per minute"),
            ));
        }
        if self.send_at_local_time && self.scheduled_at.is_none() {
            return Err(FieldError::new("send_at_local_time", "needs scheduled_at"));
        }
        if let Some(at) = self.scheduled_at {
            super::schedule::check_range(at).map_err(|m| FieldError::new("scheduled_at", m))?;
        }
        if let Some(ab) = &self.ab_test {
            ab.validate()?;
            let (tracked, what) = match ab.metric {
                super::ab::Metric::Opens => (self.track_opens, "opens: turn on track_opens"),
                super::ab::Metric::Clicks => (self.track_clicks, "clicks: turn on track_clicks"),
            };
            if !tracked {
                return Err(FieldError::new(
                    "ab_test.metric",
                    format!("the test is decided by {what}"),
                ));
            }
            if self.send_at_local_time {
                return Err(FieldError::new(
                    "ab_test",
                    "an A/B test sends the test first and the rest after it: not with send_at_local_time",
                ));
            }
            for (i, v) in self.variants().iter().enumerate() {
                if v.html.trim().is_empty() && v.text.trim().is_empty() {
                    return Err(FieldError::new(
                        format!("ab_test.variants[{i}].html"),
                        "the variant has neither html nor text",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The copy made by POST …/duplicate: same settings, fresh state.
    pub fn duplicate(&self, id: CampaignId, now: DateTime<Utc>) -> Campaign {
        let mut copy = Campaign {
            id,
            name: format!("{} (copy)", self.name),
            status: Status::Draft,
            created_at: now,
            updated_at: now,
            started_at: None,
            completed_at: None,
            stats: Stats::default(),
            ab_test: self.ab_test.as_ref().map(AbTest::fresh),
            ..self.clone()
        };
        if copy.name.chars().count() > MAX_CAMPAIGN_NAME {
            copy.name = copy.name.chars().take(MAX_CAMPAIGN_NAME).collect();
        }
        copy
    }

    /// Whether sending it now would schedule it instead: its start (for
    /// local-time sending, when UTC+14 reaches its time) lies after `now`.
    pub fn starts_after(&self, now: DateTime<Utc>) -> bool {
        super::schedule::start_at(self.scheduled_at, self.send_at_local_time).is_some_and(|t| t > now)
    }

    /// What POST …/send means for it at `now`: draft → scheduled when its
    /// start lies ahead, else draft → sending.
    pub fn send_action(&self, now: DateTime<Utc>) -> Action {
        Action::Send {
            future: self.starts_after(now),
        }
    }

    /// The stable Message-ID of this campaign's message to a subscriber. It
    /// doubles as the idempotency key, so it must never change across
    /// retries, restarts or resumes.
    pub fn message_id(&self, subscriber: SubscriberId) -> String {
        let domain = self
            .from_email
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or("posta.local");
        MessageId {
            campaign: self.id,
            subscriber,
        }
        .header(domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A draft of user 1 with the given id.
    fn campaign(id: u64, now: DateTime<Utc>) -> Campaign {
        Campaign::from_draft(CampaignId::new(id), UserId::new(1), draft(), "log".into(), now)
    }

    fn draft() -> CampaignDraft {
        CampaignDraft {
            name: "Launch".into(),
            subject: "Hi {{ subscriber.name }}".into(),
            from_email: "news@example.org".into(),
            from_name: "News".into(),
            list_id: Some(ListId::new(1)),
            segment_id: None,
            html: "<p>Hi</p>".into(),
            text: "Hi".into(),
            transport: None,
            send_rate: Some(600),
            send_at_local_time: true,
            scheduled_at: Some("2030-01-01T09:00:00Z".parse().unwrap()),
            track_opens: true,
            track_clicks: false,
            ab_test: None,
        }
    }

    #[test]
    fn progress_is_stored_flat_beside_the_campaign_and_never_shown() {
        let c = campaign(7, Utc::now());
        let run = CampaignRun {
            campaign: c.clone(),
            progress: Progress {
                last_subscriber: 10,
                cursor: 4,
                planned: 2,
            },
            link_clicks: Vec::new(),
            ab_walk: None,
        };
        let stored = serde_json::to_value(&run).unwrap();
        // Flat, as records were written before the split.
        assert_eq!(
            (stored["cursor"].as_u64(), stored["name"].as_str()),
            (Some(4), Some("Launch"))
        );
        assert_eq!(serde_json::from_value::<CampaignRun>(stored).unwrap(), run);
        let shown = serde_json::to_value(&c).unwrap();
        for field in ["cursor", "last_subscriber", "planned"] {
            assert!(shown.get(field).is_none(), "{field} in {shown}");
        }
    }

    #[test]
    fn a_sending_run_completes_once_every_subscriber_has_a_final_message() {
        let now = Utc::now();
        let mut run = CampaignRun::from(campaign(7, now));
        run.status = Status::Sending;
        run.progress = Progress {
            last_subscriber: 10,
            cursor: 10,
            planned: 0,
        };
        run.stats.queued = 1;
        assert!(!run.complete_if_done(now), "a message still waits");
        run.stats.queued = 0;
        run.progress.planned = 1;
        assert!(!run.complete_if_done(now), "a subscriber waits for their local time");
        run.progress.planned = 0;
        run.status = Status::Paused;
        assert!(!run.complete_if_done(now), "only a sending campaign completes");
        run.status = Status::Sending;
        assert!(run.complete_if_done(now));
        assert_eq!((run.status, run.completed_at), (Status::Sent, Some(now)));
        assert!(!run.complete_if_done(now), "once");
    }

    #[test]
    fn a_send_starts_from_the_first_subscriber_with_fresh_counts() {
        let now = Utc::now();
        let mut run = CampaignRun::from(campaign(7, now));
        run.progress.cursor = 5;
        run.stats.sent = 3;
        run.begin_sending(40, 30, now);
        assert_eq!(
            run.progress,
            Progress {
                last_subscriber: 40,
                cursor: 0,
                planned: 0
            }
        );
        assert_eq!((run.stats.total, run.stats.pending, run.stats.sent), (30, 30, 0));
        assert_eq!(run.started_at, Some(now));
    }

    #[test]
    fn duplicate_keeps_settings_and_resets_state() {
        let now = Utc::now();
        let mut c = campaign(7, now);
        c.status = Status::Sent;
        c.stats.sent = 5;
        c.started_at = Some(now);
        let d = c.duplicate(CampaignId::new(8), now);
        assert_eq!(d.name, "Launch (copy)");
        assert_eq!(d.status, Status::Draft);
        assert_eq!(d.stats, Stats::default());
        assert_eq!(d.started_at, None);
        assert_eq!(
            (
                &d.subject,
                &d.html,
                &d.text,
                d.list_id,
                &d.transport,
                d.send_rate,
                d.send_at_local_time,
                d.scheduled_at
            ),
            (
                &c.subject,
                &c.html,
                &c.text,
                c.list_id,
                &c.transport,
                c.send_rate,
                c.send_at_local_time,
                c.scheduled_at
            )
        );
    }

    #[test]
    fn validation_names_fields() {
        let now = Utc::now();
        let mut c = campaign(1, now);
        assert!(c.validate().is_ok());
        c.send_rate = Some(0);
        assert_eq!(c.validate().unwrap_err().field, "send_rate");
        c.send_rate = None;
        c.from_email = "nope".into();
        assert_eq!(c.validate().unwrap_err().field, "from_email");
    }

    #[test]
    fn patch_distinguishes_null_from_absent() {
        let now = Utc::now();
        let mut c = campaign(1, now);
        c.apply(serde_json::from_str(r#"{"name":"New"}"#).unwrap());
        assert_eq!((c.name.as_str(), c.send_rate), ("New", Some(600)));
        c.apply(serde_json::from_str(r#"{"send_rate":null}"#).unwrap());
        assert_eq!(c.send_rate, None);
    }

    #[test]
    fn message_ids_are_stable() {
        let c = campaign(3, Utc::now());
        assert_eq!(c.message_id(SubscriberId::new(42)), "posta.3.42@example.org");
        assert_eq!(c.message_id(SubscriberId::new(42)), c.message_id(SubscriberId::new(42)));
    }
}
