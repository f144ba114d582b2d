//! Packets built by the Linux kernel (see tests/data/README.md) translated both ways, with
//! every checksum recomputed by etherparse.

#![expect(
    clippy::unwrap_used,
    reason = "helpers of a test crate: a failed unwrap is a failed test"
)]

mod common;

use std::net::Ipv4Addr;

use common::{addresses, check, differing_words, fixture};
use etherparse::{Ipv4Header, UdpHeader};
use ipsec_nat::{Direction, Ipv4Subnet, NatEntry, NatTable};

const HOST_A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const HOST_B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const REMOTE_B: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 15);
const LOCAL_FOR_B: Ipv4Addr = Ipv4Addr::new(10, 1, 255, 92);

fn subnet(a: [u8; 4], len: u8) -> Ipv4Subnet {
    Ipv4Subnet::new(Ipv4Addr::from(a), len).unwrap()
}

/// Host B's address 10.77.0.1 is a static NAT address standing for 192.168.10.15, so the
/// packets A sent to B are outbound packets to translate.
fn table_b_is_static_nat() -> NatTable {
    NatTable::new(
        vec![NatEntry::new("b", HOST_B, REMOTE_B)],
        &[subnet([10, 77, 0, 0], 29)],
        &[subnet([192, 168, 10, 0], 24)],
    )
    .unwrap()
}

/// Host B (10.77.0.1) is a remote host shown locally as 10.1.255.92, so the packets B sent
/// are inbound packets to translate.
fn table_b_is_remote() -> NatTable {
    NatTable::new(
        vec![NatEntry::new("b", LOCAL_FOR_B, HOST_B)],
        &[subnet([10, 1, 255, 88], 29)],
        &[subnet([10, 77, 0, 0], 24)],
    )
    .unwrap()
}

/// Translates a copy of `name` and checks: the translation happened, the addresses are the
/// expected ones, every checksum matches a full recomputation, and reversing restores the
/// captured bytes.
fn translate_fixture(
    table: &NatTable,
    direction: Direction,
    name: &str,
    expect: (Ipv4Addr, Ipv4Addr),
) -> (Vec<u8>, Vec<u8>) {
    let original = fixture(name);
    check(&original).assert_all_match();

    let mut packet = original.clone();
    let t = table.translate(direction, &mut packet).unwrap();
    assert!(t.is_translated(), "{name}");
    assert_eq!(addresses(&packet), expect, "{name}");
    check(&packet).assert_all_match();

    let mut back = packet.clone();
    let r = table.reverse(direction, &mut back).unwrap();
    assert_eq!(r, t);
    assert_eq!(back, original, "{name} round trip");
    (original, packet)
}

#[test]
fn kernel_echo_request_outbound() {
    let (before, after) = translate_fixture(
        &table_b_is_static_nat(),
        Direction::Outbound,
        "icmp_echo_request",
        (HOST_A, REMOTE_B),
    );
    // Only the destination and the IP header checksum change: the ICMP checksum does not
    // cover the IP header.
    assert_eq!(differing_words(&before, &after), vec![10, 16, 18]);
}

#[test]
fn kernel_echo_reply_inbound() {
    let (before, after) = translate_fixture(
        &table_b_is_remote(),
        Direction::Inbound,
        "icmp_echo_reply",
        (LOCAL_FOR_B, HOST_A),
    );
    assert_eq!(differing_words(&before, &after), vec![10, 12, 14]);
}

#[test]
fn kernel_udp_outbound() {
    let (before, after) = translate_fixture(
        &table_b_is_static_nat(),
        Direction::Outbound,
        "udp_datagram",
        (HOST_A, REMOTE_B),
    );
    // IP checksum, destination, UDP checksum (offset 20 + 6).
    assert_eq!(differing_words(&before, &after), vec![10, 16, 18, 26]);
}

#[test]
fn kernel_tcp_syn_and_data_outbound() {
    for name in ["tcp_syn", "tcp_data"] {
        let (before, after) = translate_fixture(
            &table_b_is_static_nat(),
            Direction::Outbound,
            name,
            (HOST_A, REMOTE_B),
        );
        // IP checksum, destination, TCP checksum (offset 20 + 16).
        assert_eq!(
            differing_words(&before, &after),
            vec![10, 16, 18, 36],
            "{name}"
        );
    }
}

