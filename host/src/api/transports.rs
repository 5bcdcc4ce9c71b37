//! GET /transports: what campaigns can name, without config values.

use axum::Json;
use axum::extract::State;

use super::auth::Auth;
use super::error::ErrorBody;
use super::{ApiResult, AppState};
use crate::plugins::TransportInfo;

#[utoipa::path(get, path = "/api/v1/users/me/transports", tag = "transports",
    responses((status = 200, body = Vec<TransportInfo>), (status = 401, body = ErrorBody)))]
pub async fn index(State(s): State<AppState>, _auth: Auth) -> ApiResult<Json<Vec<TransportInfo>>> {
    Ok(Json(
        s.engine.plugins().transports.values().map(|t| t.info.clone()).collect(),
    ))
}
