//! What a campaign's message looks like, without a send: previews, and test
//! sends that go through the campaign's transport but touch nothing of the
//! campaign (no message, no stats, no status).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::Serialize;
use utoipa::ToSchema;

use super::Engine;
use super::lane::Reply;
use crate::domain::{Campaign, Email, MessageId, Subscriber, SubscriberId, unsubscribe};
use crate::plugins::PluginError;
use crate::plugins::bindings::types;

/// A rendered message, as the transport would receive it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Preview {
    pub subject: String,
    pub html: String,
    pub text: String,
    /// Extra headers the personalizer set (List-Unsubscribe, …).
    pub headers: Vec<PreviewHeader>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PreviewHeader {
    pub name: String,
    pub value: String,
}

/// One address of a test send.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TestDelivery {
    pub email: String,
    pub sent: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Which template failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplatePart {
    Subject,
    Text,
    Html,
}

impl TemplatePart {
    /// The personalizer names the failing template first (`subject: …`,
    /// the contract's convention for `validate`); read here, once.
    fn of(message: &str) -> TemplatePart {
        if message.starts_with("subject") {
            TemplatePart::Subject
        } else if message.starts_with("text") {
            TemplatePart::Text
        } else {
            TemplatePart::Html
        }
    }

    /// The campaign field holding this template.
    pub fn field(self) -> &'static str {
        match self {
            TemplatePart::Subject => "subject",
            TemplatePart::Text => "text",
            TemplatePart::Html => "html",
        }
    }
}

/// A template that does not compile or render, as the personalizer said.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    pub part: TemplatePart,
    pub message: String,
}

impl From<String> for TemplateError {
    fn from(message: String) -> TemplateError {
        TemplateError {
            part: TemplatePart::of(&message),
            message,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RenderError {
    /// The templates do not render for this subscriber.
    #[error(transparent)]
    Template(TemplateError),
    /// No component instance could be had now, or it failed: try again.
    #[error("{0}")]
    Unavailable(PluginError),
    #[error("transport {0:?} is not configured")]
    NoTransport(String),
}

impl Engine {
    /// The personalizer's verdict on the campaign's templates.
    pub async fn validate(&self, c: &Campaign) -> Result<(), RenderError> {
        match self.inner.jobs.plugins.validate(c.into()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(RenderError::Template(e.into())),
            Err(e) => Err(RenderError::Unavailable(e)),
        }
    }

    /// Renders `c` for `sub` as its real message would be rendered, with a
    /// Message-ID and unsubscribe link of its own that no real message or
    /// subscriber has (a test's link cannot unsubscribe anybody).
    async fn render_for(&self, c: &Campaign, sub: &Subscriber, nonce: u64) -> Result<types::Message, RenderError> {
        let inner = &self.inner;
        let domain = c.from_email.rsplit_once('@').map_or("posta.local", |(_, d)| d);
        let token = unsubscribe::token(
            &inner.secret,
            MessageId {
                campaign: c.id,
                subscriber: SubscriberId::new(0),
            },
        );
        let envelope = types::Envelope {
            message_id: format!("posta-test.{}.{nonce}@{domain}", c.id),
            unsubscribe_url: format!("{}/unsubscribe/{}/0/{token}", inner.base_url, c.id),
        };
        let slots = inner.jobs.capacity.user(c.user_id);
        let _slot = inner.jobs.capacity.render_slot(&slots).await;
        match inner
            .jobs
            .plugins
            .personalize(Arc::new(c.into()), sub.into(), envelope)
            .await
        {
            Ok(Ok(m)) => Ok(m),
            Ok(Err(e)) => Err(RenderError::Template(e.into())),
            Err(e) => Err(RenderError::Unavailable(e)),
        }
    }

    pub async fn preview(&self, c: &Campaign, sub: &Subscriber) -> Result<Preview, RenderError> {
        let m = self.render_for(c, sub, rand::random()).await?;
        Ok(Preview {
            subject: m.subject,
            html: m.html,
            text: m.text,
            headers: m
                .headers
                .into_iter()
                .map(|h| PreviewHeader {
                    name: h.name,
                    value: h.value,
                })
                .collect(),
        })
    }

    /// Sends `c` rendered with `sub`'s data to each address in `to`,
    /// through the campaign's transport (its lane: the transport's
    /// concurrency holds). One attempt each; nothing is stored.
    pub async fn send_test(
        &self,
        c: &Campaign,
        sub: &Subscriber,
        to: &[Email],
    ) -> Result<Vec<TestDelivery>, RenderError> {
        let route = self
            .inner
            .routes
            .get(&c.transport)
            .cloned()
            .ok_or_else(|| RenderError::NoTransport(c.transport.clone()))?;
        let mut out = Vec::with_capacity(to.len());
        for email in to {
            let recipient = Subscriber {
                email: email.clone(),
                ..sub.clone()
            };
            let message = self.render_for(c, &recipient, rand::random()).await?;
            // A test send belongs to no queued message: no fence, and
            // no campaign pace.
            let reply = route
                .deliver(
                    Arc::new(message),
                    Arc::new(AtomicBool::new(false)),
                    None,
                    None,
                    &self.inner.jobs.stop,
                )
                .await;
            let (sent, remote_id, error) = match reply {
                Reply::Delivered(Ok(Ok(receipt))) => (true, receipt.remote_id, None),
                Reply::Delivered(Ok(Err(
                    types::DeliveryError::Permanent(e)
                    | types::DeliveryError::Transient(e)
                    | types::DeliveryError::Rejected(e),
                ))) => (false, None, Some(e)),
                Reply::Delivered(Err(e)) => (false, None, Some(e.to_string())),
                Reply::Cancelled | Reply::Fenced | Reply::Stopped => {
                    (false, None, Some("the transport is stopping".into()))
                }
            };
            out.push(TestDelivery {
                email: email.to_string(),
                sent,
                remote_id,
                error,
            });
        }
        Ok(out)
    }
}
