//! `http-send`, the contract's HTTP request in one call (`wit/plugin.wit`):
//! the rules of the transport's `wasi:http` (`super::http`: its granted
//! origins, its keep-alive pool and connector, `limits.max_sockets`, the
//! call's deadline, the hop-by-hop headers only the host sets), without
//! what a `wasi:http` request costs around them: some thirty resource
//! calls out of the guest (fields, request, body stream, response future,
//! pollables, timers, response, body), a task spawned per send and channels
//! for both bodies. Those were about 35% of the server's CPU on a webhook
//! send (#35, `docs/profile-webhook-send.md`).
//!
//! Written here rather than with a client crate: the request goes through
//! the same hyper client and connector as `wasi:http`, so both paths share
//! one pool and one set of address checks; what is ours is the mapping to
//! and from the contract's records.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use wasmtime_wasi_http::{DEFAULT_FORBIDDEN_HEADERS, Error};

use super::http::{HttpHooks, client_error, origin};
use crate::outbound::redact;
use crate::plugins::bindings::host::{HttpError, HttpHeader, HttpRequest, HttpResponse};

/// Largest response body handed to the guest; the rest is read and
/// dropped, so the connection can serve the next request.
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Header bytes one request may carry, as one `wasi:http` fields resource
/// may (`super::http::HTTP_FIELD_BYTES`).
const MAX_HEADER_BYTES: usize = 32 * 1024;

/// The request as hyper takes it, or why it cannot be sent.
fn build(request: HttpRequest) -> Result<http::Request<wasmtime_wasi_http::WasiBody>, HttpError> {
    let invalid = |what: String| HttpError::Invalid(what);
    let uri: http::Uri = request
        .url
        .parse()
        .ok()
        .filter(|u: &http::Uri| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
        .ok_or_else(|| invalid("the URL is not an absolute http:// or https:// URL".into()))?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(invalid(format!("{} carries user info", redact(&uri))));
    }
    let method = http::Method::from_bytes(request.method.as_bytes())
        .map_err(|_| invalid(format!("method {:?}", request.method)))?;
    let mut builder = http::Request::builder().method(method).uri(uri);
    let mut bytes = 0usize;
    for h in request.headers {
        let name = http::HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| invalid(format!("header name {:?}", h.name)))?;
        if DEFAULT_FORBIDDEN_HEADERS.contains(&name) {
            return Err(invalid(format!("header {name}: the host sets it")));
        }
        if name == http::header::CONTENT_LENGTH {
            // The body's length is the header; a different one is a mistake.
            if h.value != request.body.len().to_string().as_bytes() {
                return Err(invalid(format!(
                    "content-length {:?} is not the body's {} bytes",
                    String::from_utf8_lossy(&h.value),
                    request.body.len()
                )));
            }
            continue;
        }
        bytes += name.as_str().len() + h.value.len();
        if bytes > MAX_HEADER_BYTES {
            return Err(invalid(format!("headers over {MAX_HEADER_BYTES} bytes")));
        }
        let value = http::HeaderValue::from_bytes(&h.value).map_err(|_| invalid(format!("header {name}'s value")))?;
        builder = builder.header(name, value);
    }
    let body = Full::new(Bytes::from(request.body))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
    builder.body(body).map_err(|e| invalid(e.to_string()))
}

/// Sends the request and reads the whole response, within the shorter of
/// the guest's timeout and the call's deadline.
pub async fn send(hooks: HttpHooks, request: HttpRequest) -> Result<HttpResponse, HttpError> {
    let timeout = Duration::from_millis(request.timeout_ms.into()).min(hooks.deadline);
    let request = build(request)?;
    if let Err(reason) = origin(&hooks.grants, request.uri()) {
        hooks.refusal.note(format!(
            "the host refused a request to {}: its origin is not in this transport's capabilities.http",
            redact(request.uri())
        ));
        tracing::warn!(plugin = hooks.plugin, uri = %redact(request.uri()), "http request denied: {reason}");
        return Err(HttpError::Denied(
            "the origin is not in this transport's capabilities.http".into(),
        ));
    }
    let Some(_open) = hooks.open() else {
        return Err(HttpError::Connect(
            "limits.max_sockets requests are already open".into(),
        ));
    };
    let exchange = async {
        let response = hooks
            .client
            .client
            .request(request)
            .await
            .map_err(|e| from_error(client_error(e)))?;
        let (parts, mut body) = response.into_parts();
        let mut kept = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| HttpError::Protocol(format!("reading the response: {e}")))?;
            if let Ok(data) = frame.into_data() {
                let room = MAX_RESPONSE_BODY.saturating_sub(kept.len());
                kept.extend_from_slice(&data[..data.len().min(room)]);
            }
        }
        let headers = parts
            .headers
            .iter()
            .map(|(name, value)| HttpHeader {
                name: name.as_str().to_string(),
                value: value.as_bytes().to_vec(),
            })
            .collect();
        Ok(HttpResponse {
            status: parts.status.as_u16(),
            headers,
            body: kept,
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(done) => done,
        Err(_) => Err(HttpError::Timeout(format!("no whole response within {timeout:?}"))),
    }
}

