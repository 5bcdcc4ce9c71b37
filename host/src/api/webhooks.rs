//! /users/me/webhooks: outgoing event webhooks and their delivery log.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Auth;
use super::error::ErrorBody;
use super::{ApiError, ApiJson, ApiResult, AppState, Paging};
use crate::domain::WebhookId;
use crate::domain::webhook::Delivery;
use crate::domain::webhook::{EventKind, NewWebhook, Webhook};
use crate::outbound::{Origin, OriginRule, PublicOnly};
use crate::store::Page;

/// A webhook as the API shows it: never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    pub id: WebhookId,
    pub url: String,
    pub events: Vec<EventKind>,
    pub created_at: DateTime<Utc>,
}

impl From<Webhook> for WebhookView {
    fn from(w: Webhook) -> WebhookView {
        WebhookView {
            id: w.id,
            url: w.url,
            events: w.events,
            created_at: w.created_at,
        }
    }
}

/// The answer to creating a webhook: the only time its secret is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// The HMAC-SHA256 key of `X-Posta-Signature`.
    pub secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub items: Vec<WebhookView>,
}

#[utoipa::path(post, path = "/api/v1/users/me/webhooks", tag = "webhooks", request_body = NewWebhook,
    description = "Each event is POSTed as JSON `{id, type, created_at, data}` with `X-Posta-Signature: t=UNIX,v1=HEX`, \
the hex HMAC-SHA256 of `t.body` under the secret. Retried with backoff until a 2xx answer.",
    responses((status = 201, body = CreatedWebhook), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(s): State<AppState>,
    Auth(user): Auth,
    ApiJson(body): ApiJson<NewWebhook>,
) -> ApiResult<(StatusCode, Json<CreatedWebhook>)> {
    let uri = body.validate()?;
    let origin = Origin::of(&uri).map_err(|e| ApiError::invalid("url", e))?;
    PublicOnly {
        allow_private: s.allow_private_webhooks,
    }
    .admits(&origin)
    .map_err(|e| ApiError::invalid("url", e))?;
    let secret = body
        .secret
        .clone()
        .unwrap_or_else(|| format!("whsec_{}", hex::encode(rand::random::<[u8; 24]>())));
    let hook = {
        let secret = secret.clone();
        s.store
            .create_webhook(user.id, body.url, body.events, secret, Utc::now())
            .await?
    };
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook {
            webhook: hook.into(),
            secret,
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/users/me/webhooks", tag = "webhooks",
    responses((status = 200, body = WebhookList)))]
pub async fn index(State(s): State<AppState>, Auth(user): Auth) -> ApiResult<Json<WebhookList>> {
    let hooks = s.store.webhooks(user.id).await?;
    Ok(Json(WebhookList {
        items: hooks.into_iter().map(WebhookView::from).collect(),
    }))
}

#[utoipa::path(get, path = "/api/v1/users/me/webhooks/{id}", params(("id" = WebhookId, Path, description = "The webhook's id")), tag = "webhooks",
    responses((status = 200, body = WebhookView), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path(id): Path<WebhookId>,
) -> ApiResult<Json<WebhookView>> {
    Ok(Json(s.store.webhook(user.id, id).await?.into()))
}

#[utoipa::path(delete, path = "/api/v1/users/me/webhooks/{id}", params(("id" = WebhookId, Path, description = "The webhook's id")), tag = "webhooks",
    description = "Deletes the webhook; deliveries not yet made are dropped.",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(State(s): State<AppState>, Auth(user): Auth, Path(id): Path<WebhookId>) -> ApiResult<StatusCode> {
    s.store.delete_webhook(user.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/users/me/webhooks/{id}/deliveries", params(("id" = WebhookId, Path, description = "The webhook's id"), Paging), tag = "webhooks",
    description = "Events for this webhook, oldest first, with every attempt (status or error, duration). \
Finished deliveries are kept `webhooks.keep_days` days.",
    responses((status = 200, body = Page<Delivery>), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn deliveries(
    State(s): State<AppState>,
    Auth(user): Auth,
    Path(id): Path<WebhookId>,
    Query(p): Query<Paging>,
) -> ApiResult<Json<Page<Delivery>>> {
    let limit = p.limit()?;
    Ok(Json(s.store.deliveries(user.id, id, p.after, limit).await?))
}
