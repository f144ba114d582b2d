//! Test helpers: full checksum recomputation with etherparse, packet builders, tables.

// Shared by several test crates, each using a different subset; a failed unwrap here is a
// failed test, as in the tests themselves.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    reason = "test helpers shared by several test crates"
)]

use std::net::Ipv4Addr;

use etherparse::{Icmpv4Header, Ipv4Header, PacketBuilder, TcpHeader, UdpHeader};
use ipsec_nat::{Ipv4Subnet, NatEntry, NatTable};

pub const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 1, 255, 92);
pub const REMOTE: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 15);

/// The table of the task's example plus two neighbours.
pub fn example_table() -> NatTable {
    NatTable::new(
        vec![
            NatEntry::new("web", LOCAL, REMOTE),
            NatEntry::new(
                "db",
                Ipv4Addr::new(10, 1, 255, 93),
                Ipv4Addr::new(192, 168, 10, 16),
            ),
            NatEntry::new(
                "gw",
                Ipv4Addr::new(10, 1, 255, 89),
                Ipv4Addr::new(192, 168, 10, 1),
            ),
        ],
        &[Ipv4Subnet::new(Ipv4Addr::new(10, 1, 255, 88), 29).unwrap()],
        &[Ipv4Subnet::new(Ipv4Addr::new(192, 168, 10, 0), 24).unwrap()],
    )
    .unwrap()
}

/// Checksums found in a packet, each beside etherparse's full recomputation.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Checked {
    pub ip: (u16, u16),
    /// (found, recomputed) for TCP/UDP/ICMP of a complete datagram; None for a fragment.
    pub transport: Option<(u16, u16)>,
    /// For an ICMP error: the quoted IPv4 header's checksum.
    pub quoted_ip: Option<(u16, u16)>,
    /// For an ICMP error quoting a complete TCP or UDP datagram: its transport checksum.
    pub quoted_transport: Option<(u16, u16)>,
}

impl Checked {
    /// Asserts every recomputed checksum equals the one found.
    pub fn assert_all_match(&self) {
        assert_eq!(self.ip.0, self.ip.1, "IPv4 header checksum");
        if let Some((found, full)) = self.transport {
            assert_eq!(found, full, "transport checksum");
        }
        if let Some((found, full)) = self.quoted_ip {
            assert_eq!(found, full, "quoted IPv4 header checksum");
        }
        if let Some((found, full)) = self.quoted_transport {
            assert_eq!(found, full, "quoted transport checksum");
        }
    }
}

/// Recomputes the checksums of `packet` with etherparse.
pub fn check(packet: &[u8]) -> Checked {
    let (ip, _) = Ipv4Header::from_slice(packet).unwrap();
    let total = usize::from(ip.total_len);
    let payload = &packet[ip.header_len()..total];
    let mut out = Checked {
        ip: (ip.header_checksum, ip.calc_header_checksum()),
        ..Checked::default()
    };
    let complete = ip.fragment_offset.value() == 0 && !ip.more_fragments;
    if !complete {
        return out;
    }
    out.transport = transport_checksum(&ip, payload);
    if ip.protocol == etherparse::IpNumber::ICMP {
        let (icmp, rest) = Icmpv4Header::from_slice(payload).unwrap();
        if matches!(payload[0], 3 | 4 | 5 | 11 | 12) {
            let (quoted, _) = Ipv4Header::from_slice(rest).unwrap();
            out.quoted_ip = Some((quoted.header_checksum, quoted.calc_header_checksum()));
            // The quoted transport checksum can only be recomputed when the whole datagram
            // is quoted.
            if usize::from(quoted.total_len) == rest.len()
                && quoted.protocol != etherparse::IpNumber::ICMP
            {
                out.quoted_transport = transport_checksum(&quoted, &rest[quoted.header_len()..]);
            }
        }
        let _ = icmp;
    }
    out
}

fn transport_checksum(ip: &Ipv4Header, payload: &[u8]) -> Option<(u16, u16)> {
    match ip.protocol {
        etherparse::IpNumber::TCP => {
            let (tcp, rest) = TcpHeader::from_slice(payload).unwrap();
            Some((tcp.checksum, tcp.calc_checksum_ipv4(ip, rest).unwrap()))
        }
        etherparse::IpNumber::UDP => {
            let (udp, rest) = UdpHeader::from_slice(payload).unwrap();
            if udp.checksum == 0 {
                // RFC 768: no checksum; nothing to recompute, and it must stay zero.
                return Some((0, 0));
            }
            Some((udp.checksum, udp.calc_checksum_ipv4(ip, rest).unwrap()))
        }
        etherparse::IpNumber::ICMP => {
            let (icmp, rest) = Icmpv4Header::from_slice(payload).unwrap();
            Some((icmp.checksum, icmp.icmp_type.calc_checksum(rest)))
        }
        _ => None,
    }
}

/// Source and destination of an IPv4 packet.
pub fn addresses(packet: &[u8]) -> (Ipv4Addr, Ipv4Addr) {
    let a = |o: usize| Ipv4Addr::new(packet[o], packet[o + 1], packet[o + 2], packet[o + 3]);
    (a(12), a(16))
}

/// The offsets of the 16-bit words in which two equal-length packets differ.
pub fn differing_words(a: &[u8], b: &[u8]) -> Vec<usize> {
    assert_eq!(a.len(), b.len());
    (0..a.len())
        .step_by(2)
        .filter(|&i| a[i..(i + 2).min(a.len())] != b[i..(i + 2).min(b.len())])
        .collect()
}

pub fn udp(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv4(src.octets(), dst.octets(), 64).udp(40000, 53);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).unwrap();
    out
}

pub fn tcp(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
        .tcp(40000, 443, 0x1234_5678, 64240)
        .ack(0x0bad_cafe)
        .psh();
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).unwrap();
    out
}

pub fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv4(src.octets(), dst.octets(), 64).icmpv4_echo_request(0x26b1, 1);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).unwrap();
    out
}

/// An ICMP error of `icmp_type`/`code` from `src` to `dst` quoting `quoted`.
pub fn icmp_error(src: Ipv4Addr, dst: Ipv4Addr, icmp_type: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv4(src.octets(), dst.octets(), 64).icmpv4_raw(icmp_type, code, [0; 4]);
    let mut out = Vec::with_capacity(b.size(quoted.len()));
    b.write(&mut out, quoted).unwrap();
    out
}

/// Reads a hex fixture from tests/data.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}.hex", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    hex_decode(text.trim())
}

fn hex_decode(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0);
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
