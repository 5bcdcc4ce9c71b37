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
                store.data_mut().senders.push(message.from.email.clone());
                Box::pin(async move {
                    let outcome = t.world.call_deliver(&mut *store, &message).await?;
                    Ok(outcome.map_err(|e| with_refusal(e, store.data().refused())))
                })
            })
            .await
    }

    /// Whether the component takes several messages per call
    /// (`deliver-batch`), and at most how many.
    pub fn max_batch(&self) -> usize {
        #[cfg(feature = "native-bench")]
        if self.native.is_some() {
            return 1;
        }
        if self.loaded.pool().pre().batches() {
            self.info.max_batch.max(1)
        } else {
            1
        }
    }

    /// Delivers `messages` in one `deliver-batch` call: one result per
    /// message, in order. A component that does not batch (it was
    /// reloaded without `deliver-batch`) gets them one by one in the call.
    pub async fn deliver_batch(
        &self,
        messages: Vec<Arc<types::Message>>,
    ) -> Result<Vec<Result<types::Receipt, types::DeliveryError>>, PluginError> {
        let pool = self.loaded.pool();
        let plugin = pool.name().to_string();
        let n = messages.len();
        let outcome = pool
            .call_for(None, n as u32, move |t, store| {
                store.data_mut().senders = messages.iter().map(|m| m.from.email.clone()).collect();
                Box::pin(async move {
                    let Some(batch) = &t.batch else {
                        let mut results = Vec::with_capacity(messages.len());
                        for message in &messages {
                            results.push(t.world.call_deliver(&mut *store, message).await?);
                        }
                        return Ok(results);
                    };
                    // The contract's records are owned values; the lane
                    // shares each message with its job, so they are copied.
                    let owned: Vec<types::Message> = messages.iter().map(|m| (**m).clone()).collect();
                    let (mut results,) = batch.call_async(&mut *store, (owned,)).await?;
                    // What the host refused is known per call: it names the
                    // cause of a failure only when one message failed.
                    let mut failed = results.iter_mut().filter_map(|r| r.as_mut().err());
                    if let (Some(only), None) = (failed.next(), failed.next()) {
                        *only = with_refusal(only.clone(), store.data().refused());
                    }
                    Ok(results)
                })
            })
            .await?
            .expect("a call with no start-by time always runs");
        one_each(&plugin, outcome, n)
    }
}

/// A batch's answer, which must hold one result per message: any other
/// length fails the whole call, as a trap would (the host cannot tell
/// which result is whose).
fn one_each<T>(plugin: &str, results: Vec<T>, n: usize) -> Result<Vec<T>, PluginError> {
    if results.len() == n {
        return Ok(results);
    }
    Err(PluginError::Trap {
        plugin: plugin.to_string(),
        reason: format!(
            "deliver-batch answered {} results for {n} messages (one per message, in order)",
            results.len()
        ),
    })
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
    fn a_batch_answer_holds_one_result_per_message() {
        assert_eq!(one_each("smtp", vec![1, 2, 3], 3), Ok(vec![1, 2, 3]));
        for wrong in [vec![1, 2], vec![1, 2, 3, 4], vec![]] {
            let Err(PluginError::Trap { plugin, reason }) = one_each("smtp", wrong, 3) else {
                panic!("a wrong length fails the call")
            };
            assert_eq!(plugin, "smtp");
            assert!(reason.contains("for 3 messages"), "{reason}");
        }
    }

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
