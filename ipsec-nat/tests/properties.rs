//! Property tests: checksums after translation equal etherparse's full recomputation,
//! translate-then-reverse restores the packet, and no input makes the translator panic.

#![expect(
    clippy::unwrap_used,
    reason = "helpers of a test crate: a failed unwrap is a failed test"
)]

mod common;

use std::net::Ipv4Addr;

use common::{check, example_table, icmp_echo, icmp_error, tcp, udp};
use etherparse::{IpFragOffset, Ipv4Header, PacketBuilder};
use ipsec_nat::fuzz_support::{example_table as fuzz_table, translate_both_ways};
use ipsec_nat::{Direction, NatTable};
use proptest::prelude::*;

/// Static NAT (local) and remote addresses of [`example_table`], plus unmapped neighbours.
const LOCALS: [[u8; 4]; 4] = [
    [10, 1, 255, 92],
    [10, 1, 255, 93],
    [10, 1, 255, 89],
    [10, 1, 255, 94],
];
const REMOTES: [[u8; 4]; 4] = [
    [192, 168, 10, 15],
    [192, 168, 10, 16],
    [192, 168, 10, 1],
    [192, 168, 10, 17],
];

#[derive(Debug, Clone, Copy)]
enum Kind {
    Tcp,
    Udp,
    UdpNoChecksum,
    Echo,
    LaterFragment,
    /// An ICMP error quoting a TCP, UDP or echo datagram, cut to `quote` bytes past the
    /// quoted header's 20 (None: the whole datagram).
    Error {
        inner: u8,
        quote: Option<usize>,
    },
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Tcp),
        Just(Kind::Udp),
        Just(Kind::UdpNoChecksum),
        Just(Kind::Echo),
        Just(Kind::LaterFragment),
        (0u8..3, proptest::option::of(8usize..40))
            .prop_map(|(inner, quote)| Kind::Error { inner, quote }),
    ]
}

/// The address a direction rewrites: a table address (mapped or not) or any address.
fn peer(direction: Direction) -> impl Strategy<Value = Ipv4Addr> {
    let table_side = match direction {
        Direction::Outbound => LOCALS,
        Direction::Inbound => REMOTES,
    };
    prop_oneof![
        3 => proptest::sample::select(table_side.to_vec()).prop_map(Ipv4Addr::from),
        1 => any::<u32>().prop_map(Ipv4Addr::from),
    ]
}

fn direction() -> impl Strategy<Value = Direction> {
    prop_oneof![Just(Direction::Outbound), Just(Direction::Inbound)]
}

/// A datagram of `kind` between `host` (local side) and `peer`, oriented for `direction`:
/// outbound host -> peer, inbound peer -> host. An ICMP error travels the same way and
/// quotes a datagram that went the other way between `host` and `quoted_peer` (the peer
/// itself, or another host when a router reports the error).
fn build(
    kind: Kind,
    direction: Direction,
    host: Ipv4Addr,
    (peer, quoted_peer): (Ipv4Addr, Ipv4Addr),
    payload: &[u8],
    ttl: u8,
) -> Vec<u8> {
    let (src, dst) = match direction {
        Direction::Outbound => (host, peer),
        Direction::Inbound => (peer, host),
    };
    let mut p = match kind {
        Kind::Tcp => tcp(src, dst, payload),
        Kind::Udp => udp(src, dst, payload),
        Kind::UdpNoChecksum => {
            let mut p = udp(src, dst, payload);
            p[26..28].fill(0);
            p
        }
        Kind::Echo => icmp_echo(src, dst, payload),
        Kind::LaterFragment => {
            let mut p = udp(src, dst, payload);
            let (mut h, _) = Ipv4Header::from_slice(&p).unwrap();
            h.fragment_offset = IpFragOffset::try_new(185).unwrap();
            h.header_checksum = h.calc_header_checksum();
            p[..20].copy_from_slice(&h.to_bytes());
            p
        }
        Kind::Error { inner, quote } => {
            let (q_src, q_dst) = match direction {
                Direction::Outbound => (quoted_peer, host),
                Direction::Inbound => (host, quoted_peer),
            };
            let full = match inner {
                0 => tcp(q_src, q_dst, payload),
                1 => udp(q_src, q_dst, payload),
                _ => icmp_echo(q_src, q_dst, payload),
            };
            let cut = quote.map_or(full.len(), |q| (20 + q).min(full.len()));
            icmp_error(src, dst, 3, 1, &full[..cut])
        }
    };
    // Vary the header checksum's starting point.
    p[8] = ttl;
    let (mut h, _) = Ipv4Header::from_slice(&p).unwrap();
    h.header_checksum = h.calc_header_checksum();
    p[..20].copy_from_slice(&h.to_bytes());
    p
}

