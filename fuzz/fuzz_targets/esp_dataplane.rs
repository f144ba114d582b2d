//! ESP through the data plane of ipsec-sa: two gateways share one SA pair (keys fixed,
//! algorithms chosen by the input) for 10.1.0.0/24 <-> 10.2.0.0/24 over UDP 4500.
//!
//! Input: byte 0 picks the cipher, byte 1 the integrity algorithm, byte 2 the mode.
//! - even mode: the rest is an inner packet for gateway A. If A protects it, B must
//!   accept the ESP packet and deliver a prefix of the same bytes (trailing bytes
//!   beyond the IP total length are not part of the inner packet).
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

    let mut a = gateway(
        a_addr,
        b_addr,
        keys(A_INBOUND, enc, integ, 1),
        keys(B_INBOUND, enc, integ, 2),
        net_a,
        net_b,
    );
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