#[test]
fn kernel_port_unreachable_inbound_translates_quoted_destination() {
    let table = table_b_is_remote();
    let (before, after) = translate_fixture(
        &table,
        Direction::Inbound,
        "icmp_port_unreachable",
        (LOCAL_FOR_B, HOST_A),
    );
    // The quoted datagram went from A to B: its destination becomes the static NAT address,
    // so host A can match the error to its socket.
    let quoted = &after[28..];
    assert_eq!(addresses(quoted), (HOST_A, LOCAL_FOR_B));
    let c = check(&after);
    assert!(c.quoted_ip.is_some() && c.quoted_transport.is_some());
    // Outer: checksum and source. ICMP checksum (20 + 2). Quoted: header checksum
    // (28 + 10), destination (28 + 16), UDP checksum (28 + 20 + 6).
    assert_eq!(
        differing_words(&before, &after),
        vec![10, 12, 14, 22, 38, 44, 46, 54]
    );

    let mut again = before.clone();
    let t = table.translate(Direction::Inbound, &mut again).unwrap();
    assert_eq!(t.outer_entry(), t.embedded_entry());
    assert!(t.outer_entry().is_some());
}

#[test]
fn kernel_port_unreachable_outbound_translates_quoted_source() {
    // Seen from B's side: A (10.77.0.2) is the static NAT address of remote 192.168.10.20
    // and B's error to A is outbound.
    let table = NatTable::new(
        vec![NatEntry::new("a", HOST_A, Ipv4Addr::new(192, 168, 10, 20))],
        &[subnet([10, 77, 0, 0], 29)],
        &[subnet([192, 168, 10, 0], 24)],
    )
    .unwrap();
    let (_, after) = translate_fixture(
        &table,
        Direction::Outbound,
        "icmp_port_unreachable",
        (HOST_B, Ipv4Addr::new(192, 168, 10, 20)),
    );
    assert_eq!(
        addresses(&after[28..]),
        (Ipv4Addr::new(192, 168, 10, 20), HOST_B)
    );
}

/// The 3000-byte UDP payload the capture script sends in fragments.
fn fragmented_payload() -> Vec<u8> {
    let mut p: Vec<u8> = (0..11).flat_map(|_| 0..=255u8).collect();
    p.extend(std::iter::repeat_n(0u8, 184));
    p
}

/// Recomputes the UDP checksum of the whole fragmented datagram from the first fragment's
/// header and the payload the script sent.
fn full_datagram_udp_checksum(first_fragment: &[u8]) -> (u16, u16) {
    let (ip, rest) = Ipv4Header::from_slice(first_fragment).unwrap();
    let (udp, _) = UdpHeader::from_slice(rest).unwrap();
    assert_eq!(usize::from(udp.length), 8 + 3000);
    let full = udp.calc_checksum_ipv4(&ip, &fragmented_payload()).unwrap();
    (udp.checksum, full)
}

#[test]
fn kernel_first_fragment_gets_udp_checksum_update() {
    let table = table_b_is_static_nat();
    let original = fixture("udp_fragment_first");
    let (found, full) = full_datagram_udp_checksum(&original);
    assert_eq!(found, full, "captured checksum covers the whole datagram");

    let mut packet = original.clone();
    let t = table.translate(Direction::Outbound, &mut packet).unwrap();
    assert!(t.is_translated());
    assert_eq!(addresses(&packet), (HOST_A, REMOTE_B));
    check(&packet).assert_all_match();
    let (found, full) = full_datagram_udp_checksum(&packet);
    assert_eq!(found, full);
    assert_eq!(differing_words(&original, &packet), vec![10, 16, 18, 26]);
}

#[test]
fn kernel_later_fragment_gets_ip_level_change_only() {
    let table = table_b_is_static_nat();
    let original = fixture("udp_fragment_last");
    let mut packet = original.clone();
    let t = table.translate(Direction::Outbound, &mut packet).unwrap();
    assert!(t.is_translated());
    check(&packet).assert_all_match();
    assert_eq!(differing_words(&original, &packet), vec![10, 16, 18]);
}

#[test]
fn kernel_packets_without_entry_pass_unchanged() {
    let table = table_b_is_static_nat();
    for name in [
        "icmp_echo_reply",
        "icmp_port_unreachable",
        "tcp_syn",
        "udp_datagram",
    ] {
        let original = fixture(name);
        let mut packet = original.clone();
        // Outbound looks at the destination, which is A here, and A has no entry.
        let t = table.translate(Direction::Inbound, &mut packet).unwrap();
        assert!(!t.is_translated(), "{name}");
        let t = table.translate(Direction::Outbound, &mut packet).unwrap();
        if name == "icmp_port_unreachable" || name == "icmp_echo_reply" {
            assert!(!t.is_translated(), "{name}");
            assert_eq!(packet, original, "{name}");
        }
    }
}
