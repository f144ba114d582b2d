//! ESP through the data plane of ipsec-sa: two gateways share one SA pair (keys fixed,
//! algorithms chosen by the input) for 10.1.0.0/24 <-> 10.2.0.0/24 over UDP 4500.
//!
//! Input: byte 0 picks the cipher, byte 1 the integrity algorithm, byte 2 the mode.
//! - mode 0 (mod 4): the rest is an inner packet for gateway A. If A protects it, B must
//!   accept the ESP packet and deliver a prefix of the same bytes (trailing bytes
//!   beyond the IP total length are not part of the inner packet).
//! - mode 2 (mod 4): the rest is up to 16 inner packets, each behind a 2-byte length.
//!   A seals them with one `encapsulate_batch`; a copy of A with the same random numbers
//!   seals them one at a time with `encapsulate`, and the two must agree on every result
//!   and every byte; B must open each protected packet as in mode 0.
//! - odd mode: the rest follows B's inbound SPI and goes straight to B's decapsulation
//!   (reaches the SA lookup, replay check and ICV; nothing may panic).

#![no_main]

use std::net::SocketAddr;

use ipsec_crypto::{EncryptionAlgorithm, IntegrityAlgorithm, SecretBytes};
use ipsec_sa::child::{ChildSaPair, Encapsulation, EspSaKeys, Lifetime};
use ipsec_sa::dataplane::packet::PacketInfo;
use ipsec_sa::dataplane::{
    DataPlane, DataPlaneConfig, Outbound, Policy, PolicyAction, MAX_HEADROOM, MAX_TAILROOM,
};
use ipsec_sa::selector::TrafficSelector;
use libfuzzer_sys::fuzz_target;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

const A_INBOUND: u32 = 0xc000_0001;
const B_INBOUND: u32 = 0xd000_0001;

/// Deterministic keys of the right length that are not DES-weak.
fn keys(spi: u32, enc: EncryptionAlgorithm, integ: IntegrityAlgorithm, seed: u8) -> EspSaKeys {
    let bytes = |n: usize, salt: u8| {
        SecretBytes::new(
            (0..n)
                .map(|i| {
                    seed.wrapping_mul(31)
                        .wrapping_add(salt)
                        .wrapping_add((i as u8).wrapping_mul(37))
                })
                .collect(),
        )
    };
    EspSaKeys {
        spi,
        encryption: enc,
        encryption_key: bytes(enc.key_len(), 1),
        integrity: integ,
        integrity_key: bytes(integ.key_len(), 2),
    }
}

fn selector(addr: [u8; 4]) -> TrafficSelector {
    TrafficSelector::from_cidr(addr.into(), 24).unwrap()
}

fn gateway(
    local: SocketAddr,
    remote: SocketAddr,
    inbound: EspSaKeys,
    outbound: EspSaKeys,
    local_ts: TrafficSelector,
    remote_ts: TrafficSelector,
) -> DataPlane {
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
        inbound,
        outbound,
        local_ts,
        remote_ts,
        encapsulation: Encapsulation::UdpTunnel,
        hard_lifetime: Lifetime::default(),
    };
    plane.install(&pair).unwrap();
    plane
}

fuzz_target!(|data: &[u8]| {
    let [e, i, mode, rest @ ..] = data else {
        return;
    };
    let enc = EncryptionAlgorithm::ALL[usize::from(*e) % EncryptionAlgorithm::ALL.len()];
    let integ = IntegrityAlgorithm::ALL[usize::from(*i) % IntegrityAlgorithm::ALL.len()];
    let a_addr: SocketAddr = "192.0.2.1:4500".parse().unwrap();
    let b_addr: SocketAddr = "192.0.2.2:4500".parse().unwrap();
    let (net_a, net_b) = (selector([10, 1, 0, 0]), selector([10, 2, 0, 0]));

    let sender = || {
        gateway(
            a_addr,
            b_addr,
            keys(A_INBOUND, enc, integ, 1),
            keys(B_INBOUND, enc, integ, 2),
            net_a,
            net_b,
        )
    };
    let mut a = sender();
    let mut b = gateway(
        b_addr,
        a_addr,
        keys(B_INBOUND, enc, integ, 2),
        keys(A_INBOUND, enc, integ, 1),
        net_b,
        net_a,
    );
    let _ = PacketInfo::parse(rest);

    if mode % 2 == 1 {
        let mut packet = B_INBOUND.to_be_bytes().to_vec();
        packet.extend_from_slice(rest);
        let _ = b.decapsulate(&mut packet);
        return;
    }

    if mode % 4 == 2 {
        batch(&mut a, &mut sender(), &mut b, rest);
        return;
    }

    let mut buf = vec![0u8; MAX_HEADROOM + rest.len() + MAX_TAILROOM];
    let inner = MAX_HEADROOM..MAX_HEADROOM + rest.len();
    buf[inner.clone()].copy_from_slice(rest);
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let Ok(Outbound::Protected(transmit)) = a.encapsulate(&mut buf, inner, &mut rng) else {
        return;
    };
    let mut esp = buf[transmit.packet].to_vec();
    let delivered = b
        .decapsulate(&mut esp)
        .unwrap_or_else(|e| panic!("B dropped what A protected ({enc:?}/{integ:?}): {e}"));
    let delivered = &esp[delivered.inner];
    assert!(
        rest.starts_with(delivered),
        "delivered packet differs from the one sent"
    );
});

/// Mode 2: `data` as length-prefixed inner packets, sealed by `a` in one batch and by
/// `one_by_one` one at a time (same keys, same random numbers), opened by `b`.
fn batch(a: &mut DataPlane, one_by_one: &mut DataPlane, b: &mut DataPlane, mut data: &[u8]) {
    let mut inners: Vec<&[u8]> = Vec::new();
    while let [hi, lo, rest @ ..] = data {
        if inners.len() == 16 {
            break;
        }
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(rest.len());
        let (inner, tail) = rest.split_at(len);
        inners.push(inner);
        data = tail;
    }
    let framed = |inner: &[u8]| {
        let mut buf = vec![0u8; MAX_HEADROOM + inner.len() + MAX_TAILROOM];
        buf[MAX_HEADROOM..MAX_HEADROOM + inner.len()].copy_from_slice(inner);
        (buf, MAX_HEADROOM..MAX_HEADROOM + inner.len())
    };

    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let mut packets: Vec<_> = inners.iter().map(|i| framed(i)).collect();
    let mut results = Vec::new();
    a.encapsulate_batch(&mut packets, &mut rng, &mut results);
    assert_eq!(results.len(), inners.len());

    let mut rng = ChaCha20Rng::seed_from_u64(9);
    for (k, inner) in inners.iter().enumerate() {
        let (mut buf, range) = framed(inner);
        let single = one_by_one.encapsulate(&mut buf, range, &mut rng);
        assert_eq!(single, results[k], "packet {k}: batch and single results differ");
        let Ok(Outbound::Protected(t)) = single else {
            continue;
        };
        assert_eq!(
            buf[t.packet.clone()],
            packets[k].0[t.packet.clone()],
            "packet {k}: batch and single bytes differ"
        );
        let mut esp = buf[t.packet].to_vec();
        let delivered = b
            .decapsulate(&mut esp)
            .unwrap_or_else(|e| panic!("B dropped packet {k} of a batch: {e}"));
        assert!(inner.starts_with(&esp[delivered.inner]), "packet {k} differs");
    }
    assert_eq!(a.drop_counters(), one_by_one.drop_counters());
}
