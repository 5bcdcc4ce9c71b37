//! Counting who is in a segment: its list scanned in one snapshot, each
//! subscriber tested by the compiled rules (`domain::segment::Filter`).
//! Memory stays flat whatever the list's size: the scan hands over one
//! subscriber at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use utoipa::ToSchema;

use super::{App, AppError};
use crate::domain::{SegmentId, SubscriberStatus, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct SegmentCount {
    /// Subscribers of the list the rules match, whatever their status.
    pub count: u64,
    /// Of those, the ones a campaign would send to (status `subscribed`).
    pub subscribed: u64,
}

pub async fn count(app: &App, user: UserId, id: SegmentId) -> Result<SegmentCount, AppError> {
    let segment = app.store.segment(user, id).await?;
    let filter = segment.filter()?;
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
