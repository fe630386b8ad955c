//! Who sent a request: the peer address, or behind trusted proxies the
//! address the nearest untrusted hop was seen from.
//!
//! `X-Forwarded-For` is written left to right: whatever the client put in
//! it first, then each proxy appends the address it received the request
//! from. It is read only when the peer is one of our own proxies
//! (`--trusted-proxies`); then only entries appended by those proxies are
//! true, so the client is found from the right: skip the hops that are our
//! own proxies, and the first other address is the client. What a client
//! writes into the header itself can never choose its identity.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

/// An address block, `192.0.2.0/24` or `2001:db8::/32` (a bare address is /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an address or address/prefix"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: the prefix must be 0..={max}"))?,
        };
        Ok(Self { net, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn bits(ip: IpAddr) -> (u128, u32) {
            match ip {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
                IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                    Some(v4) => (u128::from(u32::from(v4)), 32),
                    None => (u128::from(v6), 128),
                },
            }
        }
        let ((net, width), (addr, addr_width)) = (bits(self.net), bits(ip));
        if width != addr_width {
            return false;
        }
        let shift = width - u32::from(self.prefix);
        shift >= width || (net >> shift) == (addr >> shift)
    }
}

/// How the collector finds a request's client.
#[derive(Debug, Clone, Default)]
pub struct ClientResolver {
    /// Behind a proxy: read `X-Forwarded-For`.
    pub trust_forwarded_for: bool,
    /// Our own proxies: the only peers whose `X-Forwarded-For` is read, and
    /// the hops skipped from its right (a chain of load balancers).
    pub trusted_proxies: Vec<Cidr>,
}

impl ClientResolver {
    /// Is `ip` one of our own proxies?
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(ip))
    }

    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trust_forwarded_for || !self.is_trusted(peer.ip()) {
            return peer.ip();
        }
        // Every X-Forwarded-For line, in order, as one list.
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        for hop in hops.iter().rev() {
            let Ok(ip) = hop.parse::<IpAddr>() else {
                // Not an address where a trusted proxy writes one: the
                // header was tampered with before it; the proxy is the client.
                return peer.ip();
            };
            if !self.is_trusted(ip) {
                return ip;
            }
        }
        peer.ip()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append("x-forwarded-for", l.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_client_is_the_hop_our_proxy_appended_not_what_the_client_wrote() {
        let peer: SocketAddr = "10.0.0.2:443".parse().unwrap();
        let r = ClientResolver {
            trust_forwarded_for: true,
            trusted_proxies: vec!["10.0.0.2".parse().unwrap()],
        };
        assert_eq!(
            r.client(peer, &headers(&["203.0.113.9"])),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            r.client(peer, &headers(&["1.2.3.4, 5.6.7.8, 203.0.113.9"])),
            "203.0.113.9".parse::<IpAddr>().unwrap(),
            "a client cannot pick its address by writing the header"
        );
        assert_eq!(
            r.client(peer, &headers(&["1.2.3.4", "203.0.113.9"])),
            "203.0.113.9".parse::<IpAddr>().unwrap(),
            "several header lines read as one list"
        );
        assert_eq!(r.client(peer, &headers(&[])), peer.ip());
        assert_eq!(r.client(peer, &headers(&["1.2.3.4, garbage"])), peer.ip());

        let chain = ClientResolver {
            trust_forwarded_for: true,
            trusted_proxies: vec![
                "10.0.0.0/8".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ],
        };
        assert_eq!(
            chain.client(
                peer,
                &headers(&["6.6.6.6, 198.51.100.4, 10.1.2.3, 2001:db8::7"])
            ),
            "198.51.100.4".parse::<IpAddr>().unwrap(),
            "our own load balancers are skipped from the right"
        );
        let off = ClientResolver::default();
        assert_eq!(off.client(peer, &headers(&["203.0.113.9"])), peer.ip());
        let stranger: SocketAddr = "198.51.100.77:5555".parse().unwrap();
        assert_eq!(
            r.client(stranger, &headers(&["203.0.113.9"])),
            stranger.ip(),
            "a peer that is not our proxy cannot name its address in the header"
        );
    }

    #[test]
    fn cidr_blocks() {
        let c: Cidr = "192.0.2.0/24".parse().unwrap();
        assert!(c.contains("192.0.2.200".parse().unwrap()));
        assert!(c.contains("::ffff:192.0.2.1".parse().unwrap()));
        assert!(!c.contains("192.0.3.1".parse().unwrap()));
        assert!(!c.contains("2001:db8::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let one: Cidr = "2001:db8::1".parse().unwrap();
        assert!(one.contains("2001:db8::1".parse().unwrap()));
        assert!(!one.contains("2001:db8::2".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope/8".parse::<Cidr>().is_err());
    }
}
