//! /campaigns/{id}/preview and /campaigns/{id}/test: the message as a
//! subscriber would get it, on screen or in a test inbox, in any status
//! and without changing the campaign.

use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Auth;
use super::error::ErrorBody;
use super::{ApiError, ApiJson, ApiResult, AppState};
use crate::domain::{Campaign, CampaignId, Email, ListId, Subscriber, SubscriberId, UserId};
use crate::engine::{Preview, RenderError, TestDelivery};
use crate::plugins::PluginError;

/// Addresses one test send may go to.
pub const MAX_TEST_ADDRESSES: usize = 10;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PreviewQuery {
    /// A subscriber of the campaign's list whose data fills the templates;
    /// sample data when absent.
    #[serde(default, deserialize_with = "super::id_param")]
    #[param(minimum = 1)]
    pub subscriber_id: Option<u64>,
}

/// Sample data for a preview or test without a subscriber.
fn sample(email: Email) -> Subscriber {
    Subscriber {
        id: SubscriberId::new(0),
        list_id: ListId::new(0),
        email,
        name: "Sample Subscriber".into(),
        timezone: None,
        attributes: Default::default(),
        status: Default::default(),
        status_changed: None,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

async fn campaign_and_subscriber(
    s: &AppState,
    user_id: UserId,
    id: CampaignId,
    subscriber_id: Option<SubscriberId>,
) -> ApiResult<(Campaign, Subscriber)> {
    s.db(move |st| {
        let c = st.campaign(user_id, id)?;
        let sub = match subscriber_id {
            Some(sid) => st.subscriber(user_id, c.list_id, sid)?,
            None => sample(Email::parse("subscriber@example.org").expect("a valid address")),
        };
        Ok((c, sub))
    })
    .await
}

fn render_error(e: RenderError) -> ApiError {
    match e {
        RenderError::Template(e) => ApiError::invalid("templates", e.message),
        RenderError::Unavailable(e @ PluginError::Instantiate { .. }) => {
            ApiError::busy(format!("the templates cannot be rendered right now, try again: {e}"))
        }
        RenderError::Unavailable(e) => ApiError::invalid("templates", e.to_string()),
        e @ RenderError::NoTransport(_) => ApiError::invalid("transport", e.to_string()),
    }
}

#[utoipa::path(get, path = "/api/v1/users/me/campaigns/{id}/preview", params(("id" = CampaignId, Path, description = "The campaign's id"), PreviewQuery), tag = "campaigns",
    description = "the rendered subject, html and text for one subscriber (or sample data); sends nothing",
    responses((status = 200, body = Preview), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn preview(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path(id): Path<CampaignId>,
    Query(q): Query<PreviewQuery>,
) -> ApiResult<Json<Preview>> {
    Ok(Json(
        preview_for(&s, user.id, id, q.subscriber_id.map(SubscriberId::new)).await?,
    ))
}

/// `c` as it would be sent (saved or not: the dashboard previews a draft
/// while it is edited) for one of its list's subscribers, or sample data.
pub(crate) async fn preview_unsaved(
    s: &AppState,
    user_id: UserId,
    c: Campaign,
    subscriber: Option<SubscriberId>,
) -> ApiResult<Preview> {
    let list = c.list_id;
    let sub = s
        .db(move |st| match subscriber {
            Some(sid) => st.subscriber(user_id, list, sid),
            None => {
                st.list(user_id, list)?;
                Ok(sample(Email::parse("subscriber@example.org").expect("a valid address")))
            }
        })
        .await?;
    s.engine.preview(&c, &sub).await.map_err(render_error)
}

/// The campaign rendered for one of its list's subscribers, or sample data.
pub(crate) async fn preview_for(
    s: &AppState,
    user_id: UserId,
    id: CampaignId,
    subscriber: Option<SubscriberId>,
) -> ApiResult<Preview> {
    let (c, sub) = campaign_and_subscriber(s, user_id, id, subscriber).await?;
    s.engine.preview(&c, &sub).await.map_err(render_error)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestSend {
    /// Up to 10 addresses.
    pub emails: Vec<Email>,
    /// Whose data fills the templates (a subscriber of the campaign's
    /// list); sample data when absent.
    #[serde(default)]
    pub subscriber_id: Option<SubscriberId>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestReport {
    pub results: Vec<TestDelivery>,
}

#[utoipa::path(post, path = "/api/v1/users/me/campaigns/{id}/test", params(("id" = CampaignId, Path, description = "The campaign's id")), request_body = TestSend, tag = "campaigns",
    description = "sends the campaign's message to up to 10 addresses through its transport, in any status; \
                   the campaign's status, stats and messages do not change",
    responses((status = 200, body = TestReport), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn test(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path(id): Path<CampaignId>,
    ApiJson(body): ApiJson<TestSend>,
) -> ApiResult<Json<TestReport>> {
    if body.emails.is_empty() || body.emails.len() > MAX_TEST_ADDRESSES {
        return Err(ApiError::invalid(
            "emails",
            format!("1 to {MAX_TEST_ADDRESSES} addresses; got {}", body.emails.len()),
        ));
    }
    let (c, sub) = campaign_and_subscriber(&s, user.id, id, body.subscriber_id).await?;
    let results = s.engine.send_test(&c, &sub, &body.emails).await.map_err(render_error)?;
    Ok(Json(TestReport { results }))
}
