//! Signing in with an API key, and out.

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{AppendHeaders, Html, IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::Web;
use super::pages::{forbidden, page};
use super::session::{COOKIE_NAME, SIGNIN_COOKIE, Signed, cookie, same_token, set_cookie, token};

fn signin_page(web: &Web, form_token: &str, error: Option<&str>, status: StatusCode) -> Response {
    let body = html! {
        p { "Sign in with one of your API keys (" code { "posta user add" } " or an admin prints one)." }
        form method="post" action="/signin" {
            input type="hidden" name="csrf" value=(form_token);
            label for="key" { "API key" }
            input id="key" name="key" type="password" autocomplete="current-password" required
                aria-describedby=[error.map(|_| "error-key")];
            @if let Some(e) = error {
                p.error id="error-key" role="alert" { (e) }
            }
            button type="submit" { "Sign in" }
        }
    };
    let cookie = set_cookie(SIGNIN_COOKIE, Some(form_token), web.secure_cookies);
    (status, [cookie], Html(page("Sign in", None, body).into_string())).into_response()
}

pub async fn form(State(web): State<Web>) -> Response {
    signin_page(&web, &token(), None, StatusCode::OK)
}

#[derive(Deserialize)]
pub struct SignIn {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key: String,
}

pub async fn submit(State(web): State<Web>, headers: HeaderMap, Form(f): Form<SignIn>) -> Response {
    // The form's token must match the cookie set with the form: another
    // site cannot sign a browser in to an account of its choosing.
    if !cookie(&headers, SIGNIN_COOKIE).is_some_and(|t| same_token(t, &f.csrf)) {
        return forbidden(None);
    }
    let user = match web.app.store.user_by_key(f.key.trim().to_string()).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            return signin_page(&web, &token(), Some("Unknown API key."), StatusCode::UNAUTHORIZED);
        }
        Err(e) => {
            tracing::error!("sign-in: {e}");
            return signin_page(
                &web,
                &token(),
                Some("Cannot sign in right now."),
                StatusCode::SERVICE_UNAVAILABLE,
            );
        }
    };
    let session = web.sessions.open(user.id, f.key.trim());
    (
        // Both cookies: `[(name, value); 2]` would keep only the last.
        AppendHeaders([
            set_cookie(COOKIE_NAME, Some(&session), web.secure_cookies),
            set_cookie(SIGNIN_COOKIE, None, web.secure_cookies),
        ]),
        Redirect::to("/campaigns"),
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

pub async fn signout(State(web): State<Web>, signed: Signed, Form(f): Form<CsrfOnly>) -> Response {
    if let Some(r) = signed.forged(&f.csrf) {
        return r;
    }
    web.sessions.close(&signed.token);
    (
        [set_cookie(COOKIE_NAME, None, web.secure_cookies)],
        Redirect::to("/signin"),
    )
        .into_response()
}
