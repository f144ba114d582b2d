//! Traffic selectors: which inner packets a policy or an SA covers (RFC 4301 section 4.4.1).
//!
//! IKEv1 Quick Mode carries them as client identities (RFC 2407 section 4.6.2): a single
//! address, a subnet or a range, plus an IP protocol and a port. We keep every form as an
//! inclusive address range so that matching is one comparison per bound.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An inclusive range of addresses of one family, an IP protocol and an inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    start: IpAddr,
    end: IpAddr,
    /// IP protocol number; 0 means any.
    pub protocol: u8,
    /// First port covered (0 with `port_end` 65535 means any).
    pub port_start: u16,
    /// Last port covered.
    pub port_end: u16,
}

/// Why a selector could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The prefix length exceeds the address width.
    #[error("prefix length {prefix_len} is too long for {addr}")]
    PrefixTooLong {
        /// The network address given.
        addr: IpAddr,
        /// The prefix length given.
        prefix_len: u8,
    },
    /// Start and end are of different families, or end is below start.
    #[error("invalid address range {start} - {end}")]
    BadRange {
        /// The first address.
        start: IpAddr,
        /// The last address.
        end: IpAddr,
    },
}

impl TrafficSelector {
    /// Every address of `addr`'s family, any protocol and port.
    pub fn any_of_family(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => {
                Self::with_range(Ipv4Addr::UNSPECIFIED.into(), Ipv4Addr::BROADCAST.into())
            }
            IpAddr::V6(_) => Self::with_range(
                Ipv6Addr::UNSPECIFIED.into(),
                Ipv6Addr::from(u128::MAX).into(),
            ),
        }
    }

    /// The subnet `addr/prefix_len` (host bits of `addr` are ignored), any protocol and port.
    pub fn from_cidr(addr: IpAddr, prefix_len: u8) -> Result<Self, SelectorError> {
        match addr {
            IpAddr::V4(a) => {
                if prefix_len > 32 {
                    return Err(SelectorError::PrefixTooLong { addr, prefix_len });
                }
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(prefix_len))
                    .unwrap_or(0);
                let start = u32::from(a) & mask;
                Ok(Self::with_range(
                    Ipv4Addr::from(start).into(),
                    Ipv4Addr::from(start | !mask).into(),
                ))
            }
            IpAddr::V6(a) => {
                if prefix_len > 128 {
                    return Err(SelectorError::PrefixTooLong { addr, prefix_len });
                }
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(prefix_len))
                    .unwrap_or(0);
                let start = u128::from(a) & mask;
                Ok(Self::with_range(
                    Ipv6Addr::from(start).into(),
                    Ipv6Addr::from(start | !mask).into(),
                ))
            }
        }
    }

    /// The single address `addr`.
    pub fn from_addr(addr: IpAddr) -> Self {
        Self::with_range(addr, addr)
    }

    /// The inclusive range `start..=end` of one family.
    pub fn from_range(start: IpAddr, end: IpAddr) -> Result<Self, SelectorError> {
        let ordered = match (start, end) {
            (IpAddr::V4(s), IpAddr::V4(e)) => s <= e,
            (IpAddr::V6(s), IpAddr::V6(e)) => s <= e,
            _ => false,
        };
        if !ordered {
            return Err(SelectorError::BadRange { start, end });
        }
        Ok(Self::with_range(start, end))
    }

    fn with_range(start: IpAddr, end: IpAddr) -> Self {
        Self {
            start,
            end,
            protocol: 0,
            port_start: 0,
            port_end: u16::MAX,
        }
    }

    /// Restricts the selector to one IP protocol (0 = any).
    pub fn with_protocol(mut self, protocol: u8) -> Self {
        self.protocol = protocol;
        self
    }

    /// Restricts the selector to one port (0 = any).
    pub fn with_port(mut self, port: u16) -> Self {
        if port == 0 {
            (self.port_start, self.port_end) = (0, u16::MAX);
        } else {
            (self.port_start, self.port_end) = (port, port);
        }
        self
    }

    /// First address covered.
    pub fn start(&self) -> IpAddr {
        self.start
    }

    /// Last address covered.
    pub fn end(&self) -> IpAddr {
        self.end
    }

    /// The prefix length if the range is exactly one CIDR subnet.
    pub fn prefix_len(&self) -> Option<u8> {
        let (s, e, width) = match (self.start, self.end) {
            (IpAddr::V4(s), IpAddr::V4(e)) => {
                (u128::from(u32::from(s)), u128::from(u32::from(e)), 32u32)
            }
            (IpAddr::V6(s), IpAddr::V6(e)) => (u128::from(s), u128::from(e), 128u32),
            _ => return None,
        };
        let host = s ^ e;
        // A subnet's host part is all ones, and the network address has no host bits.
        if host.checked_add(1).is_some_and(|h| h & host != 0) || s & host != 0 {
            return None;
        }
        let host_bits = 128 - host.leading_zeros();
        u8::try_from(width - host_bits).ok()
    }

    /// Whether `addr` falls in the address range.
    pub fn contains_addr(&self, addr: IpAddr) -> bool {
        match (self.start, self.end, addr) {
            (IpAddr::V4(s), IpAddr::V4(e), IpAddr::V4(a)) => s <= a && a <= e,
            (IpAddr::V6(s), IpAddr::V6(e), IpAddr::V6(a)) => s <= a && a <= e,
            _ => false,
        }
    }

    /// Whether a packet with this address, protocol and port (0 when the protocol has none)
    /// is covered.
    pub fn matches(&self, addr: IpAddr, protocol: u8, port: u16) -> bool {
        self.contains_addr(addr)
            && (self.protocol == 0 || self.protocol == protocol)
            && (self.is_any_port() || (self.port_start <= port && port <= self.port_end))
    }

    /// Whether `other` lies entirely inside `self` (used to narrow a peer's proposal).
    pub fn covers(&self, other: &Self) -> bool {
        self.contains_addr(other.start)
            && self.contains_addr(other.end)
            && (self.protocol == 0 || self.protocol == other.protocol)
            && self.port_start <= other.port_start
            && other.port_end <= self.port_end
    }

    fn is_any_port(&self) -> bool {
        self.port_start == 0 && self.port_end == u16::MAX
    }
}

