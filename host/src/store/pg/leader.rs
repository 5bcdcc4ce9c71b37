//! The scheduler's leader: the node holding a session advisory lock on a
//! connection of its own. If the node dies its connection closes and the
//! lock frees, so another node's next try takes over. Leadership only
//! keeps the other nodes from doing the same work; the guard against a
//! campaign starting twice is the transition itself (`scheduled → sending`
//! under the campaign's row lock), so two leaders for a moment (a frozen
//! one whose connection has not yet timed out) still fire it once.

use tokio_postgres::Client;

use super::PgStore;
use crate::store::Result;

/// The scheduler lock's key ("posta_sc").
const SCHEDULER_LOCK: i64 = 0x706f_7374_615f_7363;

/// Leadership, held while this value (and its connection) lives.
pub struct Leader {
    client: Client,
}

impl Leader {
    /// Whether the connection holding the lock is still open: a leader
    /// whose connection broke has lost the lock.
    pub fn holds(&self) -> bool {
        !self.client.is_closed()
    }
}

impl PgStore {
    /// Becomes the scheduler's leader if no node is; `None` otherwise.
    pub async fn try_lead(&self) -> Result<Option<Leader>> {
        let client = self.dedicated().await?;
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&SCHEDULER_LOCK])
            .await?
            .get(0);
        Ok(got.then_some(Leader { client }))
    }
}
