//! A per-client rate limit for the public endpoints (unsubscribe links,
//! health): anyone can call them, so one client must not be able to keep
//! the server busy. A token bucket per client address, refilled at `rate`
//! per second up to twice that; a refused request costs a map lookup and
//! gets 429 with `Retry-After`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// Buckets kept before idle ones are dropped, so a scan from many
/// addresses cannot grow the map without bound.
const MAX_CLIENTS: usize = 65_536;

pub struct PerClient {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl PerClient {
    pub fn new(per_second: u32) -> Arc<PerClient> {
        Arc::new(PerClient {
            rate: f64::from(per_second),
            burst: f64::from(per_second) * 2.0,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `ip` may have one more now (always, with no rate set).
    pub fn admits(&self, ip: IpAddr) -> bool {
        self.rate <= 0.0 || self.allow(ip, Instant::now())
    }

    fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().expect("buckets lock");
        if buckets.len() >= MAX_CLIENTS {
            let idle = Duration::from_secs_f64(self.burst / self.rate.max(1.0));
            buckets.retain(|_, (_, last)| now.duration_since(*last) < idle);
        }
        let (tokens, last) = buckets.entry(ip).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Middleware: refuses a client over its rate. The client is the
/// listener's `ClientAddr` (behind a trusted proxy, the forwarded
/// address); requests without one (the router driven in-process) are not
/// limited.
pub async fn limit(State(limiter): State<Arc<PerClient>>, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<crate::listener::ClientAddr>().map(|c| c.0);
    if limiter.rate > 0.0
        && let Some(ip) = peer
        && !limiter.allow(ip, Instant::now())
    {
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests from this address; slow down",
        )
        .into_response();
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
        return response;
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let l = PerClient::new(10);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t = Instant::now();
        assert_eq!((0..30).filter(|_| l.allow(a, t)).count(), 20, "burst of twice the rate");
        assert!(l.allow(b, t), "another client has its own bucket");
        assert!(!l.allow(a, t + Duration::from_millis(50)));
        assert!(l.allow(a, t + Duration::from_millis(100)), "one token per 100 ms");
    }
}