impl fmt::Display for TrafficSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix_len() {
            Some(p) => write!(f, "{}/{p}", self.start)?,
            None => write!(f, "{}-{}", self.start, self.end)?,
        }
        if self.protocol != 0 {
            write!(f, " proto {}", self.protocol)?;
        }
        if !self.is_any_port() {
            write!(f, " port {}-{}", self.port_start, self.port_end)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_covers_its_range_only() {
        let ts = TrafficSelector::from_cidr(v4("10.1.0.77"), 24).unwrap();
        assert_eq!(ts.start(), v4("10.1.0.0"));
        assert_eq!(ts.end(), v4("10.1.0.255"));
        assert!(ts.matches(v4("10.1.0.10"), 1, 0));
        assert!(!ts.matches(v4("10.1.1.0"), 1, 0));
        assert_eq!(ts.prefix_len(), Some(24));
        assert_eq!(ts.to_string(), "10.1.0.0/24");
    }

    #[test]
    fn prefix_len_of_non_cidr_range_is_none() {
        let ts = TrafficSelector::from_range(v4("10.0.0.1"), v4("10.0.0.6")).unwrap();
        assert_eq!(ts.prefix_len(), None);
        assert_eq!(
            TrafficSelector::from_addr(v4("10.0.0.1")).prefix_len(),
            Some(32)
        );
        assert_eq!(
            TrafficSelector::any_of_family(v4("1.2.3.4")).prefix_len(),
            Some(0)
        );
    }

    #[test]
    fn rejects_bad_prefix_and_range() {
        assert!(TrafficSelector::from_cidr(v4("10.0.0.0"), 33).is_err());
        assert!(TrafficSelector::from_range(v4("10.0.0.9"), v4("10.0.0.1")).is_err());
        assert!(TrafficSelector::from_range(v4("10.0.0.1"), "::1".parse().unwrap()).is_err());
    }

    #[test]
    fn protocol_and_port_restrict_matches() {
        let ts = TrafficSelector::from_cidr(v4("10.0.0.0"), 8)
            .unwrap()
            .with_protocol(6)
            .with_port(443);
        assert!(ts.matches(v4("10.2.3.4"), 6, 443));
        assert!(!ts.matches(v4("10.2.3.4"), 17, 443));
        assert!(!ts.matches(v4("10.2.3.4"), 6, 80));
    }

    #[test]
    fn covers_checks_nesting() {
        let big = TrafficSelector::from_cidr(v4("10.0.0.0"), 8).unwrap();
        let small = TrafficSelector::from_cidr(v4("10.1.0.0"), 24).unwrap();
        assert!(big.covers(&small));
        assert!(!small.covers(&big));
    }
}
