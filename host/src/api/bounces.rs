//! /bounces: bounces and complaints reported by the user's MTA, ESP
//! webhooks or feedback loops.

use axum::Json;
use axum::extract::State;
use chrono::Utc;
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::Auth;
use super::error::ErrorBody;
use super::{ApiError, ApiJson, ApiResult, AppState};
use crate::domain::bounce::{Bounce, BounceType, parse_message_id};
use crate::domain::validate_email;
use crate::store::BounceReport;

/// Longest `reason` kept.
const MAX_REASON: usize = 1024;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBounce {
    /// The bounced address; not needed with `message_id`.
    pub email: Option<String>,
    /// The Message-ID of the Posta message that bounced
    /// (`posta.CAMPAIGN.SUBSCRIBER@domain`); the bounce is then counted
    /// once per message and type, and shown on the message.
    pub message_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: BounceType,
    /// The diagnostic (`550 5.1.1 no such user`).
    #[schema(max_length = 1024)]
    pub reason: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/users/me/bounces", request_body = NewBounce, tag = "bounces",
    description = "hard bounces and complaints suppress the address at once; soft bounces once `[bounces] soft_limit` \
                   of them fall within `soft_window_days`",
    responses((status = 200, body = BounceReport), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(s): State<AppState>,
    Auth(user): Auth,
    ApiJson(body): ApiJson<NewBounce>,
) -> ApiResult<Json<BounceReport>> {
    let message = body
        .message_id
        .as_deref()
        .map(|id| parse_message_id("message_id", id))
        .transpose()?;
    let email = match (&body.email, message) {
        (Some(e), _) => {
            validate_email("email", e)?;
            e.clone()
        }
        // Taken from the message in the store.
        (None, Some(_)) => String::new(),
        (None, None) => return Err(ApiError::invalid("email", "email or message_id is required")),
    };
    if body.reason.as_ref().is_some_and(|r| r.len() > MAX_REASON) {
        return Err(ApiError::invalid("reason", format!("longer than {MAX_REASON} bytes")));
    }
    let now = Utc::now();
    let bounce = Bounce {
        email,
        kind: body.kind,
        reason: body.reason,
        message_id: body.message_id,
        at: now,
    };
    let policy = s.bounces;
    Ok(Json(
        s.db(move |st| st.record_bounce(user.id, bounce, message, &policy, now))
            .await?,
    ))
}
