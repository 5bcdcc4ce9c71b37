//! Calls into the loaded components: the personalizer's validate and
//! personalize, a transport's deliver, each through its instance pool
//! (or, in the bench build, the native baseline).

use std::sync::Arc;

use super::bindings::types;
use super::pool::PluginError;
use super::registry::{Plugins, TransportEntry};

impl Plugins {
    /// Asks the personalizer whether the campaign's templates compile.
    pub async fn validate(&self, campaign: types::Campaign) -> Result<Result<(), String>, PluginError> {
        #[cfg(feature = "native-bench")]
        if self.native_personalizer {
            return Ok(super::native::validate(&campaign));
        }
        self.personalizer
            .pool()
            .call(move |p, store| Box::pin(async move { p.call_validate(store, &campaign).await }))
            .await
    }

    pub async fn personalize(
        &self,
        campaign: Arc<types::Campaign>,
        subscriber: types::Subscriber,
        envelope: types::Envelope,
    ) -> Result<Result<types::Message, String>, PluginError> {
        #[cfg(feature = "native-bench")]
        if self.native_personalizer {
            let limits = self.personalizer.pool().meta.limits;
            return Ok(super::native::personalize(&campaign, subscriber, envelope, &limits));
        }
        self.personalizer
            .pool()
            .call(move |p, store| {
                Box::pin(async move { p.call_personalize(store, &campaign, &subscriber, &envelope).await })
            })
            .await
    }
}

impl TransportEntry {
    pub async fn deliver(
        &self,
        message: Arc<types::Message>,
    ) -> Result<Result<types::Receipt, types::DeliveryError>, PluginError> {
        let ran = self.deliver_by(message, None).await?;
        Ok(ran.expect("a call with no start-by time always runs"))
    }

    /// Delivers `message` unless the call cannot start by `start_by`
    /// (`Ok(None)`: not called; see `Pool::call_by`).
    pub async fn deliver_by(
        &self,
        message: Arc<types::Message>,
        start_by: Option<std::time::Instant>,
    ) -> Result<Option<Result<types::Receipt, types::DeliveryError>>, PluginError> {
        #[cfg(feature = "native-bench")]
        if let Some(native) = &self.native {
            if start_by.is_some_and(|by| std::time::Instant::now() > by) {
                return Ok(None);
            }
            return Ok(Some(native.deliver(&message)));
        }
        self.loaded
            .pool()
            .call_by(start_by, move |t, store| {
                store.data_mut().sender = Some(message.from.email.clone());
                Box::pin(async move { t.call_deliver(store, &message).await })
            })
            .await
    }
}
