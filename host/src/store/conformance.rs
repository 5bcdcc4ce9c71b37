//! One behaviour, two backends: each scenario is written once against
//! `Backend` and runs on redb and on PostgreSQL (`store::pg`, against the
//! test server). A part of the store joins `Backend` when the PostgreSQL
//! store has it; the trait is the seam the server will later call through.

use super::{Page, Result, Store, StoreError, UpsertReport};
use crate::domain::{
    Email, List, ListId, NewSubscriber, Subscriber, SubscriberId, SubscriberPatch, SubscriberStatus, UserId,
};

/// What the scenarios call: the backends' own methods, awaited or not.
trait Backend {
    async fn create_list(&self, user: UserId, name: &str) -> Result<List>;
    async fn list(&self, user: UserId, list: ListId) -> Result<List>;
    async fn lists(&self, user: UserId, after: Option<u64>, limit: usize) -> Result<Page<List>>;
    async fn delete_list(&self, user: UserId, list: ListId) -> Result<()>;
    async fn upsert(&self, user: UserId, list: ListId, batch: Vec<NewSubscriber>) -> Result<UpsertReport>;
    async fn update_subscriber(
        &self,
        user: UserId,
        list: ListId,
        id: SubscriberId,
        patch: SubscriberPatch,
    ) -> Result<Subscriber>;
    async fn subscriber(&self, user: UserId, list: ListId, id: SubscriberId) -> Result<Subscriber>;
    async fn subscribers(
        &self,
        user: UserId,
        list: ListId,
        status: Option<SubscriberStatus>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Page<Subscriber>>;
}

/// Forwards each method to the type's own, appending `.await` for the
/// async backend.
macro_rules! forward {
    ($t:ty $(, $aw:tt)?) => {
        impl Backend for $t {
            async fn create_list(&self, user: UserId, name: &str) -> Result<List> {
                <$t>::create_list(self, user, name)$(.$aw)?
            }
            async fn list(&self, user: UserId, list: ListId) -> Result<List> {
                <$t>::list(self, user, list)$(.$aw)?
            }
            async fn lists(&self, user: UserId, after: Option<u64>, limit: usize) -> Result<Page<List>> {
                <$t>::lists(self, user, after, limit)$(.$aw)?
            }
            async fn delete_list(&self, user: UserId, list: ListId) -> Result<()> {
                <$t>::delete_list(self, user, list)$(.$aw)?
            }
            async fn upsert(&self, user: UserId, list: ListId, batch: Vec<NewSubscriber>) -> Result<UpsertReport> {
                <$t>::upsert_subscribers(self, user, list, batch)$(.$aw)?
            }
            async fn update_subscriber(
                &self,
                user: UserId,
                list: ListId,
                id: SubscriberId,
                patch: SubscriberPatch,
            ) -> Result<Subscriber> {
                <$t>::update_subscriber(self, user, list, id, patch)$(.$aw)?
            }
            async fn subscriber(&self, user: UserId, list: ListId, id: SubscriberId) -> Result<Subscriber> {
                <$t>::subscriber(self, user, list, id)$(.$aw)?
            }
            async fn subscribers(
                &self,
                user: UserId,
                list: ListId,
                status: Option<SubscriberStatus>,
                after: Option<u64>,
                limit: usize,
            ) -> Result<Page<Subscriber>> {
                <$t>::subscribers(self, user, list, status, after, limit)$(.$aw)?
            }
        }
    };
}

forward!(Store);
#[cfg(feature = "postgres")]
forward!(super::pg::PgStore, await);

const ALICE: UserId = UserId::new(1);
const BOB: UserId = UserId::new(2);

fn new(email: &str, status: SubscriberStatus) -> NewSubscriber {
    NewSubscriber {
        email: Email::parse(email).unwrap(),
        name: format!("name of {email}"),
        timezone: None,
        attributes: Default::default(),
        status,
    }
}

async fn lists_belong_to_their_user(s: &impl Backend) {
    let a1 = s.create_list(ALICE, "  Weekly  ").await.unwrap();
    let a2 = s.create_list(ALICE, "Monthly").await.unwrap();
    let b1 = s.create_list(BOB, "Bob's").await.unwrap();
    assert_eq!(a1.name, "Weekly");
    assert!(a1.id < a2.id);
    let page = s.lists(ALICE, None, 1).await.unwrap();
    assert_eq!(page.items.iter().map(|l| l.id).collect::<Vec<_>>(), [a1.id]);
    let rest = s.lists(ALICE, page.next_after, 10).await.unwrap();
    assert_eq!(rest.items.iter().map(|l| l.id).collect::<Vec<_>>(), [a2.id]);
    assert_eq!(rest.next_after, None);
    assert!(matches!(s.list(ALICE, b1.id).await, Err(StoreError::NotFound)));
    assert!(matches!(s.delete_list(BOB, a1.id).await, Err(StoreError::NotFound)));
    assert!(matches!(s.create_list(ALICE, "   ").await, Err(StoreError::Invalid(_))));
    assert!(matches!(
        s.create_list(ALICE, &"x".repeat(257)).await,
        Err(StoreError::Invalid(_))
    ));
    s.delete_list(ALICE, a1.id).await.unwrap();
    assert!(matches!(s.list(ALICE, a1.id).await, Err(StoreError::NotFound)));
    assert_eq!(s.lists(ALICE, None, 10).await.unwrap().items.len(), 1);
}

async fn upserts_create_update_and_keep_unsubscribes(s: &impl Backend) {
    use SubscriberStatus::*;
    let list = s.create_list(ALICE, "l").await.unwrap();
    let first = s
        .upsert(
            ALICE,
            list.id,
            vec![
                new("a@x.org", Subscribed),
                new("b@x.org", Unsubscribed),
                new("a@x.org", Subscribed),
            ],
        )
        .await
        .unwrap();
    assert_eq!((first.created, first.updated, first.kept_unsubscribed), (2, 1, 0));
    assert_eq!(
        first.subscribers[0].id, first.subscribers[2].id,
        "one address, one subscriber"
    );
    assert_eq!(s.list(ALICE, list.id).await.unwrap().subscriber_count, 2);

    let again = s
        .upsert(
            ALICE,
            list.id,
            vec![new("b@x.org", Subscribed), new("c@x.org", Bounced)],
        )
        .await
        .unwrap();
    assert_eq!((again.created, again.updated, again.kept_unsubscribed), (1, 1, 1));
    let b = s.subscriber(ALICE, list.id, again.subscribers[0].id).await.unwrap();
    assert_eq!(b.status, Unsubscribed, "an import never re-subscribes");
    assert_eq!(s.list(ALICE, list.id).await.unwrap().subscriber_count, 3);

    let patch = SubscriberPatch {
        name: None,
        timezone: Some("Europe/Paris".into()),
        attributes: None,
        status: Some(Subscribed),
    };
    let b = s.update_subscriber(ALICE, list.id, b.id, patch.clone()).await.unwrap();
    assert_eq!((b.status, b.timezone.as_deref()), (Subscribed, Some("Europe/Paris")));
    assert_eq!(b.status_changed.as_ref().map(|c| c.by.as_str()), Some("api"));
    assert_eq!(s.subscriber(ALICE, list.id, b.id).await.unwrap(), b);

    let missing = SubscriberId::new(b.id.get() + 1_000);
    assert!(matches!(
        s.subscriber(ALICE, list.id, missing).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.update_subscriber(ALICE, list.id, missing, patch.clone()).await,
        Err(StoreError::NotFound)
    ));
    // Another user's list: as missing as a list that never was.
    assert!(matches!(
        s.subscriber(BOB, list.id, b.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.upsert(BOB, list.id, vec![new("d@x.org", Subscribed)]).await,
        Err(StoreError::NotFound)
    ));
    let bad = SubscriberPatch {
        timezone: Some("Mars/Base".into()),
        ..patch
    };
    assert!(matches!(
        s.update_subscriber(ALICE, list.id, b.id, bad).await,
        Err(StoreError::Invalid(_))
    ));
}

async fn subscriber_pages_and_status_filters(s: &impl Backend) {
    use SubscriberStatus::*;
    let list = s.create_list(ALICE, "l").await.unwrap();
    let batch = (0..12)
        .map(|i| {
            new(
                &format!("s{i}@x.org"),
                if i % 4 == 0 { Unsubscribed } else { Subscribed },
            )
        })
        .collect();
    let stored = s.upsert(ALICE, list.id, batch).await.unwrap().subscribers;
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s.subscribers(ALICE, list.id, None, after, 5).await.unwrap();
        seen.extend(page.items.iter().map(|s| s.id));
        match page.next_after {
            Some(a) => after = Some(a),
            None => break,
        }
    }
    assert_eq!(seen, stored.iter().map(|s| s.id).collect::<Vec<_>>());
    let unsubscribed = s
        .subscribers(ALICE, list.id, Some(Unsubscribed), None, 10)
        .await
        .unwrap();
    let expected: Vec<_> = stored
        .iter()
        .filter(|s| s.status == Unsubscribed)
        .map(|s| s.id)
        .collect();
    assert_eq!(unsubscribed.items.iter().map(|s| s.id).collect::<Vec<_>>(), expected);
    assert_eq!(unsubscribed.next_after, None);
    let two = s
        .subscribers(ALICE, list.id, Some(Unsubscribed), None, 2)
        .await
        .unwrap();
    assert_eq!(two.items.len(), 2);
    assert_eq!(
        two.next_after,
        Some(expected[1].get()),
        "the cursor is the last row looked at"
    );
    assert!(matches!(
        s.subscribers(BOB, list.id, None, None, 10).await,
        Err(StoreError::NotFound)
    ));
}

macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod redb {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let (_dir, store) = crate::store::temp_store();
                    super::$scenario(&store).await;
                }
            )*
        }

        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let db = crate::store::pg::test_server::TestServer::get().database();
                    let store = crate::store::pg::PgStore::connect(&db.url, 4).await.unwrap();
                    super::$scenario(&store).await;
                }
            )*
        }
    };
}

conformance!(
    lists_belong_to_their_user,
    upserts_create_update_and_keep_unsubscribes,
    subscriber_pages_and_status_filters,
);
