//! The OpenAPI document, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::{ErrorBody, ErrorDetail};
use super::{admin, campaigns, lists, transports, unsubscribe};
use crate::domain::{
    Campaign, CampaignDraft, CampaignPatch, List, NewSubscriber, Stats, Status, Subscriber, SubscriberStatus,
};
use crate::store::{MessageRecord, MessageStatus, UpsertReport};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Posta", description = "Campaign email sender with sandboxed WebAssembly delivery adapters"),
    paths(
        lists::create, lists::index, lists::show, lists::delete, lists::add_subscribers, lists::subscribers,
        campaigns::create, campaigns::index, campaigns::show, campaigns::update, campaigns::delete,
        campaigns::send, campaigns::pause, campaigns::resume, campaigns::cancel, campaigns::duplicate,
        campaigns::messages, transports::index, unsubscribe::page, unsubscribe::confirm,
        super::health, super::openapi_document, admin::reload,
    ),
    components(schemas(
        ErrorBody, ErrorDetail, List, lists::NewList, NewSubscriber, Subscriber, SubscriberStatus, UpsertReport,
        lists::SubscribersBody, Campaign, CampaignDraft, CampaignPatch, Stats, Status, MessageRecord, MessageStatus,
        super::transports::TransportView, crate::plugins::reload::ReloadReport, crate::plugins::reload::Refusal,
    )),
    modifiers(&BearerAuth),
    security(("api_key" = [])),
)]
pub struct ApiDoc;

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
