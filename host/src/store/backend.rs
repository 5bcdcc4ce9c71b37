//! `Store`: what the API, the CLI and the webhook deliverer call, on
//! whichever backend the configuration chose — redb in the data directory
//! (the default) or PostgreSQL (`[database] url`).
//!
//! The calls are synchronous, as redb's are: callers already run them off
//! the async workers (`spawn_blocking`), where the PostgreSQL arm waits for
//! its query on the runtime the pool was opened on. Each operation keeps its
//! meaning on both (`store::conformance` runs one suite on the two); the
//! delivery queue is not here but in `engine::queue`, because on PostgreSQL
//! it belongs to a node, not to the database.

use chrono::{DateTime, Utc};

use super::{
    BouncePage, BounceReport, DueDelivery, KeyInfo, Page, Redb, Result, SuppressReport, SuppressionPage, UpsertReport,
};
use crate::domain::bounce::{Bounce, BouncePolicy};
use crate::domain::message::{MessageRecord, MessageStatus};
use crate::domain::sender::SenderDomain;
use crate::domain::suppression::{Suppression, SuppressionReason};
use crate::domain::webhook::{Attempt, Delivery, EventKind, Webhook};
use crate::domain::{
    Action, Campaign, CampaignDraft, CampaignId, CampaignPatch, DeliveryId, KeyId, List, ListId, MessageId,
    NewSubscriber, Status, Subscriber, SubscriberId, SubscriberPatch, SubscriberStatus, User, UserId, WebhookId,
};

#[derive(Clone)]
pub enum Store {
    Redb(Redb),
    Pg(std::sync::Arc<Pg>),
}

/// The PostgreSQL store and the runtime its pool's connections live on.
pub struct Pg {
    pub store: super::pg::PgStore,
    rt: tokio::runtime::Handle,
}

impl Pg {
    /// Runs a query to completion from synchronous code: a blocking thread
    /// or a multi-threaded runtime's worker (which `block_in_place` hands
    /// its other tasks off from first).
    fn wait<F: std::future::Future>(&self, f: F) -> F::Output {
        tokio::task::block_in_place(|| self.rt.block_on(f))
    }
}

impl Store {
    /// redb at `path`, with the default page cache.
    pub fn open(path: &std::path::Path) -> Result<Store> {
        Redb::open(path).map(Store::Redb)
    }

    pub fn open_with_cache(path: &std::path::Path, cache_bytes: usize) -> Result<Store> {
        Redb::open_with_cache(path, cache_bytes).map(Store::Redb)
    }

    /// The PostgreSQL database at `url`, its schema brought up to date.
    /// Queries made through this `Store` run on the current runtime.
    pub async fn connect(url: &str, max_connections: usize) -> Result<Store> {
        let store = super::pg::PgStore::connect(url, max_connections).await?;
        Ok(Store::Pg(std::sync::Arc::new(Pg {
            store,
            rt: tokio::runtime::Handle::current(),
        })))
    }

    /// The PostgreSQL store, when that is the backend.
    pub fn pg(&self) -> Option<&super::pg::PgStore> {
        match self {
            Store::Pg(pg) => Some(&pg.store),
            Store::Redb(_) => None,
        }
    }

    /// What the process's loops last found storage to be (`health`).
    pub fn health(&self) -> &std::sync::Arc<super::health::Health> {
        match self {
            Store::Redb(r) => &r.health,
            Store::Pg(pg) => pg.store.health(),
        }
    }

    /// Whether reads are local (redb, in this process's page cache) rather
    /// than a round trip to a database server.
    pub fn is_local(&self) -> bool {
        matches!(self, Store::Redb(_))
    }

