//! /suppressions: the user's do-not-mail list, across all their lists.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::Utc;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::auth::Auth;
use super::error::ErrorBody;
use super::lists::MAX_BULK;
use super::{ApiResult, AppState, bulk, page_limit};
use crate::domain::suppression::{NewSuppression, Suppression, SuppressionReason};
use crate::store::{SuppressReport, SuppressionPage};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SuppressionFilter {
    /// unsubscribed, bounced, complained or manual.
    #[param(value_type = Option<SuppressionReason>)]
    pub reason: Option<String>,
    /// Email after which the page starts (`next_after` of the previous page).
    pub after: Option<String>,
    /// Items per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/users/me/suppressions", params(SuppressionFilter), tag = "suppressions",
    description = "suppressed addresses in email order; with `reason`, a page may hold fewer items than `limit` and still have a `next_after`",
    responses((status = 200, body = SuppressionPage), (status = 422, body = ErrorBody)))]
pub async fn index(
    State(s): State<AppState>,
    Auth(user): Auth,
    Query(f): Query<SuppressionFilter>,
) -> ApiResult<Json<SuppressionPage>> {
    let reason = f.reason.as_deref().map(str::parse::<SuppressionReason>).transpose()?;
    let limit = page_limit(f.limit)?;
    let page = s.store.suppressions(user.id, reason, f.after, limit).await?;
    Ok(Json(page))
}

/// One suppression object, an array, or `{"suppressions": [...]}`.
/// Untagged, so the document says "an object or an array" (an empty array
/// is a valid request that suppresses nothing).
#[derive(ToSchema, Deserialize)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum SuppressionsBody {
    One(NewSuppression),
    Many(Vec<NewSuppression>),
}

async fn parse(req: axum::extract::Request, s: &AppState) -> ApiResult<Vec<Suppression>> {
    let now = Utc::now();
    bulk::<NewSuppression, _>(req, s, "suppressions", MAX_BULK)
        .await?
        .into_iter()
        .map(|(at, new)| Ok(new.validate(&at, now)?))
        .collect()
}

#[utoipa::path(post, path = "/api/v1/users/me/suppressions", tag = "suppressions",
    request_body(content = SuppressionsBody, description = "one address, an array, or {\"suppressions\": [...]}; reason defaults to manual"),
    description = "suppressed addresses are skipped by every campaign of the user from the next message created on",
    responses((status = 200, body = SuppressReport), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(s): State<AppState>,
    Auth(user): Auth,
    req: axum::extract::Request,
) -> ApiResult<Json<SuppressReport>> {
    let items = parse(req, &s).await?;
    Ok(Json(s.store.suppress(user.id, items).await?))
}

#[utoipa::path(get, path = "/api/v1/users/me/suppressions/{email}", tag = "suppressions",
    responses((status = 200, body = Suppression), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path(email): Path<String>,
) -> ApiResult<Json<Suppression>> {
    Ok(Json(s.store.suppression(user.id, email).await?))
}

#[utoipa::path(delete, path = "/api/v1/users/me/suppressions/{email}", tag = "suppressions",
    description = "the address is mailed again by messages created from now on",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(State(s): State<AppState>, Auth(user): Auth, Path(email): Path<String>) -> ApiResult<StatusCode> {
    s.store.unsuppress(user.id, email).await?;
    Ok(StatusCode::NO_CONTENT)
}
