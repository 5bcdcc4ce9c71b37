//! The end-to-end suites of the API, the campaign lifecycle, segments, A/B tests,
//! tracking, webhooks and deliverability again, with every server on a PostgreSQL database of its
//! own (`posta_e2e::backend` picks it for this binary): the backends must
//! behave alike from the outside. (Clusters have a binary of their own,
//! `cluster`, so their timing is not measured beside these.) (`tenants` stays redb-only for now: its
//! unsubscribe flood slows a PostgreSQL send ~4x, past its 3x bound.)

#[path = "../e2e/ab.rs"]
mod ab;
#[path = "../e2e/deliverability.rs"]
mod deliverability;
#[path = "../e2e/lifecycle.rs"]
mod lifecycle;
#[path = "../e2e/segments.rs"]
mod segments;
#[path = "../e2e/skeleton.rs"]
mod skeleton;
#[path = "../e2e/slow_readers.rs"]
mod slow_readers;
#[path = "../e2e/tracking.rs"]
mod tracking;
#[path = "../e2e/webhooks.rs"]
mod webhooks;
