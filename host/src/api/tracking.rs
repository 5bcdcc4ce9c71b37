//! The tracked links and the open pixel in sent mail (`domain::tracking`).
//! Public and hot: each answers from the signed mark and the campaign's
//! cached links, and hands the hit to the recorder (`crate::tracking`)
//! without waiting for storage. What is not counted is still answered —
//! a person over a proxy's rate still reaches the link: HEAD requests
//! (link checkers), clients over `tracking_rate_per_ip`, and (when the
//! batch is stored) hits within a second of the message's delivery, which
//! is how mail scanners fetch.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiResult, AppState};
use crate::domain::tracking::{Action, Hit, Mark, PIXEL_GIF};
use crate::listener::ClientAddr;

/// The mark in a tracked URL, if this server signed it.
fn mark(s: &AppState, token: &str) -> ApiResult<Mark> {
    Mark::open(&s.secret, token).ok_or_else(ApiError::not_found)
}

/// Hands the hit over unless it is not to be counted.
fn count(s: &AppState, method: &Method, client: Option<axum::Extension<ClientAddr>>, mark: Mark, action: Action) {
    let kind = match action {
        Action::Open => "open",
        Action::Click(_) => "click",
    };
    let over = client.is_some_and(|c| !s.tracking_limit.admits(c.0.0));
    if method == Method::HEAD || over {
        metrics::counter!(crate::metrics::TRACKING_HITS, "kind" => kind, "outcome" => "unrecorded").increment(1);
        return;
    }
    s.tracker.hit(Hit {
        campaign: mark.campaign,
        subscriber: mark.subscriber,
        action,
        at: chrono::Utc::now(),
    });
}

#[utoipa::path(get, path = "/t/{token}", tag = "tracking",
    description = "A tracked link in sent mail: redirects (302) to the link's target as stored with the campaign, \
                   and counts the click (not for HEAD, nor within a second of delivery)",
    security(()),
    params(("token" = String, Path, description = "the signed mark")),
    responses((status = 302, description = "to the link's target"), (status = 404, body = super::error::ErrorBody)))]
pub async fn click(
    State(s): State<AppState>,
    method: Method,
    client: Option<axum::Extension<ClientAddr>>,
    Path(token): Path<String>,
) -> ApiResult<Response> {
    let mark = mark(&s, &token)?;
    let link = mark.link.ok_or_else(ApiError::not_found)?;
    let links = s.tracker.links(mark.campaign).await?;
    let target = links.target(link).ok_or_else(ApiError::not_found)?;
    let location = HeaderValue::from_str(target).map_err(|_| ApiError::not_found())?;
    count(&s, &method, client, mark, Action::Click(link));
    Ok((
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        ],
    )
        .into_response())
}

#[utoipa::path(get, path = "/o/{token}", tag = "tracking",
    description = "The open pixel in sent mail: a 1×1 transparent GIF; counts the open (not for HEAD, nor \
                   within a second of delivery)",
    security(()),
    params(("token" = String, Path, description = "the signed mark")),
    responses((status = 200, content_type = "image/gif"), (status = 404, body = super::error::ErrorBody)))]
pub async fn open(
    State(s): State<AppState>,
    method: Method,
    client: Option<axum::Extension<ClientAddr>>,
    Path(token): Path<String>,
) -> ApiResult<Response> {
    let mark = mark(&s, &token)?;
    if mark.link.is_some() {
        return Err(ApiError::not_found());
    }
    count(&s, &method, client, mark, Action::Open);
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/gif")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store, max-age=0")),
        ],
        PIXEL_GIF,
    )
        .into_response())
}
