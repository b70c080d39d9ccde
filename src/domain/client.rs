use std::net::{IpAddr, Ipv6Addr};

/// The network a request came from, as the per-client limits count it: an IPv4 address, or
/// the /64 prefix of an IPv6 address (one subscriber gets a whole /64, so counting single IPv6
/// addresses would give one client billions of budgets). IPv4-mapped IPv6 addresses count as
/// the IPv4 address they carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientNetwork(IpAddr);

impl ClientNetwork {
    /// The network of the client at `address`.
    pub fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & (u128::MAX << 64);
                    Self(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
            v4 @ IpAddr::V4(_) => Self(v4),
        }
    }

    /// The network of a request whose peer is unknown (a schema or router driven without a
    /// socket, as the fuzz target does): all such requests count as one client.
    pub fn anonymous() -> Self {
        Self(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    /// What the database stores for this network: a SHA-256, hex-encoded, so that the table
    /// of budgets is not also a list of who called. (For IPv4 this is a speed bump, not a
    /// secret: the address space is small enough to hash whole.)
    pub fn key(&self) -> String {
        let label = match self.0 {
            IpAddr::V4(v4) => format!("v4:{v4}"),
            IpAddr::V6(v6) => format!("v6:{v6}/64"),
        };
        super::sha256_hex(label.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_by_their_64_prefix_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientNetwork::of(a).key(), ClientNetwork::of(b).key());
        assert_ne!(ClientNetwork::of(a).key(), ClientNetwork::of(c).key());
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let plain: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(ClientNetwork::of(mapped), ClientNetwork::of(plain));
        assert_eq!(ClientNetwork::of(plain).key().len(), 64);
    }
}
