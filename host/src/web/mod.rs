//! The dashboard at `/`: server-rendered pages (maud, checked at compile
//! time, escaped by default) over the same operations and checks as the
//! API, for a user signed in with an API key. Assets are compiled into the
//! binary; no page needs JavaScript to be read, and the one script (live
//! progress) is a file, so the Content-Security-Policy allows no inline
//! script or style.

mod ab_form;
mod admin;
mod assets;
mod campaigns;
mod lists;
pub(crate) mod pages;
mod segment_form;
mod segments;
mod session;
mod signin;
mod streams;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

use crate::api::AppState;
pub use session::Sessions;

#[derive(Clone)]
pub struct Web {
    pub app: AppState,
    pub sessions: Arc<Sessions>,
    /// Cookies marked `Secure`: the dashboard's public URL is https.
    pub secure_cookies: bool,
    pub streams: Arc<streams::Streams>,
}

impl Web {
    pub fn new(app: AppState, secure_cookies: bool) -> Web {
        Web {
            app,
            sessions: Arc::new(Sessions::default()),
            secure_cookies,
            streams: Arc::new(streams::Streams::default()),
        }
    }
}

/// A strict policy: scripts, styles and everything else from this origin
/// only, no inline code, no framing; a campaign's HTML preview is a
/// sandboxed `srcdoc` frame that may show images from anywhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; \
                   connect-src 'self'; frame-src 'self'; form-action 'self'; base-uri 'none'; \
                   frame-ancestors 'none'";

async fn security_headers(req: axum::extract::Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

/// The largest form a page posts: a campaign with both 512 KiB bodies,
/// percent-encoded. The CSV upload streams and has its own limit.
const MAX_FORM_BYTES: usize = 4 << 20;

pub fn router(web: Web, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/", get(pages::home))
        .route("/signin", get(signin::form).post(signin::submit))
        .route("/signout", post(signin::signout))
        .route("/lists", get(lists::index).post(lists::create))
        .route("/lists/{id}", get(lists::show))
        .route(
            "/lists/{id}/import",
            // The file is counted against `server.max_import_bytes` as it
            // streams in, as the API's CSV import does.
            post(lists::import).layer(DefaultBodyLimit::disable()),
        )
        .route("/campaigns", get(campaigns::index).post(campaigns::create))
        .route("/campaigns/new", get(campaigns::new))
        .route("/campaigns/preview", post(campaigns::preview))
        .route("/campaigns/{id}", get(campaigns::show))
        .route("/campaigns/{id}/edit", get(campaigns::edit).post(campaigns::update))
        .route("/campaigns/{id}/action", post(campaigns::action))
        .route("/campaigns/{id}/events", get(campaigns::events))
        .route("/segments", get(segments::index))
        .route("/segments/new", get(segment_form::new).post(segment_form::create))
        .route("/segments/count", post(segment_form::count))
        .route("/segments/{id}", get(segments::show))
        .route(
            "/segments/{id}/edit",
            get(segment_form::edit).post(segment_form::update),
        )
        .route("/suppressions", get(pages::suppressions))
        .route("/bounces", get(pages::bounces))
        .route("/transports", get(pages::transports))
        .route("/admin/users", get(admin::users))
        .route("/admin/users/{id}", get(admin::user))
        .route("/admin/users/{id}/domains", post(admin::grant))
        .route("/admin/users/{id}/domains/remove", post(admin::take_away))
        .route("/assets/{file}", get(assets::serve))
        .layer(DefaultBodyLimit::max(max_body_bytes.min(MAX_FORM_BYTES)))
        .layer(middleware::from_fn(security_headers))
        .with_state(web)
}
