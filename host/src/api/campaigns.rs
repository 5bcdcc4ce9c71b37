//! /campaigns: drafts, the lifecycle actions and messages.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Auth;
use super::error::ErrorBody;
use super::{ApiError, ApiJson, ApiResult, AppState, Paging};
use crate::app::campaigns;
use crate::domain::message::{MessageRecord, MessageStatus};
use crate::domain::tracking::{LinkStats, Links, link_stats};
use crate::domain::{Action, Campaign, CampaignDraft, CampaignId, CampaignPatch, Status};
use crate::store::Page;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CampaignFilter {
    /// Only campaigns with this status.
    #[param(value_type = Option<Status>)]
    pub status: Option<String>,
    /// Items per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Campaign id after which the page starts.
    #[serde(default, deserialize_with = "super::id_param")]
    #[param(minimum = 0)]
    pub after: Option<u64>,
}

#[utoipa::path(post, path = "/api/v1/users/me/campaigns", request_body = CampaignDraft, tag = "campaigns",
    responses((status = 201, body = Campaign), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(s): State<AppState>,
    Auth(user): Auth,
    ApiJson(draft): ApiJson<CampaignDraft>,
) -> ApiResult<(StatusCode, Json<Campaign>)> {
    Ok((
        StatusCode::CREATED,
        Json(campaigns::create(&s.app, user.id, draft).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/users/me/campaigns", params(CampaignFilter), tag = "campaigns",
    responses((status = 200, body = Page<Campaign>), (status = 422, body = ErrorBody)))]
pub async fn index(
    State(s): State<AppState>,
    Auth(user): Auth,
    Query(f): Query<CampaignFilter>,
) -> ApiResult<Json<Page<Campaign>>> {
    let status = match f.status.as_deref() {
        None => None,
        Some(raw) => {
            Some(Status::parse(raw).ok_or_else(|| ApiError::invalid("status", format!("unknown status {raw:?}")))?)
        }
    };
    let limit = Paging {
        limit: f.limit,
        after: f.after,
    }
    .limit()?;
    Ok(Json(s.store.campaigns(user.id, status, f.after, limit).await?))
}

#[utoipa::path(get, path = "/api/v1/users/me/campaigns/{id}", params(("id" = CampaignId, Path, description = "The campaign's id")), tag = "campaigns",
    responses((status = 200, body = Campaign), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path(id): Path<CampaignId>,
) -> ApiResult<Json<Campaign>> {
    Ok(Json(s.store.campaign(user.id, id).await?))
}

#[utoipa::path(patch, path = "/api/v1/users/me/campaigns/{id}", params(("id" = CampaignId, Path, description = "The campaign's id")), request_body = CampaignPatch, tag = "campaigns",
    responses((status = 200, body = Campaign), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path(id): Path<CampaignId>,
    ApiJson(patch): ApiJson<CampaignPatch>,
) -> ApiResult<Json<Campaign>> {
    Ok(Json(campaigns::update(&s.app, user.id, id, patch).await?))
}

#[utoipa::path(delete, path = "/api/v1/users/me/campaigns/{id}", params(("id" = CampaignId, Path, description = "The campaign's id")), tag = "campaigns",
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete(State(s): State<AppState>, Auth(user): Auth, Path(id): Path<CampaignId>) -> ApiResult<StatusCode> {
    s.store.delete_campaign(user.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/users/me/campaigns/{id}/send", params(("id" = CampaignId, Path, description = "The campaign's id")), tag = "campaigns",
    description = "draft → sending, or draft → scheduled when scheduled_at is in the future",
    responses((status = 200, body = Campaign), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn send(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path(id): Path<CampaignId>,
) -> ApiResult<Json<Campaign>> {
    Ok(Json(campaigns::send(&s.app, user.id, id).await?))
}

#[utoipa::path(post, path = "/api/v1/users/me/campaigns/{id}/pause", params(("id" = CampaignId, Path, description = "The campaign's id")), tag = "campaigns",
    description = "sending → paused: nothing new is queued; stats.queued says how many queued messages still go out",
    responses((status = 200, body = Campaign), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn pause(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path(id): Path<CampaignId>,
) -> ApiResult<Json<Campaign>> {
    Ok(Json(campaigns::act(&s.app, user.id, id, Action::Pause).await?))
}

#[utoipa::path(post, path = "/api/v1/users/me/campaigns/{id}/resume", params(("id" = CampaignId, Path, description = "The campaign's id")), tag = "campaigns",
    description = "paused → sending: the remaining subscribers are processed, none twice",
    responses((status = 200, body = Campaign), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn resume(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path(id): Path<CampaignId>,
) -> ApiResult<Json<Campaign>> {
    Ok(Json(campaigns::act(&s.app, user.id, id, Action::Resume).await?))
}

#[utoipa::path(post, path = "/api/v1/users/me/campaigns/{id}/cancel", params(("id" = CampaignId, Path, description = "The campaign's id")), tag = "campaigns",
    description = "sending|paused|scheduled → cancelled, permanently",
    responses((status = 200, body = Campaign), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path(id): Path<CampaignId>,
) -> ApiResult<Json<Campaign>> {
    Ok(Json(campaigns::act(&s.app, user.id, id, Action::Cancel).await?))
}

#[utoipa::path(post, path = "/api/v1/users/me/campaigns/{id}/duplicate", params(("id" = CampaignId, Path, description = "The campaign's id")), tag = "campaigns",
    description = "a draft copy named \"NAME (copy)\" with every setting preserved",
    responses((status = 201, body = Campaign), (status = 404, body = ErrorBody)))]
pub async fn duplicate(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path(id): Path<CampaignId>,
) -> ApiResult<(StatusCode, Json<Campaign>)> {
    let c = s.store.duplicate_campaign(user.id, id, Utc::now()).await?;
    Ok((StatusCode::CREATED, Json(c)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessageFilter {
    /// queued, sent, failed, skipped or cancelled.
    #[param(value_type = Option<MessageStatus>)]
    pub status: Option<String>,
    /// Items per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Subscriber id after which the page starts.
    #[serde(default, deserialize_with = "super::id_param")]
    #[param(minimum = 0)]
    pub after: Option<u64>,
}

#[utoipa::path(get, path = "/api/v1/users/me/campaigns/{id}/messages", params(("id" = CampaignId, Path, description = "The campaign's id"), MessageFilter), tag = "campaigns",
    description = "messages in subscriber order; with `status`, a page reads at most 5,000 messages, so it may hold fewer items than `limit` and still have a `next_after`",
    responses((status = 200, body = Page<MessageRecord>), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn messages(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path(id): Path<CampaignId>,
    Query(f): Query<MessageFilter>,
) -> ApiResult<Json<Page<MessageRecord>>> {
    let status = match f.status.as_deref() {
        None => None,
        Some(raw) => Some(
            MessageStatus::parse(raw)
                .ok_or_else(|| ApiError::invalid("status", format!("unknown message status {raw:?}")))?,
        ),
    };
    let limit = Paging {
        limit: f.limit,
        after: f.after,
    }
    .limit()?;
    Ok(Json(s.store.messages(user.id, id, status, f.after, limit).await?))
}

/// `POST …/ab/winner` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WinnerChoice {
    /// The variant's index in `ab_test.variants`, from 0.
    pub variant: u8,
}

#[utoipa::path(post, path = "/api/v1/users/me/campaigns/{id}/ab/winner", params(("id" = CampaignId, Path, description = "The campaign's id")), request_body = WinnerChoice, tag = "campaigns",
    description = "picks the A/B test's winner now, instead of by its metric after `wait_minutes`: the rest of the audience gets that variant. The campaign must be sending or paused, with its test undecided (409 otherwise)",
    responses((status = 200, body = Campaign), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn pick_winner(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path(id): Path<CampaignId>,
    ApiJson(choice): ApiJson<WinnerChoice>,
) -> ApiResult<Json<Campaign>> {
    Ok(Json(campaigns::pick_winner(&s.app, user.id, id, choice.variant).await?))
}

/// `GET …/links`: the campaign's tracked links in the order they first
/// appear in its templates.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkList {
    pub items: Vec<LinkStats>,
}

#[utoipa::path(get, path = "/api/v1/users/me/campaigns/{id}/links", params(("id" = CampaignId, Path, description = "The campaign's id")), tag = "campaigns",
    description = "the campaign's tracked links (http(s) links written in its templates; none unless `track_clicks`) with their clicks and the subscribers who clicked each",
    responses((status = 200, body = LinkList), (status = 404, body = ErrorBody)))]
pub async fn links(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path(id): Path<CampaignId>,
) -> ApiResult<Json<LinkList>> {
    let (c, counts) = s.store.link_clicks(user.id, id).await?;
    let items = if c.track_clicks {
        link_stats(&Links::of_campaign(&c), &counts)
    } else {
        Vec::new()
    };
    Ok(Json(LinkList { items }))
}
