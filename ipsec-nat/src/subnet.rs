//! IPv4 subnets given as an address and a prefix length.

use std::fmt;
use std::net::Ipv4Addr;

/// An IPv4 subnet such as `10.1.255.88/29`: a network address and a prefix length.
///
/// Kept in this crate (rather than shared with `ipsec-sa`'s selectors) so that the NAT stays
/// a pure packet transform with no dependency on the SA layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Subnet {
    network: Ipv4Addr,
    prefix_len: u8,
}

/// Why an address and prefix length do not form a subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubnetError {
    /// The prefix length is over 32.
    #[error("prefix length {prefix_len} is over 32")]
    PrefixTooLong {
        /// The prefix length given.
        prefix_len: u8,
    },
    /// The address has bits set beyond the prefix, so it names a host, not a network.
    #[error("{address}/{prefix_len} has host bits set (the network is {network}/{prefix_len})")]
    HostBitsSet {
        /// The address given.
        address: Ipv4Addr,
        /// The prefix length given.
        prefix_len: u8,
        /// The network the address lies in.
        network: Ipv4Addr,
    },
}

impl Ipv4Subnet {
    /// Makes the subnet `network/prefix_len`.
    ///
    /// Rejects a prefix over 32 and an address with host bits set: `10.1.255.92/29` is more
    /// likely a typo than a wish for `10.1.255.88/29`, and a NAT table is no place to guess.
    pub fn new(network: Ipv4Addr, prefix_len: u8) -> Result<Self, SubnetError> {
        let mask = mask(prefix_len).ok_or(SubnetError::PrefixTooLong { prefix_len })?;
        let masked = Ipv4Addr::from(u32::from(network) & mask);
        if masked != network {
            return Err(SubnetError::HostBitsSet {
                address: network,
                prefix_len,
                network: masked,
            });
        }
        Ok(Self {
            network,
            prefix_len,
        })
    }

    /// The network address (all host bits zero).
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length, 0 to 32.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `address` lies in this subnet.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        // `new` guarantees the prefix is at most 32, so the mask always exists.
        let mask = mask(self.prefix_len).unwrap_or(u32::MAX);
        u32::from(address) & mask == u32::from(self.network)
    }
}

impl TryFrom<(Ipv4Addr, u8)> for Ipv4Subnet {
    type Error = SubnetError;

    fn try_from((network, prefix_len): (Ipv4Addr, u8)) -> Result<Self, Self::Error> {
        Self::new(network, prefix_len)
    }
}

impl fmt::Display for Ipv4Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// The netmask for `prefix_len`, or `None` when it is over 32.
fn mask(prefix_len: u8) -> Option<u32> {
    match prefix_len {
        0 => Some(0),
        1..=32 => Some(u32::MAX << (32 - u32::from(prefix_len))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_addresses_of_a_slash_29() {
        let s = Ipv4Subnet::new(Ipv4Addr::new(10, 1, 255, 88), 29).unwrap();
        assert!(s.contains(Ipv4Addr::new(10, 1, 255, 88)));
        assert!(s.contains(Ipv4Addr::new(10, 1, 255, 92)));
        assert!(s.contains(Ipv4Addr::new(10, 1, 255, 95)));
        assert!(!s.contains(Ipv4Addr::new(10, 1, 255, 96)));
        assert!(!s.contains(Ipv4Addr::new(10, 1, 255, 87)));
        assert_eq!(s.to_string(), "10.1.255.88/29");
    }

    #[test]
    fn zero_and_full_prefixes() {
        let all = Ipv4Subnet::new(Ipv4Addr::UNSPECIFIED, 0).unwrap();
        assert!(all.contains(Ipv4Addr::new(203, 0, 113, 7)));
        let host = Ipv4Subnet::new(Ipv4Addr::new(192, 168, 10, 15), 32).unwrap();
        assert!(host.contains(Ipv4Addr::new(192, 168, 10, 15)));
        assert!(!host.contains(Ipv4Addr::new(192, 168, 10, 14)));
    }

    #[test]
    fn rejects_host_bits() {
        assert_eq!(
            Ipv4Subnet::new(Ipv4Addr::new(10, 1, 255, 92), 29),
            Err(SubnetError::HostBitsSet {
                address: Ipv4Addr::new(10, 1, 255, 92),
                prefix_len: 29,
                network: Ipv4Addr::new(10, 1, 255, 88),
            })
        );
    }

    #[test]
    fn rejects_prefix_over_32() {
        assert_eq!(
            Ipv4Subnet::try_from((Ipv4Addr::new(10, 0, 0, 0), 33)),
            Err(SubnetError::PrefixTooLong { prefix_len: 33 })
        );
    }
}