/// The contract's five kinds of failure, from what the client reported.
fn from_error(e: Error) -> HttpError {
    let text = e.to_string();
    match e {
        Error::HttpRequestDenied | Error::DestinationIpProhibited => HttpError::Denied(text),
        Error::ConnectionTimeout
        | Error::ConnectionReadTimeout
        | Error::ConnectionWriteTimeout
        | Error::HttpResponseTimeout
        | Error::DnsTimeout => HttpError::Timeout(text),
        Error::Connect(_)
        | Error::Tls(_)
        | Error::DnsError { .. }
        | Error::DestinationNotFound
        | Error::DestinationUnavailable
        | Error::DestinationIpUnroutable
        | Error::ConnectionRefused
        | Error::ConnectionTerminated
        | Error::ConnectionLimitReached
        | Error::TlsProtocolError
        | Error::TlsCertificateError
        | Error::TlsAlertReceived { .. } => HttpError::Connect(text),
        Error::HttpRequestUriInvalid | Error::HttpRequestMethodInvalid => HttpError::Invalid(text),
        _ => HttpError::Protocol(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(url: &str, headers: &[(&str, &[u8])], body: &[u8]) -> HttpRequest {
        HttpRequest {
            method: "POST".into(),
            url: url.into(),
            headers: headers
                .iter()
                .map(|(n, v)| HttpHeader {
                    name: n.to_string(),
                    value: v.to_vec(),
                })
                .collect(),
            body: body.to_vec(),
            timeout_ms: 1000,
        }
    }

    fn invalid(r: HttpRequest) -> String {
        match build(r) {
            Err(HttpError::Invalid(why)) => why,
            other => panic!("expected invalid, got {:?}", other.map(|r| r.uri().clone())),
        }
    }

    #[test]
    fn a_well_formed_request_keeps_its_headers_and_body() {
        let r = build(request("http://127.0.0.1:9/hook?a=1", &[("x-sig", b"\xff\x80")], b"{}")).unwrap();
        assert_eq!(r.method(), http::Method::POST);
        assert_eq!(r.uri().path_and_query().unwrap().as_str(), "/hook?a=1");
        assert_eq!(r.headers()["x-sig"].as_bytes(), b"\xff\x80");
        // A matching content-length is the body's own: hyper writes it once.
        let r = build(request("http://h/", &[("content-length", b"2")], b"{}")).unwrap();
        assert!(r.headers().get("content-length").is_none());
    }

    #[test]
    fn bad_urls_methods_and_headers_are_invalid() {
        for url in ["/relative", "ftp://h/x", "http:///x", "not a url"] {
            assert!(invalid(request(url, &[], b"")).contains("absolute"), "{url}");
        }
        assert!(invalid(request("http://u:p@h/", &[], b"")).contains("user info"));
        let mut r = request("http://h/", &[], b"");
        r.method = "PO ST".into();
        assert!(invalid(r).contains("method"));
        assert!(invalid(request("http://h/", &[("bad name", b"v")], b"")).contains("header name"));
        assert!(invalid(request("http://h/", &[("x", b"a\r\nb")], b"")).contains("value"));
        for hop in ["host", "connection", "transfer-encoding", "upgrade"] {
            assert!(
                invalid(request("http://h/", &[(hop, b"x")], b"")).contains("the host sets it"),
                "{hop}"
            );
        }
        assert!(invalid(request("http://h/", &[("content-length", b"9")], b"{}")).contains("not the body"));
        let big = vec![b'a'; MAX_HEADER_BYTES];
        assert!(invalid(request("http://h/", &[("x", &big)], b"")).contains("headers over"));
    }
}
