//! Server-level actions for admin users.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::auth::Auth;
use super::error::ErrorBody;
use super::{ApiError, ApiResult, AppState};
use crate::plugins::reload::ReloadReport;

#[utoipa::path(post, path = "/api/v1/plugins/reload", tag = "server",
    description = "Reloads every component loaded from a file. A replacement that fails to load or does not satisfy the contract is refused (422) and the old component stays in service.",
    responses((status = 200, body = ReloadReport), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn reload(State(s): State<AppState>, Auth(user): Auth) -> ApiResult<Json<ReloadReport>> {
    if !user.admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only admin users may reload plugins",
        ));
    }
    let plugins = s.engine.plugins().clone();
    let report = tokio::task::spawn_blocking(move || plugins.reload(true))
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
