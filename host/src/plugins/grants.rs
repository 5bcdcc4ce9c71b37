//! What a transport may reach, resolved from its `capabilities`: granted
//! directories, socket endpoints (`connect`) and HTTP origins (`http`).
//!
//! Rule for private addresses: a host *name* may only lead to public
//! addresses unless `allow_private` is set; an address written as an IP
//! literal (or `localhost`) is allowed whatever it is, because the
//! operator listed it. That keeps a DNS answer from turning a public grant
//! into access to the host's own network.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// A `host:port` the transport may open sockets to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// Resolved when the transport loads; sockets may go to these only.
    pub addrs: Vec<SocketAddr>,
}

/// An origin the transport may send HTTP requests to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub https: bool,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, Default)]
pub struct Grants {
    pub dirs: Vec<PathBuf>,
    pub connect: Vec<Endpoint>,
    pub http: Vec<Origin>,
    pub allow_private: bool,
}

impl Grants {
    /// The addresses granted for `host:port`, for the `host.resolve` import.
    pub fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        self.connect
            .iter()
            .find(|e| e.port == port && same_host(&e.host, host))
            .map(|e| e.addrs.clone())
            .ok_or_else(|| format!("permission denied: {host}:{port} is not in this transport's connect capability"))
    }

    pub fn may_connect(&self, addr: SocketAddr) -> bool {
        self.connect.iter().any(|e| e.addrs.contains(&addr))
    }

    pub fn origin(&self, https: bool, host: &str, port: u16) -> Option<&Origin> {
        self.http
            .iter()
            .find(|o| o.https == https && o.port == port && same_host(&o.host, host))
    }

    /// Whether an address a listed name resolved to may be used.
    pub fn may_use(&self, listed_host: &str, ip: IpAddr) -> bool {
        is_literal(listed_host) || self.allow_private || !is_private(ip)
    }
}

fn same_host(a: &str, b: &str) -> bool {
    a.trim_start_matches('[')
        .trim_end_matches(']')
        .eq_ignore_ascii_case(b.trim_start_matches('[').trim_end_matches(']'))
}

/// An IP literal or `localhost`: the operator named the address itself.
pub fn is_literal(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok()
}

/// Loopback, private, link-local, shared (CGNAT), benchmarking, IETF
/// protocol assignments, reserved, unique-local, site-local, unspecified or
/// multicast: anything that is not a public unicast address. IPv6 forms
/// that carry an IPv4 address (mapped, compatible, NAT64 `64:ff9b::/96`,
/// 6to4 `2002::/16`) are judged by that address, so none of them is a way
/// around the IPv4 rules.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                // 100.64.0.0/10 shared address space (CGNAT)
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                // 192.0.0.0/24 IETF protocol assignments
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                // 198.18.0.0/15 benchmarking
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                // 240.0.0.0/4 reserved
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // fc00::/7 unique local
                || (first & 0xfe00) == 0xfc00
                // fe80::/10 link local, fec0::/10 site local (deprecated)
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
        }
    }
}

