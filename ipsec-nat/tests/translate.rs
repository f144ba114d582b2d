//! The task's example (10.1.255.92 <-> 192.168.10.15), counters, and rejected packets.

#![expect(
    clippy::panic,
    reason = "a helper of a test crate: a panic is a failed test"
)]

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;

use common::{
    addresses, check, differing_words, example_table, icmp_echo, icmp_error, tcp, udp, LOCAL,
    REMOTE,
};
use ipsec_nat::{CounterSnapshot, Direction, Layer, NatError};

const HOST: Ipv4Addr = Ipv4Addr::new(10, 20, 30, 40);

#[test]
fn example_udp_goes_out_to_remote_and_reply_comes_back_from_local() {
    let table = example_table();

    let mut out = udp(HOST, LOCAL, b"query");
    let t = table.translate_outbound(&mut out).unwrap();
    assert_eq!(table.entry(t.outer_entry().unwrap()).unwrap().name, "web");
    assert_eq!(addresses(&out), (HOST, REMOTE));
    check(&out).assert_all_match();
    // The result is exactly what a host would have built for the real destination.
    assert_eq!(out, udp(HOST, REMOTE, b"query"));

    let mut reply = udp(REMOTE, HOST, b"answer");
    let t = table.translate_inbound(&mut reply).unwrap();
    assert!(t.is_translated());
    assert_eq!(addresses(&reply), (LOCAL, HOST));
    assert_eq!(reply, udp(LOCAL, HOST, b"answer"));
}

#[test]
fn example_tcp_and_icmp_echo_match_packets_built_for_the_real_addresses() {
    let table = example_table();
    let payload = b"GET / HTTP/1.1\r\n\r\n";

    let mut p = tcp(HOST, LOCAL, payload);
    assert!(table.translate_outbound(&mut p).unwrap().is_translated());
    assert_eq!(p, tcp(HOST, REMOTE, payload));

    let mut p = tcp(REMOTE, HOST, payload);
    assert!(table.translate_inbound(&mut p).unwrap().is_translated());
    assert_eq!(p, tcp(LOCAL, HOST, payload));

    let mut p = icmp_echo(HOST, LOCAL, b"ping");
    assert!(table.translate_outbound(&mut p).unwrap().is_translated());
    assert_eq!(p, icmp_echo(HOST, REMOTE, b"ping"));
}

#[test]
fn example_icmp_error_from_remote_router_translates_only_the_quoted_packet() {
    // A router behind the peer (192.168.10.1 has an entry, 192.168.10.254 has none) reports
    // that 192.168.10.15 is unreachable. The quoted datagram went HOST -> REMOTE and must
    // read HOST -> LOCAL so the host can match it to its socket.
    let table = example_table();
    let router = Ipv4Addr::new(192, 168, 10, 254);
    let quoted = udp(HOST, REMOTE, b"query");
    let mut p = icmp_error(router, HOST, 3, 1, &quoted);
    let t = table.translate_inbound(&mut p).unwrap();
    assert_eq!(t.outer_entry(), None);
    assert_eq!(
        table.entry(t.embedded_entry().unwrap()).unwrap().name,
        "web"
    );
    assert_eq!(addresses(&p), (router, HOST));
    assert_eq!(
        p,
        icmp_error(router, HOST, 3, 1, &udp(HOST, LOCAL, b"query"))
    );
    check(&p).assert_all_match();
}

#[test]
fn icmp_error_quoting_only_eight_bytes_of_tcp_leaves_the_absent_checksum_alone() {
    let table = example_table();
    let full = tcp(HOST, REMOTE, b"data");
    // RFC 792: header plus the first 8 data bytes; the TCP checksum (offset 16) is not there.
    let quoted = &full[..28];
    let mut p = icmp_error(REMOTE, HOST, 11, 0, quoted);
    let before = p.clone();
    assert!(table.translate_inbound(&mut p).unwrap().is_translated());
    let c = check(&p);
    c.assert_all_match();
    assert!(c.quoted_ip.is_some());
    // Outer checksum and source; quoted checksum and destination. The ICMP checksum stays:
    // the quoted address change and the quoted header checksum change cancel out in the
    // ones'-complement sum of the ICMP message.
    assert_eq!(differing_words(&before, &p), vec![10, 12, 14, 38, 44, 46]);
}

