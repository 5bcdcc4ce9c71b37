//! The storage contract: what the API, the dashboard, the engine, the CLI
//! and the webhook deliverer ask of storage, one async trait per concern,
//! declared once below. `Backend` gathers them with what a backend tells
//! the process around it; `store::Store` is one behind an `Arc`.
//!
//! Each operation keeps its meaning on both backends (`store::conformance`
//! runs one suite on the two). Each backend implements it with inherent
//! methods of the same names and arguments, and the adapters here are
//! generated from the one declaration: PostgreSQL's methods are awaited,
//! redb's run on the blocking pool (its commits fsync) — except the few
//! marked `inline`, point reads of hot pages that cost less than the hop
//! to a pool thread and back.
//!
//! Arguments are owned: a redb call moves them to a pool thread.

use chrono::{DateTime, NaiveDate, Utc};

use super::pg::PgStore;
use super::redb::Redb;
use super::{
    BouncePage, BounceReport, DueDelivery, KeyInfo, Page, Result, SuppressReport, SuppressionPage, UpsertReport,
};
use crate::domain::bounce::{Bounce, BouncePolicy};
use crate::domain::message::{MessageRecord, MessageStatus};
use crate::domain::segment::{Engaged, Segment, SegmentDraft, SegmentPatch};
use crate::domain::sender::SenderDomain;
use crate::domain::suppression::{Suppression, SuppressionReason};
use crate::domain::tracking::{Hit, LinkCount};
use crate::domain::webhook::{Attempt, Delivery, EventKind, Webhook};
use crate::domain::{
    Action, Campaign, CampaignDraft, CampaignId, CampaignPatch, DeliveryId, KeyId, List, ListId, MessageId,
    NewSubscriber, SegmentId, Status, Subscriber, SubscriberId, SubscriberPatch, SubscriberStatus, User, UserId,
    WebhookId,
};

/// Called once per subscriber of a scan, in id order; `false` ends it.
pub type Visit = Box<dyn FnMut(Subscriber) -> Result<bool> + Send>;

/// How many more deliveries a webhook may start now.
pub type Room = Box<dyn Fn(WebhookId) -> usize + Send>;

/// Whether a delivery is already under way in this process.
pub type Busy = Box<dyn Fn(DeliveryId) -> bool + Send>;

/// One redb call: on the blocking pool, or (`inline`) on the caller's task.
macro_rules! redb_call {
    (blocking, $r:ident, $call:expr) => {{
        let $r = $r.clone();
        super::blocking(move || $call).await
    }};
    (inline, $r:ident, $call:expr) => {
        $call
    };
}