/// The IPv4 address an IPv6 address stands for, if it is one of the forms
/// that reach IPv4 hosts.
fn embedded_v4(v6: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let s = v6.segments();
    let tail = || std::net::Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    // ::a.b.c.d (IPv4-compatible, deprecated); :: and ::1 are not.
    if s[..6].iter().all(|&x| x == 0) && (s[6] != 0 || s[7] > 1) {
        return Some(tail());
    }
    // 64:ff9b::/96 (NAT64 well-known prefix)
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|&x| x == 0) {
        return Some(tail());
    }
    // 2002::/16 (6to4): the IPv4 address is in bits 16..48.
    if s[0] == 0x2002 {
        return Some(std::net::Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

/// Splits `host:port`, with IPv6 literals in brackets (`[::1]:25`).
pub fn split_host_port(entry: &str) -> Result<(String, u16), String> {
    let (host, port) = entry
        .rsplit_once(':')
        .ok_or_else(|| format!("{entry:?} is not host:port"))?;
    let port: u16 = port.parse().map_err(|_| format!("{entry:?} has no valid port"))?;
    if host.is_empty() || (host.contains(':') && !host.starts_with('[')) {
        return Err(format!("{entry:?} is not host:port (write IPv6 as [addr]:port)"));
    }
    Ok((host.trim_start_matches('[').trim_end_matches(']').to_string(), port))
}

/// Resolves a `connect` entry now and applies the private-address rule.
pub fn endpoint(entry: &str, allow_private: bool) -> Result<Endpoint, String> {
    let (host, port) = split_host_port(entry)?;
    let addrs: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("connect entry {entry:?}: cannot resolve {host}: {e}"))?
        .collect();
    let grants = Grants {
        allow_private,
        ..Grants::default()
    };
    let (ok, refused): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|a| grants.may_use(&host, a.ip()));
    if ok.is_empty() {
        return Err(format!(
            "connect entry {entry:?} resolves only to private addresses ({}); list the address itself or set allow_private = true",
            refused
                .iter()
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(Endpoint { host, port, addrs: ok })
}

/// Parses an `http` entry: `https://host[:port]` with nothing after it.
pub fn origin(entry: &str) -> Result<Origin, String> {
    let (scheme, rest) = entry
        .split_once("://")
        .ok_or_else(|| format!("http entry {entry:?} is not an origin like https://host[:port]"))?;
    let https = match scheme.to_ascii_lowercase().as_str() {
        "https" => true,
        "http" => false,
        _ => return Err(format!("http entry {entry:?}: scheme must be http or https")),
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "http entry {entry:?}: give an origin only (no path, query or user)"
        ));
    }
    let default_port = if https { 443 } else { 80 };
    let (host, port) = match split_host_port(rest) {
        Ok(hp) => hp,
        Err(_) if !rest.contains(':') || (rest.starts_with('[') && rest.ends_with(']')) => (
            rest.trim_start_matches('[').trim_end_matches(']').to_string(),
            default_port,
        ),
        Err(e) => return Err(format!("http entry {entry:?}: {e}")),
    };
    Ok(Origin {
        https,
        host: host.to_ascii_lowercase(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_addresses_are_recognized() {
        for p in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
            "::127.0.0.1",
            "::10.0.0.1",
            "fec0::1",
            "198.18.0.1",
            "198.19.255.255",
            "192.0.0.8",
            "240.0.0.1",
            "255.255.255.254",
        ] {
            assert!(is_private(ip(p)), "{p}");
        }
        for p in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700::1111",
            "172.32.0.1",
            "100.128.0.1",
            "64:ff9b::5db8:d822",
            "2002:5db8:d822::1",
            "198.20.0.1",
        ] {
            assert!(!is_private(ip(p)), "{p}");
        }
    }

    #[test]
    fn names_reach_private_addresses_only_when_allowed() {
        let strict = Grants::default();
        assert!(strict.may_use("127.0.0.1", ip("127.0.0.1")));
        assert!(strict.may_use("localhost", ip("::1")));
        assert!(!strict.may_use("mail.example.com", ip("10.0.0.5")));
        assert!(strict.may_use("mail.example.com", ip("93.184.216.34")));
        let open = Grants {
            allow_private: true,
            ..Grants::default()
        };
        assert!(open.may_use("mail.example.com", ip("10.0.0.5")));
    }

    #[test]
    fn endpoints_parse_and_resolve_literals() {
        let e = endpoint("127.0.0.1:2525", false).unwrap();
        assert_eq!(e.addrs, vec!["127.0.0.1:2525".parse().unwrap()]);
        let e = endpoint("[::1]:25", false).unwrap();
        assert_eq!(e.host, "::1");
        assert!(endpoint("127.0.0.1", false).is_err());
        assert!(endpoint("::1:25", false).is_err());
        assert!(endpoint("host:99999", false).is_err());
    }

    #[test]
    fn resolve_answers_only_for_listed_endpoints() {
        let g = Grants {
            connect: vec![endpoint("127.0.0.1:2525", false).unwrap()],
            ..Grants::default()
        };
        assert_eq!(g.resolve("127.0.0.1", 2525).unwrap().len(), 1);
        assert!(g.resolve("127.0.0.1", 25).unwrap_err().contains("permission denied"));
        assert!(g.resolve("example.com", 2525).is_err());
        assert!(g.may_connect("127.0.0.1:2525".parse().unwrap()));
        assert!(!g.may_connect("127.0.0.1:2526".parse().unwrap()));
    }

    #[test]
    fn origins_parse() {
        assert_eq!(
            origin("https://Hooks.Example.com").unwrap(),
            Origin {
                https: true,
                host: "hooks.example.com".into(),
                port: 443
            }
        );
        assert_eq!(origin("http://127.0.0.1:9000/").unwrap().port, 9000);
        assert_eq!(origin("http://[::1]").unwrap().host, "::1");
        assert_eq!(origin("http://[::1]:81").unwrap().port, 81);
        for bad in [
            "hooks.example.com",
            "ftp://x",
            "https://x/path",
            "https://u@x",
            "https://",
        ] {
            assert!(origin(bad).is_err(), "{bad}");
        }
        let g = Grants {
            http: vec![origin("https://hooks.example.com").unwrap()],
            ..Grants::default()
        };
        assert!(g.origin(true, "HOOKS.example.com", 443).is_some());
        assert!(g.origin(false, "hooks.example.com", 443).is_none());
        assert!(g.origin(true, "hooks.example.com", 8443).is_none());
    }
}
