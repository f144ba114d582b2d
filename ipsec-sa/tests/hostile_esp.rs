//! A hostile or broken peer on the ESP path: packets built here by hand (RFC 4303 section
//! 2: SPI, sequence number, IV, encrypted payload, padding, pad length, next header, ICV)
//! with the receiving SA's own keys, so that each one is wrong in exactly one way. Every
//! one must be dropped, counted under its reason, and never delivered; the genuine packets
//! around them must still get through.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test setup: a failed step should stop the test with its message"
)]

use std::net::SocketAddr;

use ipsec_crypto::{Cipher, EncryptionAlgorithm, Integrity, IntegrityAlgorithm, SecretBytes};
use ipsec_sa::child::{ChildSaPair, Encapsulation, EspSaKeys, Lifetime};
use ipsec_sa::dataplane::{DataPlane, DataPlaneConfig, DropReason, Policy, PolicyAction};
use ipsec_sa::selector::TrafficSelector;

/// The SPI we (gateway B, protecting 10.2.0.0/24) receive on.
const INBOUND_SPI: u32 = 0x0000_1234;
const OUTBOUND_SPI: u32 = 0x0000_5678;
const ENC_KEY: [u8; 16] = [0x11; 16];
const INTEG_KEY: [u8; 20] = [0x22; 20];

fn selector(addr: [u8; 4], len: u8) -> TrafficSelector {
    TrafficSelector::from_cidr(addr.into(), len).unwrap()
}

fn keys(spi: u32) -> EspSaKeys {
    EspSaKeys {
        spi,
        encryption: EncryptionAlgorithm::AesCbc128,
        encryption_key: SecretBytes::from_slice(&ENC_KEY),
        integrity: IntegrityAlgorithm::HmacSha1_96,
        integrity_key: SecretBytes::from_slice(&INTEG_KEY),
    }
}

/// Gateway B: 10.2.0.0/24 here, 10.1.0.0/24 behind the peer 192.0.2.1, ESP in UDP.
fn gateway() -> DataPlane {
    let local: SocketAddr = "192.0.2.2:4500".parse().unwrap();
    let remote: SocketAddr = "192.0.2.1:4500".parse().unwrap();
    let (local_ts, remote_ts) = (selector([10, 2, 0, 0], 24), selector([10, 1, 0, 0], 24));
    let mut plane = DataPlane::new(DataPlaneConfig::default());
    plane.add_policy(Policy {
        local: local_ts,
        remote: remote_ts,
        action: PolicyAction::Protect,
        priority: 10,
    });
    let pair = ChildSaPair {
        local,
        remote,
        inbound: keys(INBOUND_SPI),
        outbound: keys(OUTBOUND_SPI),
        local_ts,
        remote_ts,
        encapsulation: Encapsulation::UdpTunnel,
        hard_lifetime: Lifetime::default(),
    };
    plane.install(&pair).unwrap();
    plane
}

/// A 28-byte IPv4/UDP packet from `src` to `dst` with a correct header checksum.
fn inner(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut p = vec![
        0x45, 0, 0, 28, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0, src[0], src[1], src[2], src[3], dst[0],
        dst[1], dst[2], dst[3], 0x30, 0x39, 0x00, 0x35, 0, 8, 0, 0,
    ];
    let sum: u32 = p[..20]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    let checksum = !u16::try_from((folded & 0xffff) + (folded >> 16)).unwrap();
    p[10..12].copy_from_slice(&checksum.to_be_bytes());
    p
}

/// How to build the trailer of one packet.
#[derive(Clone, Copy)]
struct Trailer {
    /// Replace the monotonic padding 1, 2, 3, ... by this byte.
    pad_byte: Option<u8>,
    /// Claim this pad length instead of the real one.
    pad_len: Option<u8>,
    next_header: u8,
}

const GOOD: Trailer = Trailer {
    pad_byte: None,
    pad_len: None,
    next_header: 4,
};

/// SPI | seq | IV | AES-CBC(payload | padding | pad length | next header) | HMAC-SHA1-96,
/// RFC 4303 sections 2 and 3.3, keyed like the SA the gateway receives on.
fn esp(spi: u32, seq: u32, payload: &[u8], t: Trailer) -> Vec<u8> {
    let mut plain = payload.to_vec();
    let pad = (16 - (plain.len() + 2) % 16) % 16;
    plain.extend((1..=pad).map(|i| t.pad_byte.unwrap_or(u8::try_from(i).unwrap())));
    plain.push(t.pad_len.unwrap_or(u8::try_from(pad).unwrap()));
    plain.push(t.next_header);
    let iv = [seq.to_be_bytes()[3] ^ 0x5a; 16];
    Cipher::new(EncryptionAlgorithm::AesCbc128, &ENC_KEY)
        .unwrap()
        .encrypt_cbc(&iv, &mut plain)
        .unwrap();

    let mut packet = spi.to_be_bytes().to_vec();
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&iv);
    packet.extend_from_slice(&plain);
    let integrity = Integrity::new(IntegrityAlgorithm::HmacSha1_96, &INTEG_KEY).unwrap();
    let mut icv = [0u8; 12];
    integrity.compute(&[&packet], &mut icv).unwrap();
    packet.extend_from_slice(&icv);
    packet
}

