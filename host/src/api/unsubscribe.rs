//! The links in `List-Unsubscribe`: GET shows a confirmation form (mail
//! scanners prefetch links, so a GET must not unsubscribe anyone); POST
//! unsubscribes, which is also RFC 8058's one-click request.

use axum::extract::{Path, State};
use axum::response::Html;

use super::{ApiError, ApiResult, AppState};
use crate::domain::unsubscribe::verify;
use crate::domain::{CampaignId, MessageId, SubscriberId};

fn check(s: &AppState, campaign: CampaignId, subscriber: SubscriberId, token: &str) -> ApiResult<()> {
    if verify(&s.secret, MessageId { campaign, subscriber }, token) {
        Ok(())
    } else {
        Err(ApiError::not_found())
    }
}

#[utoipa::path(get, path = "/unsubscribe/{campaign}/{subscriber}/{token}", tag = "unsubscribe",
    description = "Confirmation page for the link in List-Unsubscribe; changes nothing",
    security(()),
    responses((status = 200, content_type = "text/html"), (status = 404, body = super::error::ErrorBody)))]
pub async fn page(
    State(s): State<AppState>,
    Path((campaign, subscriber, token)): Path<(CampaignId, SubscriberId, String)>,
) -> ApiResult<Html<String>> {
    check(&s, campaign, subscriber, &token)?;
    Ok(Html(format!(
        "<!doctype html><meta charset=utf-8><title>Unsubscribe</title>\
         <form method=post action=\"/unsubscribe/{campaign}/{subscriber}/{token}\">\
         <p>Stop receiving these emails?</p><button type=submit>Unsubscribe</button></form>"
    )))
}

#[utoipa::path(post, path = "/unsubscribe/{campaign}/{subscriber}/{token}", tag = "unsubscribe",
    description = "Unsubscribes the subscriber (RFC 8058 one-click)",
    security(()),
    responses((status = 200, content_type = "text/html"), (status = 404, body = super::error::ErrorBody)))]
pub async fn confirm(
    State(s): State<AppState>,
    Path((campaign, subscriber, token)): Path<(CampaignId, SubscriberId, String)>,
) -> ApiResult<Html<&'static str>> {
    check(&s, campaign, subscriber, &token)?;
    s.store.unsubscribe(campaign, subscriber).await?;
    Ok(Html(
        "<!doctype html><meta charset=utf-8><title>Unsubscribed</title><p>You are unsubscribed.</p>",
    ))
}
