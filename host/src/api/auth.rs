//! Bearer API keys.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::{ApiError, AppState};
use crate::domain::User;

/// The user whose key authorized the request.
pub struct Auth(pub User);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <api key>"))?;
        let key = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ApiError::unauthorized("expected Authorization: Bearer <api key>"))?;
        let store = state.store.clone();
        let key = key.to_string();
        let user = tokio::task::spawn_blocking(move || store.user_by_key(&key))
            .await
            .map_err(ApiError::internal)??;
        user.map(Auth).ok_or_else(|| ApiError::unauthorized("unknown API key"))
    }
}
