//! The few fields of an inner IP packet that policy and selector checks need.
//!
//! RFC 4301 section 4.4.1.1 selects on source and destination address, the next-layer
//! protocol and, for protocols that have them, source and destination ports. We read
//! those from an IPv4 or IPv6 header without copying the packet. Nothing here allocates.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol numbers that carry 16-bit source and destination ports in their first
/// four bytes: TCP (6), UDP (17), DCCP (33), UDP-Lite (136) and SCTP (132).
const PROTOCOLS_WITH_PORTS: [u8; 5] = [6, 17, 33, 132, 136];

/// IPv6 extension headers we step over to find the upper-layer protocol: hop-by-hop
/// options (0), routing (43), destination options (60). Fragment (44) is handled apart.
const IPV6_SKIPPABLE: [u8; 3] = [0, 43, 60];

/// How many IPv6 extension headers we walk before giving up (a bound against crafted chains).
const MAX_IPV6_EXTENSIONS: usize = 8;

/// Why bytes are not an IP packet we can select on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Fewer bytes than the fixed header.
    #[error("packet of {len} bytes is shorter than its IP header")]
    TooShort {
        /// Bytes available.
        len: usize,
    },
    /// The version nibble is neither 4 nor 6.
    #[error("IP version {0} is neither 4 nor 6")]
    BadVersion(u8),
    /// IPv4 header length (IHL) below 5 words or beyond the packet.
    #[error("IPv4 header length {ihl} words does not fit a {len}-byte packet")]
    BadHeaderLength {
        /// The IHL field.
        ihl: u8,
        /// Bytes available.
        len: usize,
    },
    /// The total length field claims more bytes than there are, or fewer than the header.
    #[error("IP length field says {claimed} bytes, {len} available")]
    BadTotalLength {
        /// Length from the header (IPv6: payload length plus 40).
        claimed: usize,
        /// Bytes available.
        len: usize,
    },
    /// An IPv6 extension header runs past the packet or the chain is too long.
    #[error("IPv6 extension header chain is truncated or longer than we walk")]
    BadExtensionChain,
}

/// Addresses, protocol and ports of an inner packet (RFC 4301 section 4.4.1.1 selectors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketInfo {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Upper-layer protocol (after IPv6 extension headers).
    pub protocol: u8,
    /// Source port, or 0 when the protocol has none or this is a non-first fragment.
    pub src_port: u16,
    /// Destination port, or 0 as for `src_port`.
    pub dst_port: u16,
    /// The packet's length according to its own header (at most the bytes given).
    pub total_len: usize,
    /// IPv4 "don't fragment" flag; always true for IPv6, where routers never fragment.
    pub dont_fragment: bool,
}

impl PacketInfo {
    /// Reads the selector fields of the IPv4 or IPv6 packet at the start of `packet`.
    ///
    /// `packet` may be longer than the IP packet (trailing bytes, e.g. TFC padding,
    /// RFC 4303 section 2.7); `total_len` says where the packet ends.
    pub fn parse(packet: &[u8]) -> Result<Self, PacketError> {
        let first = *packet
            .first()
            .ok_or(PacketError::TooShort { len: packet.len() })?;
        match first >> 4 {
            4 => Self::parse_v4(packet),
            6 => Self::parse_v6(packet),
            v => Err(PacketError::BadVersion(v)),
        }
    }

    /// The IP version (4 or 6).
    pub fn version(&self) -> u8 {
        match self.src {
            IpAddr::V4(_) => 4,
            IpAddr::V6(_) => 6,
        }
    }

