//! Sender domains: an admin grants each user the domains its campaigns
//! may send from (`domain::sender`); a user lists its own.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::admin::admin_only;
use super::auth::Auth;
use super::error::ErrorBody;
use super::{ApiJson, ApiResult, AppState};
use crate::domain::UserId;
use crate::domain::sender::{SenderDomain, parse_domain};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDomain {
    /// `example.org`: campaigns may then send from any address at it (a
    /// subdomain is another domain).
    pub domain: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DomainList {
    pub items: Vec<SenderDomain>,
}

#[utoipa::path(get, path = "/api/v1/users/me/domains", tag = "domains",
    description = "the domains your campaigns' from_email may be at",
    responses((status = 200, body = DomainList)))]
pub async fn mine(State(s): State<AppState>, Auth(user): Auth) -> ApiResult<Json<DomainList>> {
    Ok(Json(DomainList {
        items: s.store.domains(user.id).await?,
    }))
}

#[utoipa::path(get, path = "/api/v1/admin/users/{id}/domains", params(("id" = UserId, Path, description = "The user's id")), tag = "admin",
    responses((status = 200, body = DomainList), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn index(State(s): State<AppState>, Auth(user): Auth, Path(id): Path<UserId>) -> ApiResult<Json<DomainList>> {
    admin_only(&user, "list users' domains")?;
    Ok(Json(DomainList {
        items: s.store.domains(id).await?,
    }))
}

#[utoipa::path(post, path = "/api/v1/admin/users/{id}/domains", params(("id" = UserId, Path, description = "The user's id")), tag = "admin",
    request_body = NewDomain,
    description = "grants a sender domain; granting it again changes nothing. A domain may be granted to several users.",
    responses((status = 201, body = SenderDomain), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn add(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path(id): Path<UserId>,
    ApiJson(body): ApiJson<NewDomain>,
) -> ApiResult<(StatusCode, Json<SenderDomain>)> {
    admin_only(&user, "grant domains")?;
    let domain = parse_domain(&body.domain)?;
    let granted = s.store.add_domain(id, domain, Utc::now()).await?;
    Ok((StatusCode::CREATED, Json(granted)))
}

#[utoipa::path(delete, path = "/api/v1/admin/users/{id}/domains/{domain}", tag = "admin",
    params(("id" = UserId, Path, description = "The user's id"), ("domain" = String, Path, description = "The domain")),
    description = "new campaigns, edits, sends and resumes from the domain are refused from now on; messages of \
                   campaigns already sending still go out (cancel them to stop them)",
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path((id, domain)): Path<(UserId, String)>,
) -> ApiResult<StatusCode> {
    admin_only(&user, "take domains away")?;
    // A name that could never be granted is not granted: 404.
    let domain = parse_domain(&domain).map_err(|_| super::ApiError::not_found())?;
    s.store.remove_domain(id, domain).await?;
    Ok(StatusCode::NO_CONTENT)
}
