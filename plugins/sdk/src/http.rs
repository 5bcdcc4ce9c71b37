//! Outbound HTTP for transports, through the host's `http-send`: one call
//! per request, where a `wasi:http` client makes some thirty (fields,
//! request, body stream, response future, pollables, response, body). The
//! host sends the request only if the transport's `http` capability lists
//! the URL's origin, and it does DNS, TLS and connection handling itself,
//! over a keep-alive pool per transport. `wasi:http` stays available to a
//! component that wants streaming bodies or its own client.

use std::fmt;
use std::time::Duration;

use crate::host::{self, HttpHeader, HttpRequest};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The host refused the request: its origin is not granted.
    Denied(String),
    /// Connecting or waiting for the response took longer than the timeout.
    Timeout(String),
    /// The server could not be reached (refused, reset, DNS).
    Connect(String),
    /// The request could not be built (bad URL or header).
    Invalid(String),
    /// Anything else the HTTP stack reported.
    Protocol(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Denied(m) => write!(f, "request denied by the host: {m}"),
            HttpError::Timeout(m) => write!(f, "timed out: {m}"),
            HttpError::Connect(m) => write!(f, "cannot connect: {m}"),
            HttpError::Invalid(m) => write!(f, "invalid request: {m}"),
            HttpError::Protocol(m) => write!(f, "http error: {m}"),
        }
    }
}

impl std::error::Error for HttpError {}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    /// At most 64 KiB of the body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header with this name (case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// `scheme://host[:port]` of a URL, for error texts: never the path, query
/// or user info, which may carry secrets.
pub fn origin(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(invalid URL)".into();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    format!("{scheme}://{host}")
}

/// Sends `POST url` with these headers and body and waits for the whole
/// response (its body's first 64 KiB), all within `timeout`.
pub fn post(url: &str, headers: &[(&str, &[u8])], body: &[u8], timeout: Duration) -> Result<Response, HttpError> {
    request("POST", url, headers, body, timeout)
}

/// Sends a request with any method and waits for the whole response (its
/// body's first 64 KiB), all within `timeout` (and the call's deadline).
/// `Content-Length` is the body's; the host sets `Host` and the other
/// hop-by-hop headers itself and refuses them here.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
    timeout: Duration,
) -> Result<Response, HttpError> {
    let request = HttpRequest {
        method: method.to_string(),
        url: url.to_string(),
        headers: headers
            .iter()
            .map(|(name, value)| HttpHeader {
                name: name.to_string(),
                value: value.to_vec(),
            })
            .collect(),
        body: body.to_vec(),
        timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
    };
    match host::http_send(&request) {
        Ok(r) => Ok(Response {
            status: r.status,
            headers: r.headers.into_iter().map(|h| (h.name, h.value)).collect(),
            body: r.body,
        }),
        // Scheme and host only in what is stored with the message: paths
        // and queries often hold a credential.
        Err(e) => Err(match e {
            host::HttpError::Denied(m) => HttpError::Denied(m),
            host::HttpError::Timeout(m) => HttpError::Timeout(format!("{m} ({})", origin(url))),
            host::HttpError::Connect(m) => HttpError::Connect(format!("{m} ({})", origin(url))),
            host::HttpError::Invalid(m) => HttpError::Invalid(m),
            host::HttpError::Protocol(m) => HttpError::Protocol(m),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_hide_paths_and_credentials() {
        assert_eq!(
            origin("https://hooks.example.com/t/SECRET?k=v"),
            "https://hooks.example.com"
        );
        assert_eq!(origin("http://user:pw@h:8080/x"), "http://h:8080");
        assert_eq!(origin("nonsense"), "(invalid URL)");
    }
}
