//! /bounces: bounces and complaints reported by the user's MTA, ESP
//! webhooks or feedback loops.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Auth;
use super::error::ErrorBody;
use super::{ApiError, ApiJson, ApiResult, AppState};
use crate::domain::bounce::{Bounce, BounceType};
use crate::domain::{Email, MessageId, dsn};
use crate::store::BounceReport;

/// Longest `reason` kept.
const MAX_REASON: usize = 1024;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBounce {
    /// The bounced address; not needed with `message_id`.
    pub email: Option<Email>,
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
        .map(|id| {
            MessageId::parse_header(id).ok_or_else(|| {
                ApiError::invalid(
                    "message_id",
                    format!("{id:?} is not a Posta Message-ID (posta.CAMPAIGN.SUBSCRIBER@domain)"),
                )
            })
        })
        .transpose()?;
    let email = match (&body.email, message) {
        (Some(e), _) => e.to_string(),
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
        s.store.record_bounce(user.id, bounce, message, policy, now).await?,
    ))
}

/// What a delivery status notification or feedback report did.
#[derive(Debug, Serialize, ToSchema)]
pub struct DsnReport {
    pub bounces: Vec<BounceReport>,
    /// Recipients the report names without a failure (`delayed`,
    /// `delivered`, `relayed`): nothing was recorded for them.
    pub not_bounces: Vec<String>,
}

#[utoipa::path(post, path = "/api/v1/users/me/bounces/dsn", tag = "bounces",
    request_body(content = String, content_type = "text/plain",
        description = "the raw report as received: an RFC 3464 delivery status notification or an RFC 5965 ARF \
                       feedback report; any content type is accepted (message/rfc822 is usual)"),
    description = "each failed recipient is recorded as POST /bounces would (hard for 5.x.x, soft for a failed \
                   4.x.x, complaint for ARF), on the Posta message the report quotes when it quotes one",
    responses((status = 200, body = DsnReport), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn dsn(State(s): State<AppState>, Auth(user): Auth, body: Bytes) -> ApiResult<Json<DsnReport>> {
    let report = dsn::parse(&body).map_err(|e| ApiError::invalid("body", e.to_string()))?;
    // Mail Posta sent has one recipient: a report quoting its Message-ID
    // is about that message, for the recipient it names.
    let message = report.original_message_id.as_deref().and_then(MessageId::parse_header);
    let single = report.bounces.len() == 1;
    let now = Utc::now();
    let policy = s.bounces;
    let bounces: Vec<(Bounce, Option<MessageId>)> = report
        .bounces
        .into_iter()
        .map(|b| {
            let reason = b.reason.map(|r| r.chars().take(MAX_REASON).collect());
            let on = if single { message } else { None };
            let bounce = Bounce {
                email: b.email,
                kind: b.kind,
                reason,
                message_id: on.and(report.original_message_id.clone()),
                at: now,
            };
            (bounce, on)
        })
        .collect();
    // The report's own Message-ID makes a second posting of it a no-op,
    // also for bounces no Posta message could be matched to.
    let report_id = report.id.filter(|id| !id.is_empty() && id.len() <= 998);
    let recorded = s.store.record_report(user.id, report_id, bounces, policy, now).await?;
    Ok(Json(DsnReport {
        bounces: recorded,
        not_bounces: report.not_bounces,
    }))
}
