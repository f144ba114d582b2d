//! Identification payloads: phase-1 identities and Quick Mode client IDs (RFC 2407
//! section 4.6.2), converted to and from our [`Identity`] and [`TrafficSelector`].

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipsec_proto::isakmp::{IdPayload, IdType};

use super::config::Identity;
use crate::selector::TrafficSelector;

/// ID type codes, RFC 2407 section 4.6.2.1.
mod id {
    pub(super) const IPV4_ADDR: u8 = 1;
    pub(super) const FQDN: u8 = 2;
    pub(super) const USER_FQDN: u8 = 3;
    pub(super) const IPV4_ADDR_SUBNET: u8 = 4;
    pub(super) const IPV6_ADDR: u8 = 5;
    pub(super) const IPV6_ADDR_SUBNET: u8 = 6;
    pub(super) const IPV4_ADDR_RANGE: u8 = 7;
    pub(super) const IPV6_ADDR_RANGE: u8 = 8;
    pub(super) const KEY_ID: u8 = 11;
}

fn payload(id_type: u8, data: Vec<u8>) -> IdPayload {
    IdPayload {
        id_type: IdType(id_type),
        protocol: 0,
        port: 0,
        data,
    }
}

fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The ID payload for a phase-1 identity (protocol and port 0, as strongSwan sends).
pub(crate) fn identity_payload(identity: &Identity) -> IdPayload {
    match identity {
        Identity::Address(ip @ IpAddr::V4(_)) => payload(id::IPV4_ADDR, octets(*ip)),
        Identity::Address(ip @ IpAddr::V6(_)) => payload(id::IPV6_ADDR, octets(*ip)),
        Identity::Fqdn(name) => payload(id::FQDN, name.as_bytes().to_vec()),
        Identity::UserFqdn(name) => payload(id::USER_FQDN, name.as_bytes().to_vec()),
        Identity::KeyId(bytes) => payload(id::KEY_ID, bytes.clone()),
    }
}

/// Whether a received phase-1 ID payload names `identity` (protocol and port are not
/// compared: RFC 2407 section 4.6.2 allows 0/0 and 17/500).
pub(crate) fn identity_matches(identity: &Identity, got: &IdPayload) -> bool {
    let want = identity_payload(identity);
    want.id_type == got.id_type && want.data == got.data
}

/// A readable form of a received ID payload, for errors.
pub(crate) struct ShowId<'a>(pub(crate) &'a IdPayload);

impl fmt::Display for ShowId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.0;
        match (p.id_type.0, p.data.len()) {
            (id::IPV4_ADDR, 4) | (id::IPV6_ADDR, 16) => match ip_from(&p.data) {
                Some(ip) => write!(f, "address {ip}"),
                None => write!(f, "address ?"),
            },
            (id::FQDN, _) => write!(f, "FQDN {}", String::from_utf8_lossy(&p.data)),
            (id::USER_FQDN, _) => write!(f, "user FQDN {}", String::from_utf8_lossy(&p.data)),
            _ => match selector(p) {
                Some(ts) => write!(f, "{ts}"),
                None => write!(f, "ID type {} data {:02x?}", p.id_type.0, p.data),
            },
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Address(ip) => write!(f, "address {ip}"),
            Self::Fqdn(n) => write!(f, "FQDN {n}"),
            Self::UserFqdn(n) => write!(f, "user FQDN {n}"),
            Self::KeyId(k) => write!(f, "key ID {k:02x?}"),
        }
    }
}

fn ip_from(data: &[u8]) -> Option<IpAddr> {
    if let Ok(a) = <[u8; 4]>::try_from(data) {
        return Some(Ipv4Addr::from(a).into());
    }
    <[u8; 16]>::try_from(data)
        .ok()
        .map(|a| Ipv6Addr::from(a).into())
}

fn mask(ip: IpAddr, prefix_len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(prefix_len.min(32)))
                .unwrap_or(0),
        )
        .into(),
        IpAddr::V6(_) => Ipv6Addr::from(
            u128::MAX
                .checked_shl(128 - u32::from(prefix_len.min(128)))
                .unwrap_or(0),
        )
        .into(),
    }
}

