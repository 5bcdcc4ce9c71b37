//! /campaigns/{id}/preview and /campaigns/{id}/test: the message as a
//! subscriber would get it, on screen or in a test inbox, in any status
//! and without changing the campaign.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Auth;
use super::error::ErrorBody;
use super::{ApiError, ApiJson, ApiResult, AppState};
use crate::app::previews;
use crate::domain::{CampaignId, Email, SubscriberId};
use crate::engine::{Preview, TestDelivery};

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
    /// An A/B test variant's index: the message as that variant sends it.
    #[serde(default)]
    pub variant: Option<u8>,
}

/// Sample data for a preview or test without a subscriber.
#[utoipa::path(get, path = "/api/v1/users/me/campaigns/{id}/preview", params(("id" = CampaignId, Path, description = "The campaign's id"), PreviewQuery), tag = "campaigns",
    description = "the rendered subject, html and text for one subscriber (or sample data); sends nothing",
    responses((status = 200, body = Preview), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn preview(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path(id): Path<CampaignId>,
    Query(q): Query<PreviewQuery>,
) -> ApiResult<Json<Preview>> {
    let subscriber = q.subscriber_id.map(SubscriberId::new);
    Ok(Json(
        previews::preview(&s.app, user.id, id, subscriber, q.variant).await?,
    ))
}

/// `c` as it would be sent (saved or not: the dashboard previews a draft
/// while it is edited) for one of its list's subscribers, or sample data.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestSend {
    /// Up to 10 addresses.
    pub emails: Vec<Email>,
    /// Whose data fills the templates (a subscriber of the campaign's
    /// list); sample data when absent.
    #[serde(default)]
    pub subscriber_id: Option<SubscriberId>,
    /// An A/B test variant's index: the message as that variant sends it.
    #[serde(default)]
    pub variant: Option<u8>,
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
    let results = previews::send_test(&s.app, user.id, id, body.subscriber_id, body.variant, &body.emails).await?;
    Ok(Json(TestReport { results }))
}
