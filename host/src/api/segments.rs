//! /segments: saved rules over one list's subscribers, and their count.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::Utc;

use super::auth::Auth;
use super::error::ErrorBody;
use super::{ApiJson, ApiResult, AppState, Paging};
use crate::app::segments::SegmentCount;
use crate::domain::SegmentId;
use crate::domain::segment::{Segment, SegmentDraft, SegmentPatch};
use crate::store::Page;

#[utoipa::path(post, path = "/api/v1/users/me/segments", request_body = SegmentDraft, tag = "segments",
    responses((status = 201, body = Segment), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(s): State<AppState>,
    Auth(user): Auth,
    ApiJson(body): ApiJson<SegmentDraft>,
) -> ApiResult<(StatusCode, Json<Segment>)> {
    let segment = s.store.create_segment(user.id, body, Utc::now()).await?;
    Ok((StatusCode::CREATED, Json(segment)))
}

#[utoipa::path(get, path = "/api/v1/users/me/segments", params(Paging), tag = "segments",
    responses((status = 200, body = Page<Segment>), (status = 401, body = ErrorBody)))]
pub async fn index(
    State(s): State<AppState>,
    Auth(user): Auth,
    Query(p): Query<Paging>,
) -> ApiResult<Json<Page<Segment>>> {
    let limit = p.limit()?;
    Ok(Json(s.store.segments(user.id, p.after, limit).await?))
}

#[utoipa::path(get, path = "/api/v1/users/me/segments/{id}", params(("id" = SegmentId, Path, description = "The segment's id")), tag = "segments",
    responses((status = 200, body = Segment), (status = 404, body = ErrorBody)))]
pub async fn show(State(s): State<AppState>, Auth(user): Auth, Path(id): Path<SegmentId>) -> ApiResult<Json<Segment>> {
    Ok(Json(s.store.segment(user.id, id).await?))
}

#[utoipa::path(patch, path = "/api/v1/users/me/segments/{id}", params(("id" = SegmentId, Path, description = "The segment's id")),
    request_body = SegmentPatch, tag = "segments",
    responses((status = 200, body = Segment), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path(id): Path<SegmentId>,
    ApiJson(body): ApiJson<SegmentPatch>,
) -> ApiResult<Json<Segment>> {
    Ok(Json(s.store.update_segment(user.id, id, body, Utc::now()).await?))
}

#[utoipa::path(delete, path = "/api/v1/users/me/segments/{id}", params(("id" = SegmentId, Path, description = "The segment's id")), tag = "segments",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(State(s): State<AppState>, Auth(user): Auth, Path(id): Path<SegmentId>) -> ApiResult<StatusCode> {
    s.store.delete_segment(user.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who the rules match now: the list scanned in one snapshot.
#[utoipa::path(get, path = "/api/v1/users/me/segments/{id}/count", params(("id" = SegmentId, Path, description = "The segment's id")), tag = "segments",
    responses((status = 200, body = SegmentCount), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn count(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path(id): Path<SegmentId>,
) -> ApiResult<Json<SegmentCount>> {
    Ok(Json(crate::app::segments::count(&s.app, user.id, id).await?))
}