/// The client ID for a selector: a subnet when it is one CIDR block, a range otherwise
/// (RFC 2407 section 4.6.2.1), with the selector's protocol and single port.
pub(crate) fn selector_payload(ts: &TrafficSelector) -> IdPayload {
    let v4 = ts.start().is_ipv4();
    let mut p = match ts.prefix_len() {
        Some(len) => {
            let mut data = octets(ts.start());
            data.extend(octets(mask(ts.start(), len)));
            payload(
                if v4 {
                    id::IPV4_ADDR_SUBNET
                } else {
                    id::IPV6_ADDR_SUBNET
                },
                data,
            )
        }
        None => {
            let mut data = octets(ts.start());
            data.extend(octets(ts.end()));
            payload(
                if v4 {
                    id::IPV4_ADDR_RANGE
                } else {
                    id::IPV6_ADDR_RANGE
                },
                data,
            )
        }
    };
    p.protocol = ts.protocol;
    if ts.port_start == ts.port_end {
        p.port = ts.port_start;
    }
    p
}

/// The selector a client ID names; `None` for ID types that name no addresses.
pub(crate) fn selector(p: &IdPayload) -> Option<TrafficSelector> {
    let data = p.data.as_slice();
    let ts = match p.id_type.0 {
        id::IPV4_ADDR | id::IPV6_ADDR => TrafficSelector::from_addr(ip_from(data)?),
        id::IPV4_ADDR_SUBNET | id::IPV6_ADDR_SUBNET => {
            let (a, m) = data.split_at(data.len() / 2);
            let addr = ip_from(a)?;
            let m = ip_from(m)?;
            let bits = match m {
                IpAddr::V4(m) => u32::from(m).leading_ones(),
                IpAddr::V6(m) => u128::from(m).leading_ones(),
            };
            let len = u8::try_from(bits).ok()?;
            if mask(addr, len) != m {
                return None;
            }
            TrafficSelector::from_cidr(addr, len).ok()?
        }
        id::IPV4_ADDR_RANGE | id::IPV6_ADDR_RANGE => {
            let (a, b) = data.split_at(data.len() / 2);
            TrafficSelector::from_range(ip_from(a)?, ip_from(b)?).ok()?
        }
        _ => return None,
    };
    Some(ts.with_protocol(p.protocol).with_port(p.port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_selector_matches_fixture_body() {
        // mm-aes128-sha1-modp2048-pfs IDci: 10.1.0.0/255.255.255.0.
        let ts = TrafficSelector::from_cidr("10.1.0.0".parse().unwrap(), 24).unwrap();
        let p = selector_payload(&ts);
        assert_eq!(hex::encode(p.to_body()), "040000000a010000ffffff00");
        assert_eq!(selector(&p), Some(ts));
    }

    #[test]
    fn phase1_identity_matches_fixture_body() {
        let p = identity_payload(&Identity::Address("192.0.2.1".parse().unwrap()));
        assert_eq!(hex::encode(p.to_body()), "01000000c0000201");
        assert!(identity_matches(
            &Identity::Address("192.0.2.1".parse().unwrap()),
            &p
        ));
        assert!(!identity_matches(
            &Identity::Address("192.0.2.2".parse().unwrap()),
            &p
        ));
    }

    #[test]
    fn range_and_port_round_trip() {
        let ts =
            TrafficSelector::from_range("10.0.0.1".parse().unwrap(), "10.0.0.6".parse().unwrap())
                .unwrap()
                .with_protocol(17)
                .with_port(53);
        let p = selector_payload(&ts);
        assert_eq!(p.id_type.0, 7);
        assert_eq!(selector(&p), Some(ts));
    }

    #[test]
    fn rejects_non_contiguous_mask() {
        let p = payload(id::IPV4_ADDR_SUBNET, vec![10, 0, 0, 0, 255, 0, 255, 0]);
        assert_eq!(selector(&p), None);
    }
}