    fn parse_v4(p: &[u8]) -> Result<Self, PacketError> {
        let len = p.len();
        let header: &[u8; 20] = p
            .get(..20)
            .and_then(|h| h.try_into().ok())
            .ok_or(PacketError::TooShort { len })?;
        let ihl = header[0] & 0x0f;
        let header_len = usize::from(ihl) * 4;
        if ihl < 5 || header_len > len {
            return Err(PacketError::BadHeaderLength { ihl, len });
        }
        let total_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        if total_len < header_len || total_len > len {
            return Err(PacketError::BadTotalLength {
                claimed: total_len,
                len,
            });
        }
        let flags_fragment = u16::from_be_bytes([header[6], header[7]]);
        let dont_fragment = flags_fragment & 0x4000 != 0;
        let first_fragment = flags_fragment & 0x1fff == 0;
        let protocol = header[9];
        let src = Ipv4Addr::new(header[12], header[13], header[14], header[15]);
        let dst = Ipv4Addr::new(header[16], header[17], header[18], header[19]);
        let body = p.get(header_len..total_len).unwrap_or_default();
        let (src_port, dst_port) = ports(protocol, first_fragment, body);
        Ok(Self {
            src: src.into(),
            dst: dst.into(),
            protocol,
            src_port,
            dst_port,
            total_len,
            dont_fragment,
        })
    }

    fn parse_v6(p: &[u8]) -> Result<Self, PacketError> {
        let len = p.len();
        let header: &[u8; 40] = p
            .get(..40)
            .and_then(|h| h.try_into().ok())
            .ok_or(PacketError::TooShort { len })?;
        let total_len = 40 + usize::from(u16::from_be_bytes([header[4], header[5]]));
        if total_len > len {
            return Err(PacketError::BadTotalLength {
                claimed: total_len,
                len,
            });
        }
        let mut src = [0u8; 16];
        src.copy_from_slice(&header[8..24]);
        let mut dst = [0u8; 16];
        dst.copy_from_slice(&header[24..40]);

        // Walk the extension headers (RFC 8200 section 4) up to the upper-layer protocol.
        let mut next = header[6];
        let mut offset = 40usize;
        let mut first_fragment = true;
        let mut walked = 0;
        loop {
            if IPV6_SKIPPABLE.contains(&next) {
                let ext = p
                    .get(offset..offset + 2)
                    .ok_or(PacketError::BadExtensionChain)?;
                let ext_len = (usize::from(ext[1]) + 1) * 8;
                next = ext[0];
                offset += ext_len;
            } else if next == 44 {
                // Fragment header: fixed 8 bytes, offset field in bits 3..16 of bytes 2-3.
                let ext = p
                    .get(offset..offset + 8)
                    .ok_or(PacketError::BadExtensionChain)?;
                first_fragment = u16::from_be_bytes([ext[2], ext[3]]) & 0xfff8 == 0;
                next = ext[0];
                offset += 8;
            } else {
                break;
            }
            walked += 1;
            if walked > MAX_IPV6_EXTENSIONS || offset > total_len {
                return Err(PacketError::BadExtensionChain);
            }
        }
        let body = p.get(offset..total_len).unwrap_or_default();
        let (src_port, dst_port) = ports(next, first_fragment, body);
        Ok(Self {
            src: Ipv6Addr::from(src).into(),
            dst: Ipv6Addr::from(dst).into(),
            protocol: next,
            src_port,
            dst_port,
            total_len,
            dont_fragment: true,
        })
    }
}