#[test]
fn zero_udp_checksum_stays_zero() {
    let table = example_table();
    let mut p = udp(HOST, LOCAL, b"no checksum");
    p[26] = 0;
    p[27] = 0;
    assert!(table.translate_outbound(&mut p).unwrap().is_translated());
    assert_eq!(addresses(&p), (HOST, REMOTE));
    assert_eq!(&p[26..28], &[0, 0]);
    check(&p).assert_all_match();
}

#[test]
fn outbound_leaves_sources_and_inbound_leaves_destinations_alone() {
    let table = example_table();
    // A remote address as the source of an outbound packet, and a local static NAT address as
    // the destination of an inbound one, are not what either direction rewrites.
    let original = udp(REMOTE, HOST, b"x");
    let mut p = original.clone();
    assert!(!table.translate_outbound(&mut p).unwrap().is_translated());
    assert_eq!(p, original);

    let original = udp(HOST, LOCAL, b"x");
    let mut p = original.clone();
    assert!(!table.translate_inbound(&mut p).unwrap().is_translated());
    assert_eq!(p, original);
}

#[test]
fn counts_packets_and_bytes_per_entry_and_direction() {
    let table = Arc::new(example_table());
    let mut a = udp(HOST, LOCAL, &[0u8; 100]); // 128 bytes
    let mut b = udp(REMOTE, HOST, &[0u8; 10]); // 38 bytes
    let mut c = udp(HOST, Ipv4Addr::new(10, 1, 255, 93), &[0u8; 2]);
    let mut unmatched = udp(HOST, Ipv4Addr::new(10, 1, 255, 94), &[0u8; 2]);
    assert!(table.translate_outbound(&mut a).unwrap().is_translated());
    assert!(table.translate_inbound(&mut b).unwrap().is_translated());
    assert!(table.translate_outbound(&mut c).unwrap().is_translated());
    assert!(!table
        .translate_outbound(&mut unmatched)
        .unwrap()
        .is_translated());

    assert_eq!(
        table.counters_by_name("web").unwrap(),
        CounterSnapshot {
            outbound_packets: 1,
            outbound_bytes: 128,
            inbound_packets: 1,
            inbound_bytes: 38,
        }
    );
    assert_eq!(
        table.counters_by_name("db").unwrap(),
        CounterSnapshot {
            outbound_packets: 1,
            outbound_bytes: 30,
            ..CounterSnapshot::default()
        }
    );
    assert_eq!(
        table.counters_by_name("gw").unwrap(),
        CounterSnapshot::default()
    );
}

#[test]
fn shared_table_counts_from_several_threads() {
    let table = Arc::new(example_table());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let table = Arc::clone(&table);
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    let mut p = udp(HOST, LOCAL, b"abcd");
                    assert!(table.translate_outbound(&mut p).unwrap().is_translated());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let c = table.counters_by_name("web").unwrap();
    assert_eq!(c.outbound_packets, 4000);
    assert_eq!(c.outbound_bytes, 4000 * 32);
}

#[test]
fn ignores_link_padding_after_total_length() {
    let table = example_table();
    let mut p = udp(HOST, LOCAL, b"x");
    let len = p.len();
    p.extend_from_slice(&[0xAA; 6]);
    assert!(table.translate_outbound(&mut p).unwrap().is_translated());
    check(&p[..len]).assert_all_match();
    assert_eq!(&p[len..], &[0xAA; 6]);
}

fn rejects(mut packet: Vec<u8>, direction: Direction) -> NatError {
    let table = example_table();
    let before = packet.clone();
    let Err(e) = table.translate(direction, &mut packet) else {
        panic!("accepted a packet that should be rejected");
    };
    assert_eq!(packet, before, "a rejected packet is left unmodified");
    e
}

#[test]
fn rejects_empty_and_short_packets() {
    assert_eq!(
        rejects(vec![], Direction::Outbound),
        NatError::Truncated {
            layer: Layer::Ipv4,
            offset: 0,
            needed: 20,
            available: 0
        }
    );
    assert_eq!(
        rejects(vec![0x45, 0, 0, 20, 0, 0], Direction::Inbound),
        NatError::Truncated {
            layer: Layer::Ipv4,
            offset: 0,
            needed: 20,
            available: 6
        }
    );
}

#[test]
fn rejects_ipv6_and_bad_ihl() {
    let mut p = udp(HOST, LOCAL, b"x");
    p[0] = 0x65;
    assert_eq!(
        rejects(p, Direction::Outbound),
        NatError::NotIpv4 {
            layer: Layer::Ipv4,
            version: 6
        }
    );
    let mut p = udp(HOST, LOCAL, b"x");
    p[0] = 0x44;
    assert_eq!(
        rejects(p, Direction::Outbound),
        NatError::HeaderLengthTooSmall {
            layer: Layer::Ipv4,
            ihl: 4
        }
    );
}

