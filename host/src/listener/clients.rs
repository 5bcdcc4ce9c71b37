//! Who a connection or request belongs to, for per-client limits: the
//! peer address, or behind a trusted reverse proxy the address it
//! forwards, and how many connections each peer holds.

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::quota::{Place, Quota};

/// The client a request came from: what per-client request limits key on
/// (`api::per_client`). Set on every request the listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// Reverse proxies whose forwarding header is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    /// Lower-cased header name (`x-forwarded-for`).
    header: String,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>, header: &str) -> TrustedProxies {
        TrustedProxies {
            nets,
            header: header.to_ascii_lowercase(),
        }
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client of a request from `peer`: the peer itself unless it is a
    /// trusted proxy; then the nearest address in the forwarding header
    /// that is not a trusted proxy (read from the right: each proxy
    /// appends the address it got the request from, and only the entries
    /// our own proxies appended can be believed; a client can write
    /// anything to the left of them).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        for value in headers.get_all(self.header.as_str()).iter().rev() {
            let Ok(value) = value.to_str() else { return client };
            for part in value.rsplit(',') {
                let Some(ip) = parse_forwarded(part) else { return client };
                client = ip;
                if !self.trusts(ip) {
                    return client;
                }
            }
        }
        client
    }
}

/// One entry of `X-Forwarded-For`: an address, possibly with a port
/// (`[::1]:443`, `1.2.3.4:80`).
fn parse_forwarded(part: &str) -> Option<IpAddr> {
    let part = part.trim();
    if let Ok(ip) = part.parse() {
        return Some(ip);
    }
    if let Some(rest) = part.strip_prefix('[') {
        return rest.split_once(']').and_then(|(ip, _)| ip.parse().ok());
    }
    part.rsplit_once(':').and_then(|(ip, _)| ip.parse().ok())
}

/// Open connections per peer address, capped: one client cannot take the
/// connection slots every other client needs. Trusted proxies carry many
/// clients and are not capped here (the global cap still holds).
pub struct Connections(Arc<Quota<IpAddr>>);

/// One open connection's place in its client's count, given back on drop.
pub type Held = Place<IpAddr>;

impl Connections {
    pub fn new(per_client: usize) -> Connections {
        Connections(Quota::new(per_client.max(1), usize::MAX))
    }

    /// A place for a new connection from `ip`, or `None` when it already
    /// holds its share. `uncapped` (a trusted proxy) always gets one.
    pub fn admit(&self, ip: IpAddr, uncapped: bool) -> Option<Held> {
        if uncapped {
            self.0.take_shared()
        } else {
            self.0.take(ip).ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn each_client_has_its_share() {
        let c = Connections::new(2);
        let a1 = c.admit(ip("10.0.0.1"), false).unwrap();
        let _a2 = c.admit(ip("10.0.0.1"), false).unwrap();
        assert!(c.admit(ip("10.0.0.1"), false).is_none());
        assert!(c.admit(ip("10.0.0.2"), false).is_some(), "another client");
        assert!(c.admit(ip("10.0.0.1"), true).is_some(), "a proxy is not capped");
        drop(a1);
        assert!(
            c.admit(ip("10.0.0.1"), false).is_some(),
            "a closed one gives its place back"
        );
    }

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let proxies = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()], "X-Forwarded-For");
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.0.0.3".parse().unwrap());
        // From the proxy: the first address (from the right) not a proxy.
        assert_eq!(proxies.client(ip("10.0.0.2"), &h), ip("203.0.113.7"));
        // From anyone else the header is the client's own claim.
        assert_eq!(proxies.client(ip("198.51.100.1"), &h), ip("198.51.100.1"));
        // Ports and brackets; garbage stops the walk at what was believed.
        h.insert("x-forwarded-for", "[2001:db8::1]:443".parse().unwrap());
        assert_eq!(proxies.client(ip("10.0.0.2"), &h), ip("2001:db8::1"));
        h.insert("x-forwarded-for", "nonsense".parse().unwrap());
        assert_eq!(proxies.client(ip("10.0.0.2"), &h), ip("10.0.0.2"));
        // No header: the proxy itself.
        assert_eq!(proxies.client(ip("10.0.0.2"), &HeaderMap::new()), ip("10.0.0.2"));
    }
}
