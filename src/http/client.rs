//! Who is calling: the socket's peer, or, behind trusted proxies, the address they name.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{HeaderMap, request::Parts},
};
use ipnet::IpNet;

use super::HttpState;
use crate::domain::ClientNetwork;

/// The network of the client that sent a request, as the per-client limits count it.
pub(super) struct Client(pub ClientNetwork);

impl FromRequestParts<HttpState> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &HttpState,
    ) -> Result<Self, Self::Rejection> {
        // Every connection the server accepts carries its peer.
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or_else(ClientNetwork::anonymous, |info| {
                    ClientNetwork::of(client_address(
                        info.0.ip(),
                        &parts.headers,
                        &state.trusted_proxies,
                    ))
                }),
        ))
    }
}

/// The client's address: `peer`, unless `peer` is a trusted proxy, in which case the
/// right-most `X-Forwarded-For` entry that is not a trusted proxy (entries to its left were
/// written by the client and prove nothing). Unparsable entries end the walk at the last
/// address that could be believed.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| is_trusted_proxy(*ip, trusted);
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(text) = value.to_str() else {
            return client;
        };
        for entry in text.rsplit(',') {
            let Some(ip) = parse_hop(entry.trim()) else {
                return client;
            };
            client = ip;
            if !is_trusted(&ip) {
                return ip;
            }
        }
    }
    client
}

/// Whether `peer` is one of the `trusted` proxies, whose requests carry other clients'.
pub(super) fn is_trusted_proxy(peer: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&peer))
}

/// An `X-Forwarded-For` entry: an address, with or without a port.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn the_right_most_untrusted_forwarded_address_is_the_client() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let headers = forwarded(&["198.51.100.1, 203.0.113.9", "10.1.1.1"]);
        assert_eq!(
            client_address(proxy, &headers, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // A peer that is not a trusted proxy is the client, whatever it claims.
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(client_address(stranger, &headers, &trusted), stranger);
        // Ports and garbage.
        let headers = forwarded(&["junk, 203.0.113.9:4711"]);
        assert_eq!(
            client_address(proxy, &headers, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        let headers = forwarded(&["203.0.113.9, junk"]);
        assert_eq!(client_address(proxy, &headers, &trusted), proxy);
        // Only proxies in the chain: the left-most of them.
        let headers = forwarded(&["10.9.9.9"]);
        assert_eq!(
            client_address(proxy, &headers, &trusted),
            "10.9.9.9".parse::<IpAddr>().unwrap()
        );
    }
}
