//! Outbound HTTP for transports through `wasi:http`. The host sends the
//! request only if the transport's `http` capability lists the URL's
//! origin, and it does DNS, TLS and connection handling itself.

use std::fmt;
use std::time::Duration;

use crate::bindings::wasi::clocks::monotonic_clock;
use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;
use crate::net::wait;

/// Largest response body kept; the rest is read and dropped.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

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

/// `scheme://authority/path?query`, split without a URL crate: the host
/// re-validates the URL anyway before anything is sent.
struct Target<'a> {
    scheme: Scheme,
    authority: &'a str,
    path: &'a str,
}

fn split_url(url: &str) -> Result<Target<'_>, HttpError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| HttpError::Invalid("the URL is not absolute (scheme://host/…)".into()))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => return Err(HttpError::Invalid(format!("unsupported scheme {other:?}"))),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], &rest[i..]),
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(HttpError::Invalid(format!("{} has no usable host", origin(url))));
    }
    Ok(Target {
        scheme,
        authority,
        path,
    })
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
/// response, all within `timeout`.
pub fn post(url: &str, headers: &[(&str, &[u8])], body: &[u8], timeout: Duration) -> Result<Response, HttpError> {
    let target = split_url(url)?;
    let mut fields: Vec<(String, Vec<u8>)> = headers.iter().map(|(n, v)| (n.to_string(), v.to_vec())).collect();
    // A known length instead of chunked encoding: many receivers read
    // Content-Length only.
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-length")) {
        fields.push(("content-length".into(), body.len().to_string().into_bytes()));
    }
    let fields = Fields::from_list(&fields).map_err(|e| HttpError::Invalid(format!("header: {e:?}")))?;
    let request = OutgoingRequest::new(fields);
    let invalid = |what: &str| HttpError::Invalid(what.to_string());
    request.set_method(&Method::Post).map_err(|_| invalid("method"))?;
    request
        .set_scheme(Some(&target.scheme))
        .map_err(|_| invalid("scheme"))?;
    request
        .set_authority(Some(target.authority))
        .map_err(|_| invalid("authority"))?;
    request
        .set_path_with_query(Some(target.path))
        .map_err(|_| invalid("path"))?;
    let outgoing = request.body().map_err(|_| invalid("body taken twice"))?;

    let nanos = timeout.as_nanos().min(u64::MAX as u128) as u64;
    let deadline = monotonic_clock::now().saturating_add(nanos);

    // No `request-options`: wasmtime-wasi-http 48 keeps every options
    // handle passed to `handle` in the instance's table (one per request,
    // until the host's handle cap). The deadline is ours anyway: every
    // wait below is bounded by it, and Posta's host bounds its own
    // timeouts by the call's deadline.
    let pending = outgoing_handler::handle(request, None).map_err(from_code)?;
    // A failed body write usually means the request itself failed and the
    // host dropped the body; the response future then carries the reason,
    // so it is awaited either way. And once the host has taken the whole
    // body (Content-Length reached) it may close the stream before our
    // flush: that is no error, the response decides.
    let body_error = write_body(&outgoing, body, deadline)?;
    let finished = OutgoingBody::finish(outgoing, None);

    let response = loop {
        match pending.get() {
            None => {
                let ready = pending.subscribe();
                // Scheme and host only: paths and queries often hold a
                // credential, and this text is stored with the message.
                if let Err(e) = wait(&ready, deadline, || format!("waiting for {}", origin(url))) {
                    return Err(match (body_error, finished) {
                        (Some(e), _) => body_stream_error(e),
                        (None, Err(code)) => from_code(code),
                        (None, Ok(())) => HttpError::Timeout(e.to_string()),
                    });
                }
            }
            Some(Ok(Ok(response))) => break response,
            Some(Ok(Err(code))) => return Err(from_code(code)),
            Some(Err(())) => return Err(HttpError::Protocol("response already taken".into())),
        }
    };
    let status = response.status();
    let headers = response.headers().entries();
    let incoming = response
        .consume()
        .map_err(|_| HttpError::Protocol("body taken twice".into()))?;
    let mut body = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|_| HttpError::Protocol("body stream taken twice".into()))?;
        loop {
            match stream.read(16 * 1024) {
                Ok(chunk) if chunk.is_empty() => {
                    let ready = stream.subscribe();
                    wait(&ready, deadline, || "reading the response".into())
                        .map_err(|e| HttpError::Timeout(e.to_string()))?;
                }
                Ok(chunk) => {
                    let keep = chunk.len().min(MAX_RESPONSE_BODY - body.len().min(MAX_RESPONSE_BODY));
                    body.extend_from_slice(&chunk[..keep]);
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(HttpError::Protocol(format!(
                        "reading the response: {}",
                        e.to_debug_string()
                    )));
                }
            }
        }
    }
    drop(IncomingBody::finish(incoming));
    drop(response);
    Ok(Response { status, headers, body })
}

