//! Server-level actions for admin users: plugin reload, and users and
//! their API keys, so nothing needs the server stopped.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Auth;
use super::error::ErrorBody;
use super::{ApiError, ApiJson, ApiResult, AppState, Paging};
use crate::domain::{KeyId, User, UserId};
use crate::plugins::reload::ReloadReport;
use crate::store::{KeyInfo, Page};

pub(super) fn admin_only(user: &User, what: &str) -> ApiResult<()> {
    if user.admin {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("only admin users may {what}"),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub email: String,
    /// May act on the server (reload plugins, administer users).
    #[serde(default)]
    pub admin: bool,
}

/// A new user or key: the key is shown this once; only its hash is kept.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedKey {
    pub user: User,
    pub key: String,
    pub key_info: KeyInfo,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub items: Vec<KeyInfo>,
}

#[utoipa::path(get, path = "/api/v1/admin/users", params(Paging), tag = "admin",
    responses((status = 200, body = Page<User>), (status = 403, body = ErrorBody)))]
pub async fn users(
    State(s): State<AppState>,
    Auth(user): Auth,
    Query(p): Query<Paging>,
) -> ApiResult<Json<Page<User>>> {
    admin_only(&user, "list users")?;
    let limit = p.limit()?;
    Ok(Json(s.store.users(p.after, limit).await?))
}

#[utoipa::path(post, path = "/api/v1/admin/users", tag = "admin", request_body = NewUser,
    responses((status = 201, body = IssuedKey), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn create_user(
    State(s): State<AppState>,
    Auth(user): Auth,
    ApiJson(body): ApiJson<NewUser>,
) -> ApiResult<(StatusCode, Json<IssuedKey>)> {
    admin_only(&user, "create users")?;
    let (user, key) = s
        .store
        .create_user_as(body.email.trim().to_string(), body.admin)
        .await?;
    let key_info = s
        .store
        .keys(user.id)
        .await?
        .pop()
        .expect("the first key was just issued");
    Ok((StatusCode::CREATED, Json(IssuedKey { user, key, key_info })))
}

#[utoipa::path(post, path = "/api/v1/admin/users/{id}/keys", params(("id" = UserId, Path, description = "The user's id")), tag = "admin",
    responses((status = 201, body = IssuedKey), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn issue_key(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path(id): Path<UserId>,
) -> ApiResult<(StatusCode, Json<IssuedKey>)> {
    admin_only(&user, "issue keys")?;
    let (key, key_info) = s.store.issue_key(id).await?;
    let user = s.store.user(id).await?;
    Ok((StatusCode::CREATED, Json(IssuedKey { user, key, key_info })))
}

#[utoipa::path(get, path = "/api/v1/admin/users/{id}/keys", params(("id" = UserId, Path, description = "The user's id")), tag = "admin",
    responses((status = 200, body = KeyList), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn keys(State(s): State<AppState>, Auth(user): Auth, Path(id): Path<UserId>) -> ApiResult<Json<KeyList>> {
    admin_only(&user, "list keys")?;
    Ok(Json(KeyList {
        items: s.store.keys(id).await?,
    }))
}

#[utoipa::path(delete, path = "/api/v1/admin/users/{id}/keys/{key_id}", tag = "admin",
    description = "The key stops working at once, for requests already authenticated too once they finish.",
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_key(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path((id, key_id)): Path<(UserId, KeyId)>,
) -> ApiResult<StatusCode> {
    admin_only(&user, "revoke keys")?;
    s.store.revoke_key(id, key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/plugins/reload", tag = "server",
    description = "Reloads every component loaded from a file. A replacement that fails to load or does not satisfy the contract is refused (422) and the old component stays in service.",
    responses((status = 200, body = ReloadReport), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn reload(State(s): State<AppState>, Auth(user): Auth) -> ApiResult<Json<ReloadReport>> {
    admin_only(&user, "reload plugins")?;
    let plugins = s.engine.plugins().clone();
    let report = tokio::task::spawn_blocking(move || plugins.reload_all())
        .await
        .map_err(ApiError::internal)?;
    if !report.refused.is_empty() {
        let reasons: Vec<String> = report
            .refused
            .iter()
            .map(|r| format!("{}: {}", r.component, r.error))
            .collect();
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "reload_refused",
            format!("kept the loaded component: {}", reasons.join("; ")),
        ));
    }
    Ok(Json(report))
}
