//! /lists and /lists/{id}/subscribers.

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::header;
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::Auth;
use super::error::ErrorBody;
use super::{ApiJson, ApiResult, AppState, Paging, bulk};
use crate::domain::{List, ListId, NewSubscriber, Subscriber, SubscriberId, SubscriberPatch};
use crate::store::Page;
use crate::store::UpsertReport;

/// Subscribers accepted by one request.
pub const MAX_BULK: usize = 10_000;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewList {
    #[schema(min_length = 1, max_length = 256)]
    pub name: String,
}

#[utoipa::path(post, path = "/api/v1/users/me/lists", request_body = NewList, tag = "lists",
    responses((status = 201, body = List), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(s): State<AppState>,
    Auth(user): Auth,
    ApiJson(body): ApiJson<NewList>,
) -> ApiResult<(StatusCode, Json<List>)> {
    let list = s.store.create_list(user.id, body.name).await?;
    Ok((StatusCode::CREATED, Json(list)))
}

#[utoipa::path(get, path = "/api/v1/users/me/lists", params(Paging), tag = "lists",
    responses((status = 200, body = Page<List>), (status = 401, body = ErrorBody)))]
pub async fn index(
    State(s): State<AppState>,
    Auth(user): Auth,
    Query(p): Query<Paging>,
) -> ApiResult<Json<Page<List>>> {
    let limit = p.limit()?;
    Ok(Json(s.store.lists(user.id, p.after, limit).await?))
}

#[utoipa::path(get, path = "/api/v1/users/me/lists/{id}", params(("id" = ListId, Path, description = "The list's id")), tag = "lists",
    responses((status = 200, body = List), (status = 404, body = ErrorBody)))]
pub async fn show(State(s): State<AppState>, Auth(user): Auth, Path(id): Path<ListId>) -> ApiResult<Json<List>> {
    Ok(Json(s.store.list(user.id, id).await?))
}

#[utoipa::path(delete, path = "/api/v1/users/me/lists/{id}", params(("id" = ListId, Path, description = "The list's id")), tag = "lists",
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete(State(s): State<AppState>, Auth(user): Auth, Path(id): Path<ListId>) -> ApiResult<StatusCode> {
    s.store.delete_list(user.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One subscriber object, an array of them, or `{"subscribers": [...]}`.
/// Untagged, so the document says "an object or an array", as the
/// handler reads it.
#[derive(ToSchema, serde::Deserialize)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum SubscribersBody {
    One(NewSubscriber),
    Many(Vec<NewSubscriber>),
}

async fn parse_subscribers(req: Request, s: &AppState) -> ApiResult<Vec<NewSubscriber>> {
    bulk::<NewSubscriber, _>(req, s, "subscribers", MAX_BULK)
        .await?
        .into_iter()
        .map(|(at, new)| Ok(new.validate(&at)?))
        .collect()
}

#[utoipa::path(post, path = "/api/v1/users/me/lists/{id}/subscribers", params(("id" = ListId, Path, description = "The list's id")), tag = "lists",
    request_body(content(
        (SubscribersBody = "application/json"),
        (String = "text/csv"),
    ), description = "JSON: one subscriber, an array, or {\"subscribers\": [...]}. CSV: a header row naming \
        `email` and any of `name`, `timezone`, `status`, every other column an attribute (text), streamed, up to \
        `server.max_import_bytes`; rows that do not validate are reported by line (`errors`, `rejected`) and the \
        rest imported. Upserted by email either way; an import never re-subscribes anyone."),
    responses((status = 200, body = UpsertReport), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn add_subscribers(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path(id): Path<ListId>,
    req: Request,
) -> ApiResult<Json<UpsertReport>> {
    let csv = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/csv"));
    if csv {
        let max = s.max_import_bytes;
        return Ok(Json(
            super::subscribers_csv::import_csv(s, user.id, id, req.into_body().into_data_stream(), max).await?,
        ));
    }
    let batch = parse_subscribers(req, &s).await?;
    Ok(Json(s.store.upsert_subscribers(user.id, id, batch).await?))
}

#[utoipa::path(get, path = "/api/v1/users/me/lists/{id}/subscribers", params(("id" = ListId, Path, description = "The list's id"), Paging), tag = "lists",
    responses((status = 200, body = Page<Subscriber>), (status = 404, body = ErrorBody)))]
pub async fn subscribers(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path(id): Path<ListId>,
    Query(p): Query<Paging>,
) -> ApiResult<Json<Page<Subscriber>>> {
    let limit = p.limit()?;
    Ok(Json(s.store.subscribers(user.id, id, None, p.after, limit).await?))
}

#[utoipa::path(get, path = "/api/v1/users/me/lists/{id}/subscribers/{sid}", tag = "lists",
    responses((status = 200, body = Subscriber), (status = 404, body = ErrorBody)))]
pub async fn subscriber(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path((id, sid)): Path<(ListId, SubscriberId)>,
) -> ApiResult<Json<Subscriber>> {
    Ok(Json(s.store.subscriber(user.id, id, sid).await?))
}

#[utoipa::path(patch, path = "/api/v1/users/me/lists/{id}/subscribers/{sid}", request_body = SubscriberPatch, tag = "lists",
    description = "changes a subscriber; setting `status` is the only way back to `subscribed` (imports never \
                   re-subscribe), and the change is recorded in `status_changed`",
    responses((status = 200, body = Subscriber), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_subscriber(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path((id, sid)): Path<(ListId, SubscriberId)>,
    ApiJson(patch): ApiJson<SubscriberPatch>,
) -> ApiResult<Json<Subscriber>> {
    Ok(Json(s.store.update_subscriber(user.id, id, sid, patch).await?))
}