fn good(seq: u32) -> Vec<u8> {
    esp(INBOUND_SPI, seq, &inner([10, 1, 0, 5], [10, 2, 0, 7]), GOOD)
}

/// Hands `packet` to the gateway and returns the drop reason; panics if it was delivered.
fn refused(plane: &mut DataPlane, mut packet: Vec<u8>) -> DropReason {
    match plane.decapsulate(&mut packet) {
        Ok(inbound) => panic!("delivered a hostile packet: {inbound:?}"),
        Err(e) => e.reason(),
    }
}

fn delivered(plane: &mut DataPlane, mut packet: Vec<u8>) -> Vec<u8> {
    let inbound = plane.decapsulate(&mut packet).unwrap();
    packet[inbound.inner].to_vec()
}

/// Everything counted so far, as (reason, count) with zero counts left out.
fn counted(plane: &DataPlane) -> Vec<(DropReason, u64)> {
    plane
        .drop_counters()
        .iter()
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[test]
fn hand_built_packet_is_delivered() {
    // The control: without it every refusal below could be a bug in this file's builder.
    let mut plane = gateway();
    assert_eq!(
        delivered(&mut plane, good(1)),
        inner([10, 1, 0, 5], [10, 2, 0, 7])
    );
    assert!(counted(&plane).is_empty());
    let stats = plane.pair_stats(INBOUND_SPI).unwrap();
    assert_eq!((stats.inbound.packets, stats.inbound.bytes), (1, 28));
    assert_eq!(stats.highest_inbound_sequence, 1);
}

#[test]
fn rejects_unknown_spi_and_counts_no_sa() {
    let mut plane = gateway();
    let mut wrong = good(1);
    wrong[..4].copy_from_slice(&OUTBOUND_SPI.to_be_bytes());
    assert_eq!(refused(&mut plane, wrong), DropReason::NoSa);
    let zero = esp(0, 1, &inner([10, 1, 0, 5], [10, 2, 0, 7]), GOOD);
    assert_eq!(refused(&mut plane, zero), DropReason::NoSa);
    assert_eq!(counted(&plane), vec![(DropReason::NoSa, 2)]);
    // Nothing was charged to the real SA, and its window did not move.
    let stats = plane.pair_stats(INBOUND_SPI).unwrap();
    assert_eq!(stats.drops.total(), 0);
    assert_eq!(stats.highest_inbound_sequence, 0);
}

#[test]
fn rejects_bad_icv_without_moving_the_replay_window() {
    let mut plane = gateway();
    let genuine = good(5);
    // One bit flipped in the sequence number, the IV, the ciphertext and the ICV; and a
    // forged packet far ahead, which must not shift the window past the genuine one.
    for at in [7, 8, 40, genuine.len() - 1] {
        let mut forged = genuine.clone();
        forged[at] ^= 0x01;
        assert_eq!(refused(&mut plane, forged), DropReason::BadIcv, "byte {at}");
    }
    let mut ahead = good(1_000_000);
    let last = ahead.len() - 1;
    ahead[last] ^= 0x80;
    assert_eq!(refused(&mut plane, ahead), DropReason::BadIcv);

    assert_eq!(counted(&plane), vec![(DropReason::BadIcv, 5)]);
    assert_eq!(
        plane
            .pair_stats(INBOUND_SPI)
            .unwrap()
            .drops
            .get(DropReason::BadIcv),
        5
    );
    assert_eq!(
        plane
            .pair_stats(INBOUND_SPI)
            .unwrap()
            .highest_inbound_sequence,
        0
    );
    delivered(&mut plane, genuine);
}

#[test]
fn rejects_replayed_and_too_old_sequence_numbers() {
    let mut plane = gateway();
    delivered(&mut plane, good(100));
    delivered(&mut plane, good(98));
    // The same packet again, one already seen, one left of the 64-packet window, and
    // sequence number 0, which a sender never uses (RFC 4303 section 3.3.3).
    assert_eq!(refused(&mut plane, good(100)), DropReason::Replay);
    assert_eq!(refused(&mut plane, good(98)), DropReason::Replay);
    assert_eq!(refused(&mut plane, good(36)), DropReason::Replay);
    assert_eq!(refused(&mut plane, good(0)), DropReason::Replay);
    // Inside the window and unseen: still fine, out of order.
    delivered(&mut plane, good(99));
    delivered(&mut plane, good(37));
    assert_eq!(counted(&plane), vec![(DropReason::Replay, 4)]);
    let stats = plane.pair_stats(INBOUND_SPI).unwrap();
    assert_eq!(stats.inbound.packets, 4);
    assert_eq!(stats.highest_inbound_sequence, 100);
}

#[test]
fn rejects_bad_padding_under_a_valid_icv() {
    let mut plane = gateway();
    let payload = inner([10, 1, 0, 5], [10, 2, 0, 7]);
    // 28 + 2 = 30 bytes: two bytes of padding, 1 and 2.
    let wrong_bytes = Trailer {
        pad_byte: Some(0xee),
        ..GOOD
    };
    let too_long = Trailer {
        pad_len: Some(200),
        ..GOOD
    };
    let shifted = Trailer {
        pad_len: Some(3),
        ..GOOD
    };
    for (seq, t) in [(1, wrong_bytes), (2, too_long), (3, shifted)] {
        let reason = refused(&mut plane, esp(INBOUND_SPI, seq, &payload, t));
        assert_eq!(reason, DropReason::BadPadding, "seq {seq}");
    }
    assert_eq!(counted(&plane), vec![(DropReason::BadPadding, 3)]);
    assert_eq!(plane.pair_stats(INBOUND_SPI).unwrap().inbound.packets, 0);
}

#[test]
fn rejects_dummy_and_non_ip_next_headers() {
    let mut plane = gateway();
    let payload = inner([10, 1, 0, 5], [10, 2, 0, 7]);
    let dummy = Trailer {
        next_header: 59,
        ..GOOD
    };
    let tcp = Trailer {
        next_header: 6,
        ..GOOD
    };
    // IPv6 announced, IPv4 inside.
    let v6 = Trailer {
        next_header: 41,
        ..GOOD
    };
    assert_eq!(
        refused(&mut plane, esp(INBOUND_SPI, 1, &payload, dummy)),
        DropReason::DummyPacket
    );
    assert_eq!(
        refused(&mut plane, esp(INBOUND_SPI, 2, &payload, tcp)),
        DropReason::BadNextHeader
    );
    assert_eq!(
        refused(&mut plane, esp(INBOUND_SPI, 3, &payload, v6)),
        DropReason::BadNextHeader
    );
    assert_eq!(
        counted(&plane),
        vec![(DropReason::BadNextHeader, 2), (DropReason::DummyPacket, 1)]
    );
}

#[test]
fn rejects_inner_addresses_outside_the_selectors() {
    let mut plane = gateway();
    // Source outside the peer's 10.1.0.0/24, destination outside our 10.2.0.0/24, and both
    // swapped: the peer may only speak for its own network, to ours.
    let cases = [
        inner([10, 9, 0, 5], [10, 2, 0, 7]),
        inner([10, 1, 0, 5], [192, 168, 1, 1]),
        inner([10, 2, 0, 7], [10, 1, 0, 5]),
    ];
    for (seq, payload) in (1..).zip(cases) {
        assert_eq!(
            refused(&mut plane, esp(INBOUND_SPI, seq, &payload, GOOD)),
            DropReason::SelectorMismatch
        );
    }
    assert_eq!(counted(&plane), vec![(DropReason::SelectorMismatch, 3)]);
    assert_eq!(plane.pair_stats(INBOUND_SPI).unwrap().inbound.packets, 0);
    delivered(&mut plane, good(4));
}

#[test]
fn rejects_truncated_and_misaligned_packets_as_malformed() {
    let mut plane = gateway();
    let genuine = good(1);
    let mut reasons = Vec::new();
    // Shorter than the SPI, than header + IV + ICV, and ciphertext cut by one byte (the
    // ICV then covers other bytes: it cannot verify).
    for len in [0, 3, 8, 24, 35, genuine.len() - 1] {
        reasons.push(refused(&mut plane, genuine[..len].to_vec()));
    }
    assert_eq!(reasons[..5], [DropReason::Malformed; 5]);
    assert!(matches!(
        reasons[5],
        DropReason::Malformed | DropReason::BadIcv
    ));
    delivered(&mut plane, genuine);
}

#[test]
fn a_mixed_attack_is_counted_reason_by_reason_and_nothing_leaks() {
    let mut plane = gateway();
    let mut sent_good = 0;
    for seq in 1..=200u32 {
        let packet = match seq % 5 {
            0 => {
                let mut p = good(seq);
                p[20] ^= 0xff;
                p
            }
            1 => esp(
                INBOUND_SPI,
                seq,
                &inner([172, 16, 0, 1], [10, 2, 0, 7]),
                GOOD,
            ),
            2 => good(seq.saturating_sub(70).max(1)),
            _ => {
                sent_good += 1;
                good(seq)
            }
        };
        let mut buf = packet;
        if let Ok(i) = plane.decapsulate(&mut buf) {
            assert_eq!(
                &buf[i.inner],
                inner([10, 1, 0, 5], [10, 2, 0, 7]).as_slice()
            );
        }
    }
    let stats = plane.pair_stats(INBOUND_SPI).unwrap();
    assert_eq!(stats.inbound.packets, sent_good);
    assert_eq!(plane.drop_counters().get(DropReason::BadIcv), 40);
    assert_eq!(plane.drop_counters().get(DropReason::SelectorMismatch), 40);
    // seq % 5 == 2 replays seq - 70 (or 1): number 1 was taken by the authenticated
    // selector violation (the window moves once the ICV verifies, RFC 4303 section
    // 3.4.3), later ones are left of the window.
    assert_eq!(plane.drop_counters().get(DropReason::Replay), 40);
    assert_eq!(plane.drop_counters().total(), 120);
}