/// The field a direction rewrites and the address it should become.
fn expected(table: &NatTable, direction: Direction, peer: Ipv4Addr) -> Ipv4Addr {
    match direction {
        Direction::Outbound => table.entry_for_local(peer).map_or(peer, |e| e.remote),
        Direction::Inbound => table.entry_for_remote(peer).map_or(peer, |e| e.local),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn checksums_equal_full_recomputation_and_reverse_restores(
        (dir, peer, other) in direction().prop_flat_map(|d| (Just(d), peer(d), peer(d))),
        same_peer_quoted in any::<bool>(),
        kind in kind(),
        host in any::<u32>().prop_map(Ipv4Addr::from),
        payload in proptest::collection::vec(any::<u8>(), 0..1400),
        ttl in any::<u8>(),
    ) {
        let table = example_table();
        // A random host may collide with a table address; keep the roles clean.
        prop_assume!(table.entry_for_local(host).is_none() && table.entry_for_remote(host).is_none());
        let quoted_peer = if same_peer_quoted { peer } else { other };
        let original = build(kind, dir, host, (peer, quoted_peer), &payload, ttl);
        check(&original).assert_all_match();

        let mut p = original.clone();
        let t = table.translate(dir, &mut p).unwrap();
        let want = expected(&table, dir, peer);
        let (field, quoted_field) = match dir {
            Direction::Outbound => (16, 28 + 12),
            Direction::Inbound => (12, 28 + 16),
        };
        prop_assert_eq!(&p[field..field + 4], &want.octets());
        prop_assert_eq!(t.outer_entry().is_some(), want != peer);
        if let Kind::Error { .. } = kind {
            let want_quoted = expected(&table, dir, quoted_peer);
            prop_assert_eq!(&p[quoted_field..quoted_field + 4], &want_quoted.octets());
            prop_assert_eq!(t.embedded_entry().is_some(), want_quoted != quoted_peer);
        }

        let c = check(&p);
        c.assert_all_match();
        if let Kind::UdpNoChecksum = kind {
            prop_assert_eq!(&p[26..28], &[0, 0]);
        }
        if let Kind::Error { quote: None, inner: 0 | 1 } = kind {
            prop_assert!(c.quoted_transport.is_some());
        }

        let mut back = p.clone();
        prop_assert_eq!(table.reverse(dir, &mut back).unwrap(), t);
        prop_assert_eq!(back, original);
    }

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..160)) {
        let table = fuzz_table();
        let o = translate_both_ways(&table, &data);
        for d in [o.outbound, o.inbound] {
            prop_assert_eq!(d.check(), Ok(()), "{:?}", d);
        }
    }

    #[test]
    fn damaged_packets_never_panic_and_reverse_when_accepted(
        (dir, peer) in direction().prop_flat_map(|d| (Just(d), peer(d))),
        kind in kind(),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut p = build(kind, dir, Ipv4Addr::new(10, 20, 30, 40), (peer, peer), &payload, 64);
        for (i, b) in flips {
            let i = i.index(p.len());
            p[i] = b;
        }
        let n = cut.index(p.len() + 1);
        p.truncate(n);
        let table = fuzz_table();
        let o = translate_both_ways(&table, &p);
        for d in [o.outbound, o.inbound] {
            prop_assert_eq!(d.check(), Ok(()), "{:?}", d);
        }
    }
}

#[test]
fn header_with_options_is_translated() {
    // A 24-byte header (one 4-byte option: NOP NOP NOP End) shifts the transport header;
    // etherparse builds it and checks the result.
    let table = example_table();
    let mut h = Ipv4Header::new(
        8,
        64,
        etherparse::IpNumber::UDP,
        [10, 20, 30, 40],
        [10, 1, 255, 92],
    )
    .unwrap();
    h.options = [1u8, 1, 1, 0][..].try_into().unwrap();
    let b = PacketBuilder::ip(etherparse::IpHeaders::Ipv4(h, Default::default())).udp(1, 2);
    let mut p = Vec::new();
    b.write(&mut p, b"optional").unwrap();
    assert_eq!(p[0], 0x46);
    check(&p).assert_all_match();
    let t = table.translate(Direction::Outbound, &mut p).unwrap();
    assert!(t.is_translated());
    assert_eq!(&p[16..20], &[192, 168, 10, 15]);
    check(&p).assert_all_match();
}
