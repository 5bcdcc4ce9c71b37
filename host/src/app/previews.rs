//! Previews and test sends: the message as a subscriber (or sample data)
//! would get it, on screen or in a test inbox, in any status and without
//! changing the campaign.

use chrono::Utc;

use super::{App, AppError};
use crate::domain::{Campaign, CampaignId, Email, FieldError, ListId, Subscriber, SubscriberId, UserId};
use crate::engine::{Preview, RenderError, TestDelivery};
use crate::plugins::PluginError;

/// Campaign `id` rendered for `subscriber` (one of its list's), or for
/// sample data.
pub async fn preview(
    app: &App,
    user: UserId,
    id: CampaignId,
    subscriber: Option<SubscriberId>,
    variant: Option<u8>,
) -> Result<Preview, AppError> {
    let (c, sub) = campaign_and_subscriber(app, user, id, subscriber, variant).await?;
    app.engine.preview(&c, &sub).await.map_err(render_error)
}

/// A campaign not stored (the dashboard's unsaved form) rendered the same
/// way; its list must be the user's.
pub async fn preview_unsaved(
    app: &App,
    user: UserId,
    c: Campaign,
    subscriber: Option<SubscriberId>,
) -> Result<Preview, AppError> {
    let list = c.list_id;
    let sub = match subscriber {
        Some(sid) => app.store.subscriber(user, list, sid).await?,
        None => {
            app.store.list(user, list).await?;
            sample()
        }
    };
    app.engine.preview(&c, &sub).await.map_err(render_error)
}

/// Sends campaign `id`'s message to `emails` through its transport; the
/// campaign does not change.
pub async fn send_test(
    app: &App,
    user: UserId,
    id: CampaignId,
    subscriber: Option<SubscriberId>,
    variant: Option<u8>,
    emails: &[Email],
) -> Result<Vec<TestDelivery>, AppError> {
    let (c, sub) = campaign_and_subscriber(app, user, id, subscriber, variant).await?;
    app.engine.send_test(&c, &sub, emails).await.map_err(render_error)
}

/// Whose data fills the templates when no subscriber is named.
fn sample() -> Subscriber {
    Subscriber {
        id: SubscriberId::new(0),
        list_id: ListId::new(0),
        email: Email::parse("subscriber@example.org").expect("a valid address"),
        name: "Sample Subscriber".into(),
        timezone: None,
        attributes: Default::default(),
        status: Default::default(),
        status_changed: None,
        last_opened_at: None,
        last_clicked_at: None,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

/// The campaign (as A/B variant `variant` sends it, if named) and whose
/// data fills it.
async fn campaign_and_subscriber(
    app: &App,
    user: UserId,
    id: CampaignId,
    subscriber: Option<SubscriberId>,
    variant: Option<u8>,
) -> Result<(Campaign, Subscriber), AppError> {
    let mut c = app.store.campaign(user, id).await?;
    if let Some(v) = variant {
        let n = c.ab_test.as_ref().map_or(0, |ab| ab.variants.len());
        if usize::from(v) >= n {
            return Err(FieldError::new("variant", format!("the campaign has {n} A/B variants")).into());
        }
        c = c.with_variant(Some(v));
    }
    let sub = match subscriber {
        Some(sid) => app.store.subscriber(user, c.list_id, sid).await?,
        None => sample(),
    };
    Ok((c, sub))
}

fn render_error(e: RenderError) -> AppError {
    match e {
        RenderError::Template(e) => FieldError::new("templates", e.message).into(),
        RenderError::Unavailable(e @ PluginError::Instantiate { .. }) => {
            AppError::Busy(format!("the templates cannot be rendered right now, try again: {e}"))
        }
        RenderError::Unavailable(e) => FieldError::new("templates", e.to_string()).into(),
        e @ RenderError::NoTransport(_) => FieldError::new("transport", e.to_string()).into(),
    }
}
