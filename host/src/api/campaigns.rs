//! /campaigns: drafts, the lifecycle actions and messages.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::Utc;
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::Auth;
use super::error::ErrorBody;
use super::{ApiError, ApiJson, ApiResult, AppState, Paging};
use crate::domain::message::{MessageRecord, MessageStatus};
use crate::domain::{Action, Campaign, CampaignDraft, CampaignId, CampaignPatch, Status, UserId};
use crate::engine::RenderError;
use crate::plugins::PluginError;
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

/// Refuses templates the personalizer cannot compile, with its message.
async fn check_templates(s: &AppState, c: &Campaign) -> ApiResult<()> {
    match s.engine.validate(c).await {
        Ok(()) => Ok(()),
        Err(RenderError::Template(e)) => Err(ApiError::invalid(e.part.field(), e.message)),
        // No instance could be had now: the client may retry shortly.
        Err(RenderError::Unavailable(e @ PluginError::Instantiate { .. })) => Err(ApiError::busy(format!(
            "the templates cannot be checked right now, try again: {e}"
        ))),
        // Compiling the templates themselves ran out of time or memory.
        Err(e) => Err(ApiError::invalid(
            "html",
            format!("the templates cannot be compiled: {e}"),
        )),
    }
}

#[utoipa::path(post, path = "/api/v1/users/me/campaigns", request_body = CampaignDraft, tag = "campaigns",
    responses((status = 201, body = Campaign), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(s): State<AppState>,
    Auth(user): Auth,
    ApiJson(draft): ApiJson<CampaignDraft>,
) -> ApiResult<(StatusCode, Json<Campaign>)> {
    Ok((StatusCode::CREATED, Json(create_campaign(&s, user.id, draft).await?)))
}

/// Creates a draft after every check the API makes (transport, fields,
/// templates); the dashboard creates through it too.
pub(crate) async fn create_campaign(s: &AppState, user_id: UserId, draft: CampaignDraft) -> ApiResult<Campaign> {
    let preview = unsaved(s, user_id, draft.clone())?;
    preview.validate()?;
    super::domains::check_from(s, user_id, &preview.from_email).await?;
    check_templates(s, &preview).await?;
    let transport = preview.transport;
    s.db(move |st| st.create_campaign(user_id, draft, transport, Utc::now()))
        .await
}