/// Each trait, and its two adapters.
macro_rules! contract {
    ($(
        $(#[$tdoc:meta])*
        pub trait $concern:ident {
            $(
                $(#[$doc:meta])*
                $mode:ident fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty;
            )*
        }
    )*) => {
        $(
            $(#[$tdoc])*
            #[async_trait::async_trait]
            pub trait $concern: Send + Sync {
                $( $(#[$doc])* async fn $name(&self $(, $arg: $ty)*) -> $ret; )*
            }

            #[async_trait::async_trait]
            impl $concern for Redb {
                $(
                    async fn $name(&self $(, $arg: $ty)*) -> $ret {
                        let r = self;
                        redb_call!($mode, r, Redb::$name(&r $(, $arg)*))
                    }
                )*
            }

            #[async_trait::async_trait]
            impl $concern for PgStore {
                $(
                    async fn $name(&self $(, $arg: $ty)*) -> $ret {
                        PgStore::$name(self $(, $arg)*).await
                    }
                )*
            }
        )*
    };
}

contract! {
    /// Users, their API keys, their sender domains, and the process's
    /// secrets.
    pub trait Accounts {
        /// The named 32-byte secret, made on first use.
        blocking fn secret(&self, name: &'static str) -> Result<[u8; 32]>;
        /// A new user (the first is an admin) and its first key.
        blocking fn create_user(&self, email: String) -> Result<(User, String)>;
        blocking fn create_user_as(&self, email: String, admin: bool) -> Result<(User, String)>;
        /// Whose key this is; on every authenticated request.
        inline fn user_by_key(&self, key: String) -> Result<Option<User>>;
        blocking fn new_key(&self, email: String) -> Result<(User, String)>;
        blocking fn issue_key(&self, user: UserId) -> Result<(String, KeyInfo)>;
        blocking fn keys(&self, user: UserId) -> Result<Vec<KeyInfo>>;
        blocking fn revoke_key(&self, user: UserId, key: KeyId) -> Result<()>;
        blocking fn users(&self, after: Option<u64>, limit: usize) -> Result<Page<User>>;
        blocking fn user(&self, id: UserId) -> Result<User>;
        /// Revokes one key, or every key of the user with that email.
        blocking fn revoke(&self, key_or_email: String) -> Result<usize>;
        blocking fn user_count(&self) -> Result<u64>;
        blocking fn add_domain(&self, user: UserId, domain: String, now: DateTime<Utc>) -> Result<SenderDomain>;
        blocking fn remove_domain(&self, user: UserId, domain: String) -> Result<()>;
        blocking fn domains(&self, user: UserId) -> Result<Vec<SenderDomain>>;
    }

    /// Campaigns, their lifecycle and their messages (the queue that
    /// delivers them is the engine's: `store::queue`).
    pub trait Campaigns {
        blocking fn create_campaign(
            &self,
            user: UserId,
            draft: CampaignDraft,
            transport: String,
            now: DateTime<Utc>,
        ) -> Result<Campaign>;
        /// Any user's campaign: for the engine.
        blocking fn campaign_by_id(&self, id: CampaignId) -> Result<Campaign>;
        blocking fn campaign(&self, user: UserId, id: CampaignId) -> Result<Campaign>;
        blocking fn campaigns(
            &self,
            user: UserId,
            status: Option<Status>,
            after: Option<u64>,
            limit: usize,
        ) -> Result<Page<Campaign>>;
        /// A lifecycle step (`domain::CampaignRun`), stored with its event.
        blocking fn act(&self, user: UserId, id: CampaignId, action: Action, now: DateTime<Utc>) -> Result<Campaign>;
        blocking fn edit_campaign(
            &self,
            user: UserId,
            id: CampaignId,
            patch: CampaignPatch,
            now: DateTime<Utc>,
        ) -> Result<Campaign>;
        /// Sends now, or at its schedule: its recipients fixed from here on.
        blocking fn send(&self, user: UserId, id: CampaignId, now: DateTime<Utc>) -> Result<Campaign>;
        blocking fn duplicate_campaign(&self, user: UserId, id: CampaignId, now: DateTime<Utc>) -> Result<Campaign>;
        blocking fn delete_campaign(&self, user: UserId, id: CampaignId) -> Result<()>;
        /// Every campaign under way, for the engine to drive after a start.
        blocking fn active_campaigns(&self) -> Result<Vec<Campaign>>;
        blocking fn messages(
            &self,
            user: UserId,
            id: CampaignId,
            status: Option<MessageStatus>,
            after: Option<u64>,
            limit: usize,
        ) -> Result<Page<MessageRecord>>;
    }

    /// Lists and their subscribers.
    pub trait Audience {
        blocking fn create_list(&self, user: UserId, name: String) -> Result<List>;
        blocking fn list(&self, user: UserId, list: ListId) -> Result<List>;
        blocking fn lists(&self, user: UserId, after: Option<u64>, limit: usize) -> Result<Page<List>>;
        blocking fn delete_list(&self, user: UserId, list: ListId) -> Result<()>;
        blocking fn upsert_subscribers(&self, user: UserId, list: ListId, batch: Vec<NewSubscriber>)
            -> Result<UpsertReport>;
        blocking fn update_subscriber(
            &self,
            user: UserId,
            list: ListId,
            id: SubscriberId,
            patch: SubscriberPatch,
        ) -> Result<Subscriber>;
        blocking fn subscriber(&self, user: UserId, list: ListId, id: SubscriberId) -> Result<Subscriber>;
        blocking fn subscribers(
            &self,
            user: UserId,
            list: ListId,
            status: Option<SubscriberStatus>,
            after: Option<u64>,
            limit: usize,
        ) -> Result<Page<Subscriber>>;
        /// Every subscriber of the list in one snapshot, handed to `visit`.
        blocking fn scan_subscribers(&self, user: UserId, list: ListId, visit: Visit) -> Result<()>;
        /// The public unsubscribe link's effect.
        blocking fn unsubscribe(&self, campaign: CampaignId, id: SubscriberId) -> Result<()>;
    }

    /// Saved segments of a user's lists (`domain::segment`); a list's
    /// segments go with it.
    pub trait Segments {
        blocking fn create_segment(&self, user: UserId, draft: SegmentDraft, now: DateTime<Utc>) -> Result<Segment>;
        blocking fn segment(&self, user: UserId, id: SegmentId) -> Result<Segment>;
        blocking fn segments(&self, user: UserId, after: Option<u64>, limit: usize) -> Result<Page<Segment>>;
        blocking fn update_segment(
            &self,
            user: UserId,
            id: SegmentId,
            patch: SegmentPatch,
            now: DateTime<Utc>,
        ) -> Result<Segment>;
        blocking fn delete_segment(&self, user: UserId, id: SegmentId) -> Result<()>;
    }

    /// Opens and clicks (`domain::tracking`), recorded in batches by the
    /// tracking endpoints' recorder.
    pub trait Engagements {
        /// A batch of hits in one transaction; how many counted.
        blocking fn record_hits(&self, hits: Vec<Hit>) -> Result<usize>;
        /// Who got the owner's campaign, and who opened and clicked it
        /// (for segments' engagement rules).
        blocking fn engaged(&self, user: UserId, id: CampaignId) -> Result<Engaged>;
        /// The owner's campaign with its clicks per link.
        blocking fn link_clicks(&self, user: UserId, id: CampaignId) -> Result<(Campaign, Vec<LinkCount>)>;
    }

    /// Transports' messages per UTC day while they warm up
    /// (`domain::warmup`), shared by every node.
    pub trait Warmups {
        /// Takes up to `want` of `transport`'s `day`, at most `cap` in
        /// all; how many it got.
        blocking fn take_warmup(&self, transport: String, day: NaiveDate, cap: u64, want: u64) -> Result<u64>;
        /// Gives back what was taken and not sent.
        blocking fn give_back_warmup(&self, transport: String, day: NaiveDate, n: u64) -> Result<()>;
        /// Taken so far on `day`.
        blocking fn warmup_used(&self, transport: String, day: NaiveDate) -> Result<u64>;
    }

    /// A user's suppression list.
    pub trait Suppressions {
        blocking fn suppress(&self, user: UserId, items: Vec<Suppression>) -> Result<SuppressReport>;
        blocking fn unsuppress(&self, user: UserId, email: String) -> Result<()>;
        blocking fn suppression(&self, user: UserId, email: String) -> Result<Suppression>;
        blocking fn suppressions(
            &self,
            user: UserId,
            reason: Option<SuppressionReason>,
            after: Option<String>,
            limit: usize,
        ) -> Result<SuppressionPage>;
    }

    /// Bounces and complaints, and what they do to messages and
    /// suppressions (`domain::bounce::BouncePolicy`).
    pub trait Bounces {
        blocking fn bounces(&self, user: UserId, after: Option<(String, u64)>, limit: usize) -> Result<BouncePage>;
        blocking fn record_bounce(
            &self,
            user: UserId,
            bounce: Bounce,
            message: Option<MessageId>,
            policy: BouncePolicy,
            now: DateTime<Utc>,
        ) -> Result<BounceReport>;
        /// A whole report in one transaction; a report id seen before
        /// records nothing.
        blocking fn record_report(
            &self,
            user: UserId,
            report_id: Option<String>,
            bounces: Vec<(Bounce, Option<MessageId>)>,
            policy: BouncePolicy,
            now: DateTime<Utc>,
        ) -> Result<Vec<BounceReport>>;
    }

    /// Event webhooks and their delivery outbox.
    pub trait Webhooks {
        blocking fn create_webhook(
            &self,
            user: UserId,
            url: String,
            events: Vec<EventKind>,
            secret: String,
            now: DateTime<Utc>,
        ) -> Result<Webhook>;
        blocking fn webhooks(&self, user: UserId) -> Result<Vec<Webhook>>;
        blocking fn webhook(&self, user: UserId, id: WebhookId) -> Result<Webhook>;
        blocking fn delete_webhook(&self, user: UserId, id: WebhookId) -> Result<()>;
        blocking fn deliveries(&self, user: UserId, webhook: WebhookId, after: Option<u64>, limit: usize)
            -> Result<Page<Delivery>>;
        /// Deliveries due at `now` within each webhook's `room` and not
        /// `busy`, and when the next one falls due.
        blocking fn due_deliveries(
            &self,
            now: DateTime<Utc>,
            room: Room,
            busy: Busy,
        ) -> Result<(Vec<DueDelivery>, Option<DateTime<Utc>>)>;
        blocking fn finish_attempt(
            &self,
            webhook: WebhookId,
            id: DeliveryId,
            attempt: Attempt,
            delivered: bool,
            next: Option<DateTime<Utc>>,
        ) -> Result<()>;
        blocking fn prune_deliveries(&self, cutoff: DateTime<Utc>) -> Result<usize>;
    }
}
