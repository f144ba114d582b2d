//! ICMP errors the gateway writes back into the TUN device when an inner packet is too big
//! for the tunnel's path MTU (path MTU discovery through the tunnel).
//!
//! * IPv4: destination unreachable, code 4 "fragmentation needed and DF set", with the
//!   next-hop MTU in the second half of the unused word (RFC 792, RFC 1191 section 4),
//!   quoting the offending packet's IP header and its first 8 data bytes.
//! * IPv6: packet too big (type 2, code 0) with the MTU, quoting as much of the offending
//!   packet as fits in the IPv6 minimum MTU of 1280 bytes (RFC 4443 sections 2.4 and 3.2).
//!
//! Source address: the gateway has no address on the TUN device, and the kernel drops a
//! packet arriving on an interface with one of its own addresses as source (a "martian").
//! The error therefore comes from the address the offending packet was sent to: the sender
//! learns the MTU for that destination either way (it keys its path MTU cache on the quoted
//! destination), and the packet passes reverse-path checks since that address is routed
//! into the TUN device.
//!
//! No error is made about an ICMP error, a non-first fragment, or a packet whose source is
//! not a unicast address (RFC 1122 section 3.2.2, RFC 4443 section 2.4 (e)).

use std::net::{Ipv4Addr, Ipv6Addr};

/// TTL / hop limit of the errors we originate.
const TTL: u8 = 64;
/// The IPv6 minimum MTU: an ICMPv6 error must not exceed it (RFC 4443 section 2.4 (c)).
const IPV6_MIN_MTU: usize = 1280;

/// The RFC 1071 Internet checksum over `parts` (concatenated), as stored in headers.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &b in *part {
            match odd.take() {
                Some(hi) => sum += u64::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u64::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let folded = u16::try_from(sum).unwrap_or(0xffff);
    !folded
}

/// ICMPv4 "fragmentation needed" for the IPv4 packet `offending`, announcing `mtu`; `None`
/// when no error may or need be sent (not IPv4, malformed, DF clear, a non-first fragment,
/// an ICMP error itself, or a source that is not unicast).
pub(crate) fn frag_needed_v4(offending: &[u8], mtu: u16) -> Option<Vec<u8>> {
    let first = *offending.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 || offending.len() < ihl {
        return None;
    }
    let flags_fragment = u16::from_be_bytes([*offending.get(6)?, *offending.get(7)?]);
    let dont_fragment = flags_fragment & 0x4000 != 0;
    let fragment_offset = flags_fragment & 0x1fff;
    if !dont_fragment || fragment_offset != 0 {
        return None;
    }
    let src = Ipv4Addr::from(<[u8; 4]>::try_from(offending.get(12..16)?).ok()?);
    let dst = Ipv4Addr::from(<[u8; 4]>::try_from(offending.get(16..20)?).ok()?);
    if src.is_unspecified() || src.is_broadcast() || src.is_multicast() || src.is_loopback() {
        return None;
    }
    if *offending.get(9)? == 1 {
        // ICMP: only queries (echo, timestamp, ...) may get an error back.
        let icmp_type = *offending.get(ihl)?;
        if !matches!(icmp_type, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18) {
            return None;
        }
    }
    let quote = offending.get(..offending.len().min(ihl + 8))?;

    let mut icmp = Vec::with_capacity(8 + quote.len());
    icmp.extend_from_slice(&[3, 4, 0, 0, 0, 0]);
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(quote);
    let c = checksum(&[&icmp]).to_be_bytes();
    icmp[2..4].copy_from_slice(&c);

    let total = u16::try_from(20 + icmp.len()).ok()?;
    let mut ip = Vec::with_capacity(usize::from(total));
    ip.extend_from_slice(&[0x45, 0]);
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0, 0, TTL, 1, 0, 0]);
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(&src.octets());
    let c = checksum(&[&ip]).to_be_bytes();
    ip[10..12].copy_from_slice(&c);
    ip.extend_from_slice(&icmp);
    Some(ip)
}