/// The campaign a draft body would make, not stored (id 0): its transport
/// defaulted and checked. What create validates, and the dashboard previews.
pub(crate) fn unsaved(s: &AppState, user_id: UserId, draft: CampaignDraft) -> ApiResult<Campaign> {
    let transport = draft.transport.clone().unwrap_or_else(|| s.engine.default_transport());
    s.engine.check_transport(&transport)?;
    Ok(Campaign::from_draft(
        CampaignId::new(0),
        user_id,
        draft,
        transport,
        Utc::now(),
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
    Ok(Json(
        s.db(move |st| st.campaigns(user.id, status, f.after, limit)).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/users/me/campaigns/{id}", params(("id" = CampaignId, Path, description = "The campaign's id")), tag = "campaigns",
    responses((status = 200, body = Campaign), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path(id): Path<CampaignId>,
) -> ApiResult<Json<Campaign>> {
    Ok(Json(s.db(move |st| st.campaign(user.id, id)).await?))
}

#[utoipa::path(patch, path = "/api/v1/users/me/campaigns/{id}", params(("id" = CampaignId, Path, description = "The campaign's id")), request_body = CampaignPatch, tag = "campaigns",
    responses((status = 200, body = Campaign), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path(id): Path<CampaignId>,
    ApiJson(patch): ApiJson<CampaignPatch>,
) -> ApiResult<Json<Campaign>> {
    Ok(Json(update_campaign(&s, user.id, id, patch).await?))
}

/// Edits a draft after the same checks as creating one.
pub(crate) async fn update_campaign(
    s: &AppState,
    user_id: UserId,
    id: CampaignId,
    patch: CampaignPatch,
) -> ApiResult<Campaign> {
    if let Some(t) = &patch.transport {
        s.engine.check_transport(t)?;
    }
    let mut preview = s.db(move |st| st.campaign(user_id, id)).await?;
    crate::domain::lifecycle::transition(preview.status, Action::Edit)?;
    preview.apply(patch.clone());
    preview.validate()?;
    super::domains::check_from(s, user_id, &preview.from_email).await?;
    check_templates(s, &preview).await?;
    s.db(move |st| st.edit_campaign(user_id, id, patch, Utc::now())).await
}

#[utoipa::path(delete, path = "/api/v1/users/me/campaigns/{id}", params(("id" = CampaignId, Path, description = "The campaign's id")), tag = "campaigns",
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete(State(s): State<AppState>, Auth(user): Auth, Path(id): Path<CampaignId>) -> ApiResult<StatusCode> {
    s.db(move |st| st.delete_campaign(user.id, id)).await?;
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
    Ok(Json(send_campaign(&s, user.id, id).await?))
}

/// Sends (or schedules) a draft whose transport and templates still check.
pub(crate) async fn send_campaign(s: &AppState, user_id: UserId, id: CampaignId) -> ApiResult<Campaign> {
    let current = s.db(move |st| st.campaign(user_id, id)).await?;
    crate::domain::lifecycle::transition(current.status, Action::Send { future: false })?;
    s.engine.check_transport(&current.transport)?;
    // Checked again: the domain may have been taken away since the draft.
    super::domains::check_from(s, user_id, &current.from_email).await?;
    check_templates(s, &current).await?;
    let now = s.engine.now();
    let c = s.db(move |st| st.send(user_id, id, now)).await?;
    s.engine.kick(&c);
    Ok(c)
}

/// Pause, resume and cancel share their shape: transition, then let the
/// engine react.
pub(crate) async fn lifecycle(s: &AppState, user_id: UserId, id: CampaignId, action: Action) -> ApiResult<Campaign> {
    if action == Action::Resume {
        let current = s.db(move |st| st.campaign(user_id, id)).await?;
        super::domains::check_from(s, user_id, &current.from_email).await?;
    }
    let c = s.db(move |st| st.act(user_id, id, action, Utc::now())).await?;
    s.engine.kick(&c);
    Ok(c)
}

#[utoipa::path(post, path = "/api/v1/users/me/campaigns/{id}/pause", params(("id" = CampaignId, Path, description = "The campaign's id")), tag = "campaigns",
    description = "sending → paused: nothing new is queued; stats.queued says how many queued messages still go out",
    responses((status = 200, body = Campaign), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn pause(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path(id): Path<CampaignId>,
) -> ApiResult<Json<Campaign>> {
    Ok(Json(lifecycle(&s, user.id, id, Action::Pause).await?))
}

#[utoipa::path(post, path = "/api/v1/users/me/campaigns/{id}/resume", params(("id" = CampaignId, Path, description = "The campaign's id")), tag = "campaigns",
    description = "paused → sending: the remaining subscribers are processed, none twice",
    responses((status = 200, body = Campaign), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn resume(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path(id): Path<CampaignId>,
) -> ApiResult<Json<Campaign>> {
    Ok(Json(lifecycle(&s, user.id, id, Action::Resume).await?))
}

#[utoipa::path(post, path = "/api/v1/users/me/campaigns/{id}/cancel", params(("id" = CampaignId, Path, description = "The campaign's id")), tag = "campaigns",
    description = "sending|paused|scheduled → cancelled, permanently",
    responses((status = 200, body = Campaign), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path(id): Path<CampaignId>,
) -> ApiResult<Json<Campaign>> {
    Ok(Json(lifecycle(&s, user.id, id, Action::Cancel).await?))
}

#[utoipa::path(post, path = "/api/v1/users/me/campaigns/{id}/duplicate", params(("id" = CampaignId, Path, description = "The campaign's id")), tag = "campaigns",
    description = "a draft copy named \"NAME (copy)\" with every setting preserved",
    responses((status = 201, body = Campaign), (status = 404, body = ErrorBody)))]
pub async fn duplicate(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path(id): Path<CampaignId>,
) -> ApiResult<(StatusCode, Json<Campaign>)> {
    let c = s.db(move |st| st.duplicate_campaign(user.id, id, Utc::now())).await?;
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
    Ok(Json(
        s.db(move |st| st.messages(user.id, id, status, f.after, limit)).await?,
    ))
}