#[test]
fn rejects_total_length_beyond_buffer() {
    let p = udp(HOST, LOCAL, b"x");
    let len = p.len();
    let e = rejects(p[..len - 1].to_vec(), Direction::Outbound);
    assert_eq!(
        e,
        NatError::BadTotalLength {
            total_length: 29,
            header_length: 20,
            buffer_length: 28
        }
    );
}

#[test]
fn rejects_translated_tcp_too_short_for_its_checksum() {
    // Total length says 20 + 10: the TCP header stops before its checksum at offset 16.
    let mut p = tcp(HOST, LOCAL, b"")[..30].to_vec();
    p[2..4].copy_from_slice(&30u16.to_be_bytes());
    let e = rejects(p, Direction::Outbound);
    assert_eq!(
        e,
        NatError::Truncated {
            layer: Layer::Tcp,
            offset: 20,
            needed: 18,
            available: 10
        }
    );
}

#[test]
fn rejects_icmp_error_with_truncated_quoted_header() {
    let quoted = udp(HOST, REMOTE, b"x");
    let p = icmp_error(REMOTE, HOST, 3, 3, &quoted[..12]);
    let e = rejects(p, Direction::Inbound);
    assert_eq!(
        e,
        NatError::Truncated {
            layer: Layer::EmbeddedIpv4,
            offset: 28,
            needed: 20,
            available: 12
        }
    );
    assert_eq!(
        e.to_string(),
        "IPv4 header embedded in the ICMP error truncated: need 20 bytes at offset 28, have 12"
    );
}

#[test]
fn rejects_icmp_shorter_than_its_header() {
    let mut p = icmp_echo(HOST, LOCAL, b"");
    p.truncate(24);
    p[2..4].copy_from_slice(&24u16.to_be_bytes());
    assert_eq!(
        rejects(p, Direction::Outbound),
        NatError::Truncated {
            layer: Layer::Icmp,
            offset: 20,
            needed: 8,
            available: 4
        }
    );
}

#[test]
fn replacing_the_table_while_shared_keeps_counters_of_unchanged_entries() {
    use ipsec_nat::{Ipv4Subnet, NatEntry, NatTable};
    use std::sync::RwLock;

    let shared = RwLock::new(Arc::new(example_table()));
    let mut p = udp(HOST, LOCAL, b"before");
    let table = Arc::clone(&shared.read().unwrap());
    assert!(table.translate_outbound(&mut p).unwrap().is_translated());

    // "web" stays, "db" moves to another local address, "gw" goes, "new" arrives.
    let next = NatTable::new(
        vec![
            NatEntry::new("web", LOCAL, REMOTE),
            NatEntry::new(
                "db",
                Ipv4Addr::new(10, 1, 255, 90),
                Ipv4Addr::new(192, 168, 10, 16),
            ),
            NatEntry::new(
                "new",
                Ipv4Addr::new(10, 1, 255, 93),
                Ipv4Addr::new(192, 168, 10, 99),
            ),
        ],
        &[Ipv4Subnet::new(Ipv4Addr::new(10, 1, 255, 88), 29).unwrap()],
        &[Ipv4Subnet::new(Ipv4Addr::new(192, 168, 10, 0), 24).unwrap()],
    )
    .unwrap();
    next.carry_counters_from(&shared.read().unwrap());
    *shared.write().unwrap() = Arc::new(next);

    // The old Arc still works for a packet in flight; new packets see the new table.
    let mut late = udp(HOST, Ipv4Addr::new(10, 1, 255, 93), b"x");
    assert!(table.translate_outbound(&mut late).unwrap().is_translated());
    assert_eq!(addresses(&late).1, Ipv4Addr::new(192, 168, 10, 16));

    let current = Arc::clone(&shared.read().unwrap());
    let mut now = udp(HOST, Ipv4Addr::new(10, 1, 255, 93), b"x");
    assert!(current
        .translate_outbound(&mut now)
        .unwrap()
        .is_translated());
    assert_eq!(addresses(&now).1, Ipv4Addr::new(192, 168, 10, 99));
    assert_eq!(current.counters_by_name("web").unwrap().outbound_packets, 1);
    assert_eq!(current.counters_by_name("new").unwrap().outbound_packets, 1);
    assert_eq!(current.counters_by_name("db").unwrap().outbound_packets, 0);
}