/// ICMPv6 "packet too big" for the IPv6 packet `offending`, announcing `mtu`; `None` when
/// no error may be sent (not IPv6, malformed, an ICMPv6 error itself, or a source that is
/// not unicast).
pub(crate) fn packet_too_big_v6(offending: &[u8], mtu: u32) -> Option<Vec<u8>> {
    if offending.first()? >> 4 != 6 || offending.len() < 40 {
        return None;
    }
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(offending.get(8..24)?).ok()?);
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(offending.get(24..40)?).ok()?);
    if src.is_unspecified() || src.is_multicast() || src.is_loopback() {
        return None;
    }
    // Next header 58 directly after the fixed header: an error (type < 128) gets none.
    if *offending.get(6)? == 58 && offending.get(40).is_some_and(|t| *t < 128) {
        return None;
    }
    let quote = offending.get(..offending.len().min(IPV6_MIN_MTU - 40 - 8))?;

    let mut icmp = Vec::with_capacity(8 + quote.len());
    icmp.extend_from_slice(&[2, 0, 0, 0]);
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(quote);
    let len = u32::try_from(icmp.len()).ok()?;
    // RFC 4443 section 2.3: the checksum covers the RFC 8200 section 8.1 pseudo-header.
    let pseudo_tail = [0, 0, 0, 58];
    let c = checksum(&[
        &dst.octets(),
        &src.octets(),
        &len.to_be_bytes(),
        &pseudo_tail,
        &icmp,
    ])
    .to_be_bytes();
    icmp[2..4].copy_from_slice(&c);

    let payload_len = u16::try_from(icmp.len()).ok()?;
    let mut ip = Vec::with_capacity(40 + icmp.len());
    ip.extend_from_slice(&[0x60, 0, 0, 0]);
    ip.extend_from_slice(&payload_len.to_be_bytes());
    ip.extend_from_slice(&[58, TTL]);
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&icmp);
    Some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{
        Icmpv4Type, Icmpv6Type, IpNumber, Ipv4Header, Ipv6Header, PacketBuilder, SlicedPacket,
    };

    /// A UDP packet 10.1.0.10:5000 -> 10.2.0.10:53 with `len` payload bytes and DF set.
    fn udp_v4(len: usize) -> Vec<u8> {
        let mut ip = Ipv4Header::new(0, 64, IpNumber::UDP, [10, 1, 0, 10], [10, 2, 0, 10]).unwrap();
        ip.dont_fragment = true;
        let payload: Vec<u8> = (0..len).map(|i| u8::try_from(i % 251).unwrap()).collect();
        let builder =
            PacketBuilder::ip(etherparse::IpHeaders::Ipv4(ip, Default::default())).udp(5000, 53);
        let mut out = Vec::new();
        builder.write(&mut out, &payload).unwrap();
        out
    }

    #[test]
    fn frag_needed_quotes_header_and_8_bytes_with_valid_checksums() {
        let offending = udp_v4(1372);
        let icmp = frag_needed_v4(&offending, 1326).unwrap();
        let sliced = SlicedPacket::from_ip(&icmp).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &sliced.net else {
            panic!("not IPv4: {sliced:?}")
        };
        let header = ip.header().to_header();
        assert_eq!(header.source, [10, 2, 0, 10]);
        assert_eq!(header.destination, [10, 1, 0, 10]);
        assert_eq!(header.protocol, IpNumber::ICMP);
        assert_eq!(header.header_checksum, header.calc_header_checksum());
        assert_eq!(usize::from(header.total_len), 20 + 8 + 28);
        let Some(etherparse::TransportSlice::Icmpv4(icmp4)) = &sliced.transport else {
            panic!("not ICMPv4: {sliced:?}")
        };
        assert_eq!(
            icmp4.icmp_type(),
            Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: 1326
                }
            )
        );
        assert_eq!(
            icmp4.checksum(),
            icmp4.header().icmp_type.calc_checksum(icmp4.payload())
        );
        assert_eq!(icmp4.payload(), &offending[..28]);
    }

    #[test]
    fn frag_needed_only_for_df_first_fragments_that_are_not_icmp_errors() {
        let mut no_df = udp_v4(100);
        no_df[6] = 0;
        assert_eq!(frag_needed_v4(&no_df, 1300), None);
        let mut later_fragment = udp_v4(100);
        later_fragment[7] = 1;
        assert_eq!(frag_needed_v4(&later_fragment, 1300), None);
        let error = frag_needed_v4(&udp_v4(100), 1300).unwrap();
        // An ICMP error (type 3) with DF set does not get an error back.
        let mut error_df = error.clone();
        error_df[6] = 0x40;
        assert_eq!(frag_needed_v4(&error_df, 1300), None);
        assert_eq!(frag_needed_v4(&[0x60; 40], 1300), None);
        assert_eq!(frag_needed_v4(&[0x45; 10], 1300), None);
    }

    #[test]
    fn packet_too_big_v6_has_valid_checksum_and_fits_minimum_mtu() {
        let src = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];
        let dst = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
        let builder = PacketBuilder::ipv6(src, dst, 64).udp(5000, 53);
        let mut offending = Vec::new();
        builder.write(&mut offending, &[0x77; 1400]).unwrap();

        let icmp = packet_too_big_v6(&offending, 1326).unwrap();
        assert_eq!(icmp.len(), 1280);
        let (ip, _) = Ipv6Header::from_slice(&icmp).unwrap();
        assert_eq!(ip.source, dst);
        assert_eq!(ip.destination, src);
        assert_eq!(ip.next_header, IpNumber::IPV6_ICMP);
        let sliced = SlicedPacket::from_ip(&icmp).unwrap();
        let Some(etherparse::TransportSlice::Icmpv6(icmp6)) = &sliced.transport else {
            panic!("not ICMPv6")
        };
        assert_eq!(icmp6.icmp_type(), Icmpv6Type::PacketTooBig { mtu: 1326 });
        let expected = icmp6
            .header()
            .icmp_type
            .calc_checksum(src_dst(&ip).0, src_dst(&ip).1, icmp6.payload())
            .unwrap();
        assert_eq!(icmp6.checksum(), expected);
        assert_eq!(icmp6.payload(), &offending[..1280 - 48]);

        // An ICMPv6 error gets no error back.
        assert_eq!(packet_too_big_v6(&icmp, 1280), None);
    }

    fn src_dst(ip: &Ipv6Header) -> ([u8; 16], [u8; 16]) {
        (ip.source, ip.destination)
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (one's complement).
        assert_eq!(
            checksum(&[&[0x00, 0x01, 0xf2, 0x03], &[0xf4, 0xf5, 0xf6, 0xf7]]),
            !0xddf2
        );
        // Odd lengths pad with a zero byte.
        assert_eq!(checksum(&[&[0x01]]), !0x0100);
    }
}
