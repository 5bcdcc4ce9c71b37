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
                Box::pin(async move {
                    let outcome = t.call_deliver(&mut *store, &message).await?;
                    Ok(outcome.map_err(|e| with_refusal(e, store.data().refused())))
                })
            })
            .await
    }
}

/// A failed delivery's error with what the host refused during the call,
/// unless the plugin already said so: the operator reads the cause of a
/// grant mistake in the message's `last_error`, whatever the plugin's
/// language reported.
fn with_refusal(error: types::DeliveryError, refused: Option<String>) -> types::DeliveryError {
    use types::DeliveryError::{Permanent, Rejected, Transient};
    let Some(refused) = refused else { return error };
    let add = |text: String| {
        if text.contains("capabilit") {
            text
        } else {
            format!("{text} ({refused})")
        }
    };
    match error {
        Transient(t) => Transient(add(t)),
        Permanent(t) => Permanent(add(t)),
        Rejected(t) => Rejected(add(t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use types::DeliveryError::{Permanent, Transient};

    #[test]
    fn a_refusal_is_named_once_in_the_error() {
        let refused = Some("the host refused a request to http://a:1: not in capabilities.http".to_string());
        let Transient(t) = with_refusal(Transient("NetworkError".into()), refused.clone()) else {
            panic!("the kind is the plugin's")
        };
        assert_eq!(
            t,
            "NetworkError (the host refused a request to http://a:1: not in capabilities.http)"
        );
        let Permanent(t) = with_refusal(Permanent("http capability does not list it".into()), refused) else {
            panic!()
        };
        assert_eq!(t, "http capability does not list it", "the plugin said so already");
        let Transient(t) = with_refusal(Transient("timeout".into()), None) else {
            panic!()
        };
        assert_eq!(t, "timeout");
    }
}
