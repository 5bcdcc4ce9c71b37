//! What a node does on PostgreSQL besides its own campaigns' steps:
//! follow status changes other nodes make (so a pause or cancel through
//! any node stops this one's sends, and a send started anywhere is driven
//! here too), and fire scheduled campaigns while it is the scheduler's
//! leader.

use std::time::Duration;

use super::Engine;
use crate::domain::Status;
use crate::store::pg::PgStore;

/// The watch's safety-net poll: a change whose notification was lost (a
/// dropped LISTEN connection) reaches this node within it.
const WATCH_POLL: Duration = Duration::from_secs(2);

/// How often the leader looks for scheduled campaigns come due (how late
/// one may start).
const SCHEDULER_TICK: Duration = Duration::from_millis(500);

/// How often the other nodes try to take the lead (each try opens a
/// connection): a dead leader's campaigns start at most this much late.
const LEAD_RETRY: Duration = Duration::from_secs(2);

pub(super) fn start(engine: &Engine, pg: PgStore) {
    engine.inner.rt.spawn(follow(engine.clone(), pg.clone()));
    engine.inner.rt.spawn(schedule(engine.clone(), pg));
}

async fn follow(engine: Engine, pg: PgStore) {
    loop {
        match pg.watch_campaigns(WATCH_POLL).await {
            Ok(mut watch) => {
                pg.health().ok("watch");
                while let Some((id, status)) = watch.next().await {
                    if status.has_messages_to_settle() {
                        engine.drive(id, status == Status::Cancelled, None);
                    }
                }
                tracing::warn!("campaign watch ended; watching again");
            }
            Err(e) => pg.health().failed("watch", &e),
        }
        tokio::time::sleep(WATCH_POLL).await;
    }
}

async fn schedule(engine: Engine, pg: PgStore) {
    loop {
        match pg.try_lead().await {
            Ok(Some(leader)) => {
                tracing::info!("leading the scheduler");
                while leader.holds() {
                    match pg.fire_due(engine.now()).await {
                        Ok(fired) => {
                            pg.health().ok("scheduler");
                            for c in fired {
                                engine.drive(c.id, false, Some(c));
                            }
                        }
                        Err(e) => pg.health().failed("scheduler", &e),
                    }
                    tokio::time::sleep(SCHEDULER_TICK).await;
                }
                tracing::warn!("lost the scheduler's lead");
            }
            Ok(None) => pg.health().ok("scheduler"),
            Err(e) => pg.health().failed("scheduler", &e),
        }
        tokio::time::sleep(LEAD_RETRY).await;
    }
}