    /// Resolves when webhook events may have been written since the last
    /// call. redb signals its own commits. On PostgreSQL any node may have
    /// written them, so the deliverer looks every quarter second (an
    /// indexed query for due rows; the events' wait is bounded by it).
    pub async fn outbox_written(&self) {
        match self {
            Store::Redb(s) => s.outbox_written().await,
            Store::Pg(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    }
}

/// Each listed operation, forwarded to the backend's method of the same
/// name and arguments (PostgreSQL's awaited).
macro_rules! forward {
    ($(fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty;)*) => {
        impl Store {
            $(
                pub fn $name(&self $(, $arg: $ty)*) -> $ret {
                    match self {
                        Store::Redb(s) => s.$name($($arg),*),
                        Store::Pg(s) => s.wait(s.store.$name($($arg),*)),
                    }
                }
            )*
        }
    };
}

forward! {
    fn secret(&self, name: &str) -> Result<[u8; 32]>;

    fn create_user(&self, email: &str) -> Result<(User, String)>;
    fn create_user_as(&self, email: &str, admin: bool) -> Result<(User, String)>;
    fn user_by_key(&self, key: &str) -> Result<Option<User>>;
    fn new_key(&self, email: &str) -> Result<(User, String)>;
    fn issue_key(&self, user: UserId) -> Result<(String, KeyInfo)>;
    fn keys(&self, user: UserId) -> Result<Vec<KeyInfo>>;
    fn revoke_key(&self, user: UserId, key: KeyId) -> Result<()>;
    fn users(&self, after: Option<u64>, limit: usize) -> Result<Page<User>>;
    fn user(&self, id: UserId) -> Result<User>;
    fn revoke(&self, key_or_email: &str) -> Result<usize>;
    fn user_count(&self) -> Result<u64>;
    fn add_domain(&self, user: UserId, domain: &str, now: DateTime<Utc>) -> Result<SenderDomain>;
    fn remove_domain(&self, user: UserId, domain: &str) -> Result<()>;
    fn domains(&self, user: UserId) -> Result<Vec<SenderDomain>>;

    fn bounces(&self, user: UserId, after: Option<(&str, u64)>, limit: usize) -> Result<BouncePage>;
    fn record_bounce(
        &self,
        user: UserId,
        bounce: Bounce,
        message: Option<MessageId>,
        policy: &BouncePolicy,
        now: DateTime<Utc>,
    ) -> Result<BounceReport>;
    fn record_report(
        &self,
        user: UserId,
        report_id: Option<&str>,
        bounces: Vec<(Bounce, Option<MessageId>)>,
        policy: &BouncePolicy,
        now: DateTime<Utc>,
    ) -> Result<Vec<BounceReport>>;

    fn create_campaign(&self, user: UserId, draft: CampaignDraft, transport: String, now: DateTime<Utc>)
        -> Result<Campaign>;
    fn campaign_by_id(&self, id: CampaignId) -> Result<Campaign>;
    fn campaign(&self, user: UserId, id: CampaignId) -> Result<Campaign>;
    fn campaigns(&self, user: UserId, status: Option<Status>, after: Option<u64>, limit: usize)
        -> Result<Page<Campaign>>;
    fn act(&self, user: UserId, id: CampaignId, action: Action, now: DateTime<Utc>) -> Result<Campaign>;
    fn edit_campaign(&self, user: UserId, id: CampaignId, patch: CampaignPatch, now: DateTime<Utc>) -> Result<Campaign>;
    fn send(&self, user: UserId, id: CampaignId, now: DateTime<Utc>) -> Result<Campaign>;
    fn duplicate_campaign(&self, user: UserId, id: CampaignId, now: DateTime<Utc>) -> Result<Campaign>;
    fn delete_campaign(&self, user: UserId, id: CampaignId) -> Result<()>;
    fn active_campaigns(&self) -> Result<Vec<Campaign>>;
    fn messages(
        &self,
        user: UserId,
        id: CampaignId,
        status: Option<MessageStatus>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Page<MessageRecord>>;

    fn create_list(&self, user: UserId, name: &str) -> Result<List>;
    fn list(&self, user: UserId, list: ListId) -> Result<List>;
    fn lists(&self, user: UserId, after: Option<u64>, limit: usize) -> Result<Page<List>>;
    fn delete_list(&self, user: UserId, list: ListId) -> Result<()>;
    fn upsert_subscribers(&self, user: UserId, list: ListId, batch: Vec<NewSubscriber>) -> Result<UpsertReport>;
    fn update_subscriber(&self, user: UserId, list: ListId, id: SubscriberId, patch: SubscriberPatch)
        -> Result<Subscriber>;
    fn subscriber(&self, user: UserId, list: ListId, id: SubscriberId) -> Result<Subscriber>;
    fn subscribers(
        &self,
        user: UserId,
        list: ListId,
        status: Option<SubscriberStatus>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Page<Subscriber>>;
    fn scan_subscribers(&self, user: UserId, list: ListId, f: impl FnMut(Subscriber) -> Result<bool>) -> Result<()>;
    fn unsubscribe(&self, campaign: CampaignId, id: SubscriberId) -> Result<()>;

    fn suppress(&self, user: UserId, items: &[Suppression]) -> Result<SuppressReport>;
    fn unsuppress(&self, user: UserId, email: &str) -> Result<()>;
    fn suppression(&self, user: UserId, email: &str) -> Result<Suppression>;
    fn suppressions(&self, user: UserId, reason: Option<SuppressionReason>, after: Option<&str>, limit: usize)
        -> Result<SuppressionPage>;

    fn create_webhook(&self, user: UserId, url: String, events: Vec<EventKind>, secret: String, now: DateTime<Utc>)
        -> Result<Webhook>;
    fn webhooks(&self, user: UserId) -> Result<Vec<Webhook>>;
    fn webhook(&self, user: UserId, id: WebhookId) -> Result<Webhook>;
    fn delete_webhook(&self, user: UserId, id: WebhookId) -> Result<()>;
    fn deliveries(&self, user: UserId, webhook: WebhookId, after: Option<u64>, limit: usize)
        -> Result<Page<Delivery>>;
    fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        room: impl Fn(WebhookId) -> usize,
        busy: impl Fn(DeliveryId) -> bool,
    ) -> Result<(Vec<DueDelivery>, Option<DateTime<Utc>>)>;
    fn finish_attempt(
        &self,
        webhook: WebhookId,
        id: DeliveryId,
        attempt: Attempt,
        delivered: bool,
        next: Option<DateTime<Utc>>,
    ) -> Result<()>;
    fn prune_deliveries(&self, cutoff: DateTime<Utc>) -> Result<usize>;
}
