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
        // On redb this read stays on the async worker (`inline` in
        // `store::contract`): the hop to a pool thread costs more than it.
        let user = state.store.user_by_key(key.to_string()).await?;
        user.map(Auth).ok_or_else(|| ApiError::unauthorized("unknown API key"))
    }
}
