//! Who a request comes from, for the limits that apply to anonymous clients (the rate limiter
//! and the sign-in throttle).
//!
//! The peer of the TCP connection is the client unless it is one of the operator's proxies
//! ([`TrustedProxies`], the `TRUSTED_PROXIES` setting). Then `X-Forwarded-For` is read from the
//! right, where the proxies appended what they saw: each trusted hop is stepped over, and the
//! first address that is not trusted is the client. Anything left of it was written by the
//! client itself and is never believed. When the walk runs out of addresses (every hop is
//! trusted) or meets an entry that is not an address, the client is the last hop it reached:
//! the left-most trusted address, or the peer itself. An untrusted peer's header is ignored.
//!
//! Limits key an address by [`ClientAddress::limit_key`]: an IPv4 address, or the /64 of an
//! IPv6 one, since one IPv6 subscriber is usually handed a whole /64 and could otherwise take
//! a fresh budget with every request. IPv4-mapped IPv6 addresses (a dual-stack listener's view
//! of an IPv4 peer) count as the IPv4 address they carry.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

const FORWARDED_FOR: &str = "x-forwarded-for";

/// One `TRUSTED_PROXIES` entry: `10.0.0.0/8`, `fd00::/8`, or a bare address (a /32 or
/// /128). Host bits are cleared, and an IPv4-mapped IPv6 network is read as the IPv4 network
/// it maps, since the addresses it is matched against are canonical.
fn trusted_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    let network = text
        .parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not an IP address or CIDR"))?;
    let network = match network {
        IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
            Some(v4) if v6.prefix_len() >= 96 => {
                IpNet::V4(Ipv4Net::new_assert(v4, v6.prefix_len() - 96))
            }
            _ => network,
        },
        IpNet::V4(_) => network,
    };
    Ok(network.trunc())
}

/// The proxies whose `X-Forwarded-For` is believed. Empty by default: the peer is the client.
/// Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<[IpNet]>);

impl TrustedProxies {
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.0.iter().any(|network| network.contains(&address))
    }

    /// The client a request from `peer` with these headers comes from (see the module docs).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        let mut reached = peer;
        // Right to left over every X-Forwarded-For header, each a comma-separated list.
        let values: Vec<_> = headers.get_all(FORWARDED_FOR).iter().collect();
        for value in values.into_iter().rev() {
            let Ok(list) = value.to_str() else {
                return reached;
            };
            for entry in list.rsplit(',') {
                match forwarded_address(entry) {
                    Some(hop) if self.contains(hop) => reached = hop,
                    Some(client) => return client,
                    None => return reached,
                }
            }
        }
        reached
    }
}

impl FromStr for TrustedProxies {
    type Err = String;

    /// A comma-separated list of CIDRs or addresses; empty entries are ignored.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.split(',')
            .filter(|entry| !entry.trim().is_empty())
            .map(trusted_network)
            .collect::<Result<Vec<_>, _>>()
            .map(|networks| TrustedProxies(networks.into()))
    }
}

/// One entry of `X-Forwarded-For`: an address, possibly with a port (`192.0.2.1:4711`,
/// `[2001:db8::1]:4711`) or in brackets. Anything else (`unknown`, an obfuscated name) is not
/// an address.
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(address) = entry.parse::<IpAddr>() {
        return Some(address.to_canonical());
    }
    if let Ok(socket) = entry.parse::<SocketAddr>() {
        return Some(socket.ip().to_canonical());
    }
    entry
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<Ipv6Addr>().ok())
        .map(|v6| IpAddr::V6(v6).to_canonical())
}

/// The client's address, left in a request's extensions by [`identify`] whenever the peer is
/// known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

impl ClientAddress {
    /// What budgets are kept by: the IPv4 address, or the IPv6 address's /64.
    pub fn limit_key(self) -> IpAddr {
        match self.0.to_canonical() {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Net::new_assert(v6, 64).network()),
        }
    }
}