/// Source and destination ports, or zeros when the protocol has none, the packet is a
/// non-first fragment (RFC 4301 section 4.4.1.1 calls these OPAQUE), or the bytes are missing.
fn ports(protocol: u8, first_fragment: bool, body: &[u8]) -> (u16, u16) {
    if !first_fragment || !PROTOCOLS_WITH_PORTS.contains(&protocol) {
        return (0, 0);
    }
    match body.get(..4) {
        Some(b) => (
            u16::from_be_bytes([b[0], b[1]]),
            u16::from_be_bytes([b[2], b[3]]),
        ),
        None => (0, 0),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal IPv4 packet: 20-byte header plus `payload`, checksum left zero.
    pub(crate) fn ipv4(src: [u8; 4], dst: [u8; 4], protocol: u8, payload: &[u8]) -> Vec<u8> {
        let total = 20 + payload.len();
        let mut p = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, protocol, 0, 0];
        p[2..4].copy_from_slice(&u16::try_from(total).unwrap().to_be_bytes());
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(payload);
        p
    }

    /// A minimal IPv6 packet: 40-byte header plus `payload`.
    pub(crate) fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        p.push(next);
        p.push(64);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn parses_ipv4_udp_ports_and_df() {
        let p = ipv4(
            [10, 1, 0, 1],
            [10, 2, 0, 1],
            17,
            &[0x30, 0x39, 0, 53, 0, 8, 0, 0],
        );
        let info = PacketInfo::parse(&p).unwrap();
        assert_eq!(info.src, IpAddr::from([10, 1, 0, 1]));
        assert_eq!(info.dst, IpAddr::from([10, 2, 0, 1]));
        assert_eq!(
            (info.protocol, info.src_port, info.dst_port),
            (17, 12345, 53)
        );
        assert_eq!(info.total_len, 28);
        assert!(info.dont_fragment);
        assert_eq!(info.version(), 4);
    }

    #[test]
    fn icmp_and_later_fragments_have_no_ports() {
        let p = ipv4([10, 1, 0, 1], [10, 2, 0, 1], 1, &[8, 0, 0, 0, 0, 1, 0, 1]);
        let info = PacketInfo::parse(&p).unwrap();
        assert_eq!((info.src_port, info.dst_port), (0, 0));

        let mut frag = ipv4(
            [10, 1, 0, 1],
            [10, 2, 0, 1],
            6,
            &[0, 80, 1, 187, 0, 0, 0, 0],
        );
        frag[6] = 0x00;
        frag[7] = 0x10; // fragment offset 16 * 8 bytes
        let info = PacketInfo::parse(&frag).unwrap();
        assert_eq!((info.src_port, info.dst_port), (0, 0));
        assert!(!info.dont_fragment);
    }

    #[test]
    fn total_length_may_be_shorter_than_the_buffer() {
        let mut p = ipv4([1, 2, 3, 4], [5, 6, 7, 8], 1, &[0; 8]);
        p.extend_from_slice(&[0xaa; 5]);
        assert_eq!(PacketInfo::parse(&p).unwrap().total_len, 28);
    }

    #[test]
    fn rejects_truncated_and_inconsistent_ipv4() {
        assert_eq!(
            PacketInfo::parse(&[]),
            Err(PacketError::TooShort { len: 0 })
        );
        assert_eq!(
            PacketInfo::parse(&[0x45; 10]),
            Err(PacketError::TooShort { len: 10 })
        );
        let mut p = ipv4([1, 2, 3, 4], [5, 6, 7, 8], 1, &[0; 8]);
        p[0] = 0x44;
        assert_eq!(
            PacketInfo::parse(&p),
            Err(PacketError::BadHeaderLength { ihl: 4, len: 28 })
        );
        let mut p = ipv4([1, 2, 3, 4], [5, 6, 7, 8], 1, &[0; 8]);
        p[3] = 29;
        assert_eq!(
            PacketInfo::parse(&p),
            Err(PacketError::BadTotalLength {
                claimed: 29,
                len: 28
            })
        );
        assert_eq!(
            PacketInfo::parse(&[0x50; 40]),
            Err(PacketError::BadVersion(5))
        );
    }

    #[test]
    fn parses_ipv6_through_extension_headers() {
        let a: Ipv6Addr = "fd00:1::1".parse().unwrap();
        let b: Ipv6Addr = "fd00:2::1".parse().unwrap();
        // Hop-by-hop (8 bytes) -> fragment (first fragment) -> TCP 443 -> 8443.
        let mut payload = vec![44, 0, 1, 4, 0, 0, 0, 0];
        payload.extend_from_slice(&[6, 0, 0, 1, 0, 0, 0, 7]);
        payload.extend_from_slice(&[1, 187, 0x20, 0xfb, 0, 0, 0, 0]);
        let p = ipv6(a, b, 0, &payload);
        let info = PacketInfo::parse(&p).unwrap();
        assert_eq!(info.src, IpAddr::V6(a));
        assert_eq!(info.dst, IpAddr::V6(b));
        assert_eq!(
            (info.protocol, info.src_port, info.dst_port),
            (6, 443, 8443)
        );
        assert!(info.dont_fragment);
        assert_eq!(info.version(), 6);
    }

    #[test]
    fn rejects_truncated_ipv6_extension_chain() {
        let a: Ipv6Addr = "fd00:1::1".parse().unwrap();
        // Hop-by-hop claiming 16 bytes with only 8 present.
        let p = ipv6(a, a, 0, &[17, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(PacketInfo::parse(&p), Err(PacketError::BadExtensionChain));
    }
}
