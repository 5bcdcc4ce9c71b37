//! The queue on redb: this process is the only sender. A step is
//! `Redb::enqueue`; a crash leaves `in_flight` entries that the next start
//! delivers again, flagged.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Redb;
use crate::domain::CampaignId;
use crate::domain::message::{Job, Outcome};
use crate::store::queue::{Claim, Queue, Step, Wake};
use crate::store::{StoreError, blocking};

pub(crate) struct Local(pub(crate) Redb);

#[async_trait::async_trait]
impl Queue for Local {
    async fn recover(&self, id: CampaignId, now: DateTime<Utc>) -> Result<Vec<Job>, StoreError> {
        let r = self.0.clone();
        blocking(move || r.recover_in_flight(id, now)).await
    }

    async fn step(&self, id: CampaignId, batch: usize, now: DateTime<Utc>) -> Result<Step, StoreError> {
        let r = self.0.clone();
        let enqueued = blocking(move || r.enqueue(id, batch, now)).await?;
        Ok(Step {
            enqueued,
            claim: Claim::alone(),
        })
    }

    async fn record(&self, _: &Claim, outcomes: &Arc<Vec<Outcome>>, now: DateTime<Utc>) -> Result<(), StoreError> {
        let (r, outcomes) = (self.0.clone(), outcomes.clone());
        blocking(move || r.record_outcomes(&outcomes, now).map(drop)).await
    }

    fn runs_schedules(&self) -> bool {
        true
    }

    /// Never: only this process's outcomes move a send on, and each wakes
    /// its driver.
    fn idle_poll(&self) -> Option<Duration> {
        None
    }

    /// None: nothing but this process starts or stops a send.
    fn wakes(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Wake>> {
        None
    }

    async fn leave(&self) {}
}