/// Middleware: works out the client's address once, for the limiter and the sign-in throttle.
pub async fn identify(
    State(trusted): State<TrustedProxies>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
        let client = trusted.client(peer.ip(), request.headers());
        request.extensions_mut().insert(ClientAddress(client));
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(FORWARDED_FOR, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn trusting(list: &str) -> TrustedProxies {
        list.parse().unwrap()
    }

    fn network(text: &str) -> IpNet {
        trusted_network(text).unwrap()
    }

    #[test]
    fn cidrs_and_bare_addresses_of_both_families_parse() {
        let proxies = trusting("10.0.0.0/8, 192.0.2.7,fd00::/8 ,::1,");
        for inside in ["10.1.2.3", "192.0.2.7", "fd12::1", "::1", "::ffff:10.9.9.9"] {
            assert!(proxies.contains(ip(inside)), "{inside}");
        }
        for outside in [
            "11.0.0.1",
            "192.0.2.8",
            "fe80::1",
            "::2",
            "::ffff:192.0.2.8",
        ] {
            assert!(!proxies.contains(ip(outside)), "{outside}");
        }
        assert!(!trusting("").contains(ip("10.0.0.1")));
    }

    #[test]
    fn host_bits_are_cleared_and_edge_prefixes_work() {
        assert_eq!(network("10.1.2.3/8"), network("10.0.0.0/8"));
        let everything_v4 = network("1.2.3.4/0");
        assert!(everything_v4.contains(&ip("255.255.255.255")));
        assert!(!everything_v4.contains(&ip("::1")));
        let everything_v6 = network("::/0");
        assert!(everything_v6.contains(&ip("2001:db8::1")));
        assert_eq!(network("::ffff:10.0.0.0/104"), network("10.0.0.0/8"));
    }

    #[test]
    fn bad_entries_are_refused_with_the_entry_named() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "proxy.local",
            "10.0.0.1/-1",
            "10.0.0.1/",
        ] {
            let error = bad.parse::<TrustedProxies>().unwrap_err();
            assert!(error.contains(bad.trim()), "{error}");
        }
        assert!("10.0.0.0/8,nonsense".parse::<TrustedProxies>().is_err());
    }

    #[test]
    fn an_untrusted_peers_forwarded_for_is_ignored() {
        let proxies = trusting("10.0.0.0/8");
        let headers = forwarded(&["198.51.100.1"]);
        assert_eq!(
            proxies.client(ip("203.0.113.9"), &headers),
            ip("203.0.113.9")
        );
        assert_eq!(
            TrustedProxies::default().client(ip("10.0.0.1"), &headers),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_address_is_the_client() {
        let proxies = trusting("10.0.0.0/8");
        // The client claimed 1.1.1.1 itself; the proxies appended what they saw.
        let headers = forwarded(&["1.1.1.1, 198.51.100.4", "10.0.0.3"]);
        assert_eq!(proxies.client(ip("10.0.0.2"), &headers), ip("198.51.100.4"));
        let headers = forwarded(&["1.1.1.1,198.51.100.4,10.0.0.3"]);
        assert_eq!(proxies.client(ip("10.0.0.2"), &headers), ip("198.51.100.4"));
    }

    #[test]
    fn when_every_hop_is_trusted_the_left_most_is_the_client() {
        let proxies = trusting("10.0.0.0/8");
        let headers = forwarded(&["10.0.0.9, 10.0.0.8"]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &headers), ip("10.0.0.9"));
    }

    #[test]
    fn a_missing_or_garbage_header_leaves_the_peer_or_the_last_trusted_hop() {
        let proxies = trusting("10.0.0.0/8");
        let peer = ip("10.0.0.1");
        assert_eq!(proxies.client(peer, &HeaderMap::new()), peer);
        for garbage in ["unknown", "", "  ,  ", "1.2.3.4.5", "<script>"] {
            assert_eq!(
                proxies.client(peer, &forwarded(&[garbage])),
                peer,
                "{garbage:?}"
            );
        }
        // A broken entry stops the walk: what lies left of it is not believed.
        let headers = forwarded(&["198.51.100.4, unknown, 10.0.0.5"]);
        assert_eq!(proxies.client(peer, &headers), ip("10.0.0.5"));
        let mut headers = HeaderMap::new();
        headers.append(
            FORWARDED_FOR,
            HeaderValue::from_bytes(b"198.51.100.4\xff").unwrap(),
        );
        assert_eq!(proxies.client(peer, &headers), peer);
    }

    #[test]
    fn forwarded_entries_may_carry_ports_and_brackets() {
        let proxies = trusting("10.0.0.0/8");
        let peer = ip("10.0.0.1");
        for (entry, client) in [
            ("198.51.100.4:4711", "198.51.100.4"),
            ("[2001:db8::1]:4711", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            (" 2001:db8::1 ", "2001:db8::1"),
            ("::ffff:198.51.100.4", "198.51.100.4"),
        ] {
            assert_eq!(
                proxies.client(peer, &forwarded(&[entry])),
                ip(client),
                "{entry}"
            );
        }
    }

    #[test]
    fn a_trusted_ipv4_mapped_peer_is_trusted_and_read_as_ipv4() {
        let proxies = trusting("127.0.0.1");
        let peer = ip("::ffff:127.0.0.1");
        assert_eq!(
            proxies.client(peer, &forwarded(&["198.51.100.4"])),
            ip("198.51.100.4")
        );
        assert_eq!(
            TrustedProxies::default().client(peer, &HeaderMap::new()),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn an_ipv6_slash_64_shares_one_key_and_ipv4_keeps_its_own() {
        let key = |text: &str| ClientAddress(ip(text)).limit_key();
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:ffff:1:2:3"));
        assert_eq!(key("2001:db8:1:2:aaaa::1"), ip("2001:db8:1:2::"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(key("::ffff:192.0.2.1"), ip("192.0.2.1"));
    }
}
