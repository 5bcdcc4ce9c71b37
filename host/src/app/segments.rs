//! Counting who is in a segment: its list scanned in one snapshot, each
//! subscriber tested by the compiled rules (`domain::segment::Filter`).
//! Memory stays flat whatever the list's size: the scan hands over one
//! subscriber at a time; how many scans run at once is bounded per user
//! and in all.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use utoipa::ToSchema;

use super::{App, AppError};
use crate::domain::segment::{Segment, unknown_campaign};
use crate::domain::{SegmentId, SubscriberStatus, UserId};
use crate::quota::{Full, Place, Quota};
use crate::store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct SegmentCount {
    /// Subscribers of the list the rules match, whatever their status.
    pub count: u64,
    /// Of those, the ones a campaign would send to (status `subscribed`).
    pub subscribed: u64,
}

/// Counts one user may run at once …
pub const PER_USER: usize = 2;
/// … and all users together: a 1M-subscriber list takes seconds of one core.
pub const TOTAL: usize = 8;

pub fn scans() -> Arc<Quota<UserId>> {
    Quota::new(PER_USER, TOTAL)
}

/// A place for one more of `user`'s counts, or why not (answered 503 with
/// Retry-After: a count frees its place within seconds).
pub(super) fn place(scans: &Arc<Quota<UserId>>, user: UserId) -> Result<Place<UserId>, AppError> {
    scans.take(user).map_err(|full| {
        AppError::Busy(match full {
            Full::Key(n) => format!("{n} segment counts of yours are running; at most {PER_USER} at once"),
            Full::Total => "too many segment counts are running; try again shortly".into(),
        })
    })
}

pub async fn count(app: &App, user: UserId, id: SegmentId) -> Result<SegmentCount, AppError> {
    let segment = app.store.segment(user, id).await?;
    count_of(app, user, &segment).await
}

/// Counts who `segment`'s rules match, saved or not (the dashboard's
/// builder counts its form as it is typed).
pub async fn count_of(app: &App, user: UserId, segment: &Segment) -> Result<SegmentCount, AppError> {
    let _place = place(&app.scans, user)?;
    let mut filter = segment.filter()?;
    for (rule, campaign) in filter.needs() {
        match app.store.engaged(user, campaign).await {
            Ok(e) => filter.provide(campaign, e),
            Err(StoreError::NotFound) => return Err(unknown_campaign(rule, campaign).into()),
            Err(e) => return Err(e.into()),
        }
    }
    let (count, subscribed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (c, s) = (count.clone(), subscribed.clone());
    app.store
        .scan_subscribers(
            user,
            segment.list_id,
            Box::new(move |sub| {
                if filter.matches(&sub) {
                    c.fetch_add(1, Ordering::Relaxed);
                    if sub.status == SubscriberStatus::Subscribed {
                        s.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(true)
            }),
        )
        .await?;
    Ok(SegmentCount {
        count: count.load(Ordering::Relaxed),
        subscribed: subscribed.load(Ordering::Relaxed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_bounded_per_user_then_in_all() {
        let scans = Quota::new(1, 2);
        let (a, b, c) = (UserId::new(1), UserId::new(2), UserId::new(3));
        let first = place(&scans, a).unwrap();
        let Err(AppError::Busy(m)) = place(&scans, a) else {
            panic!("a's share is taken")
        };
        assert!(m.contains("of yours"), "{m}");
        let _b = place(&scans, b).unwrap();
        assert!(matches!(place(&scans, c), Err(AppError::Busy(m)) if m.contains("too many")));
        drop(first);
        assert!(place(&scans, c).is_ok(), "a finished count frees its place");
    }
}