/// Writes the whole body. `Ok(Some(e))`: the stream failed before every
/// byte was written (the caller learns why from the response future);
/// a stream closed after the last byte is not a failure.
fn write_body(outgoing: &OutgoingBody, body: &[u8], deadline: u64) -> Result<Option<StreamError>, HttpError> {
    let stream = outgoing
        .write()
        .map_err(|_| HttpError::Invalid("body stream taken twice".into()))?;
    let mut rest = body;
    while !rest.is_empty() {
        let room = match stream.check_write() {
            Ok(room) => room,
            Err(e) => return Ok(Some(e)),
        };
        if room == 0 {
            let ready = stream.subscribe();
            wait(&ready, deadline, || "sending the body".into()).map_err(|e| HttpError::Timeout(e.to_string()))?;
            continue;
        }
        let n = rest.len().min(room as usize);
        if let Err(e) = stream.write(&rest[..n]) {
            return Ok(Some(e));
        }
        rest = &rest[n..];
    }
    match stream.flush() {
        Ok(()) | Err(StreamError::Closed) => Ok(None),
        Err(e) => Ok(Some(e)),
    }
}

fn body_stream_error(e: StreamError) -> HttpError {
    match e {
        StreamError::Closed => HttpError::Protocol("request body closed early".into()),
        StreamError::LastOperationFailed(e) => HttpError::Protocol(e.to_debug_string()),
    }
}

fn from_code(code: ErrorCode) -> HttpError {
    let text = format!("{code:?}");
    match code {
        ErrorCode::HttpRequestDenied => {
            HttpError::Denied("the origin is not in this transport's capabilities.http".into())
        }
        ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::HttpResponseTimeout => HttpError::Timeout(text),
        ErrorCode::DnsTimeout
        | ErrorCode::DnsError(_)
        | ErrorCode::DestinationNotFound
        | ErrorCode::DestinationUnavailable
        | ErrorCode::DestinationIpProhibited
        | ErrorCode::DestinationIpUnroutable
        | ErrorCode::ConnectionRefused
        | ErrorCode::ConnectionTerminated
        | ErrorCode::ConnectionLimitReached
        | ErrorCode::TlsProtocolError
        | ErrorCode::TlsCertificateError
        | ErrorCode::TlsAlertReceived(_) => HttpError::Connect(text),
        ErrorCode::HttpRequestUriInvalid | ErrorCode::HttpRequestMethodInvalid => HttpError::Invalid(text),
        _ => HttpError::Protocol(text),
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

    #[test]
    fn urls_split() {
        let t = split_url("https://hooks.example.com:8443/a/b?x=1").unwrap();
        assert_eq!(t.authority, "hooks.example.com:8443");
        assert_eq!(t.path, "/a/b?x=1");
        assert_eq!(split_url("http://h").unwrap().path, "/");
        assert_eq!(split_url("http://h?q").unwrap().path, "?q");
        assert!(split_url("ftp://h/").is_err());
        assert!(split_url("http://user@h/").is_err());
        assert!(split_url("h/x").is_err());
    }
}
