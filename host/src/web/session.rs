//! Dashboard sessions: signing in with an API key opens one, kept in this
//! process's memory (a restart signs everybody out, which a dashboard can
//! afford) and named by a random cookie. Every form carries the session's
//! CSRF token; the cookie is also `SameSite=Strict`. A session lives no
//! longer than the API key that opened it: each request looks the key up
//! again, so revoking it (API, CLI, another node) signs the page out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use subtle::ConstantTimeEq;

use super::Web;
use crate::domain::{User, UserId};

pub const COOKIE_NAME: &str = "posta_session";
/// The sign-in form's own token, before there is a session (login CSRF).
pub const SIGNIN_COOKIE: &str = "posta_signin";
/// A session ends this long after its last request.
const IDLE: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept per user (the oldest goes) and in all: memory is bounded
/// whatever is signed in.
const PER_USER: usize = 20;
const TOTAL: usize = 10_000;

struct Session {
    user: UserId,
    /// The API key signed in with. Kept in this process's memory only, as
    /// the session token itself is: either one opens the account.
    key: String,
    csrf: String,
    used: Instant,
}

#[derive(Default)]
pub struct Sessions {
    by_token: Mutex<HashMap<String, Session>>,
}

/// A random token: 32 bytes, hex.
pub fn token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl Sessions {
    /// Opens a session for `user`, signed in with `key`; returns its
    /// cookie token.
    pub fn open(&self, user: UserId, key: &str) -> String {
        let mut map = self.by_token.lock().expect("sessions lock");
        let now = Instant::now();
        map.retain(|_, s| now.duration_since(s.used) < IDLE);
        let mut own: Vec<(String, Instant)> = map
            .iter()
            .filter(|(_, s)| s.user == user)
            .map(|(t, s)| (t.clone(), s.used))
            .collect();
        own.sort_by_key(|(_, used)| *used);
        for (t, _) in own.iter().take((own.len() + 1).saturating_sub(PER_USER)) {
            map.remove(t);
        }
        if map.len() >= TOTAL
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.used).map(|(t, _)| t.clone())
        {
            map.remove(&oldest);
        }
        let t = token();
        map.insert(
            t.clone(),
            Session {
                user,
                key: key.to_string(),
                csrf: token(),
                used: now,
            },
        );
        t
    }

    pub fn close(&self, token: &str) {
        self.by_token.lock().expect("sessions lock").remove(token);
    }

    /// The user, API key and CSRF token of a live session, touching it.
    fn find(&self, token: &str) -> Option<(UserId, String, String)> {
        let mut map = self.by_token.lock().expect("sessions lock");
        let now = Instant::now();
        let s = map.get_mut(token)?;
        if now.duration_since(s.used) >= IDLE {
            map.remove(token);
            return None;
        }
        s.used = now;
        Some((s.user, s.key.clone(), s.csrf.clone()))
    }
}

/// A cookie's value from the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `Set-Cookie` for `name`: HttpOnly, SameSite=Strict, Secure when the
/// dashboard is served over TLS; `None` clears it.
pub fn set_cookie(name: &str, value: Option<&str>, secure: bool) -> (axum::http::HeaderName, HeaderValue) {
    let secure = if secure { "; Secure" } else { "" };
    let v = match value {
        Some(v) => format!(
            "{name}={v}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            IDLE.as_secs()
        ),
        None => format!("{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    };
    (
        SET_COOKIE,
        HeaderValue::from_str(&v).expect("a cookie of hex and ASCII"),
    )
}

/// Whether a form's token is the expected one, in constant time.
pub fn same_token(expected: &str, given: &str) -> bool {
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// The signed-in user of a page request; without a live session the
/// request is sent to the sign-in page.
pub struct Signed {
    pub user: User,
    pub csrf: String,
    pub token: String,
}

impl Signed {
    /// The refusal of a form whose CSRF token is not this session's.
    pub fn forged(&self, csrf: &str) -> Option<Response> {
        (!same_token(&self.csrf, csrf)).then(|| super::pages::forbidden(Some(self)))
    }
}

impl FromRequestParts<Web> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, web: &Web) -> Result<Self, Self::Rejection> {
        let to_signin = || Redirect::to("/signin").into_response();
        let Some(token) = cookie(&parts.headers, COOKIE_NAME) else {
            return Err(to_signin());
        };
        let Some((user_id, key, csrf)) = web.sessions.find(token) else {
            return Err(to_signin());
        };
        // The key must still be the user's: a revoked key (or a removed
        // user) signs its sessions out. The same point read as the API's
        // (`api::auth`).
        let user = web.app.store.user_by_key(key).await.map_err(crate::api::ApiError::from);
        match user {
            Ok(Some(user)) if user.id == user_id => Ok(Signed {
                user,
                csrf,
                token: token.to_string(),
            }),
            Ok(_) => {
                web.sessions.close(token);
                Err(to_signin())
            }
            // An outage decides nothing: the session stays.
            Err(e) => {
                tracing::warn!("dashboard session check: {}", e.message);
                Err(super::pages::unavailable())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_bounded_per_user_and_closable() {
        let s = Sessions::default();
        let user = UserId::new(1);
        let tokens: Vec<String> = (0..PER_USER + 5).map(|_| s.open(user, "posta_k")).collect();
        assert!(s.find(&tokens[0]).is_none(), "the oldest went");
        assert!(s.find(tokens.last().unwrap()).is_some());
        assert_eq!(s.by_token.lock().unwrap().len(), PER_USER);
        s.close(tokens.last().unwrap());
        assert!(s.find(tokens.last().unwrap()).is_none());
        assert!(s.find("nope").is_none());
    }

    #[test]
    fn cookies_and_tokens() {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_static("a=1; posta_session=abc; b=2"));
        assert_eq!(cookie(&h, COOKIE_NAME), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd") && !same_token("", ""));
        let (_, v) = set_cookie(COOKIE_NAME, Some("t"), true);
        let v = v.to_str().unwrap();
        assert!(v.contains("HttpOnly") && v.contains("SameSite=Strict") && v.contains("Secure"));
    }
}
