//! Unit tests of the data plane as a whole: two gateways, round trips, every drop reason,
//! rekey, lifetimes, MTU. Fixture and allocation tests live in `ipsec-sa/tests/dataplane_*.rs`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use ipsec_crypto::{
    Cipher, EncryptionAlgorithm as Enc, Integrity, IntegrityAlgorithm as Integ, SecretBytes,
};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore};

use super::packet::tests::{ipv4, ipv6};
use super::replay::ReplayError;
use super::sa::{InboundSa, OutboundSa};
use super::*;
use crate::child::{EspSaKeys, Lifetime};

/// An RNG that repeats fixed bytes: lets a test choose the IV. Tests only.
struct FixedRng(Vec<u8>);

impl RngCore for FixedRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0; 4];
        self.fill_bytes(&mut b);
        u32::from_be_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        u64::from(self.next_u32())
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for (d, s) in dest.iter_mut().zip(self.0.iter().cycle()) {
            *d = *s;
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl CryptoRng for FixedRng {}

fn hx(s: &str) -> Vec<u8> {
    hex::decode(s.split_whitespace().collect::<String>()).unwrap()
}

/// Deterministic keys that are not DES-weak and whose 3DES thirds differ.
fn keys(spi: u32, enc: Enc, integ: Integ, seed: u8) -> EspSaKeys {
    let bytes = |n: usize, salt: u8| -> SecretBytes {
        SecretBytes::new(
            (0..n)
                .map(|i| {
                    seed.wrapping_mul(31)
                        .wrapping_add(salt)
                        .wrapping_add(u8::try_from(i).unwrap().wrapping_mul(37))
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

fn cidr(s: &str) -> TrafficSelector {
    let (a, l) = s.split_once('/').unwrap();
    TrafficSelector::from_cidr(a.parse().unwrap(), l.parse().unwrap()).unwrap()
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Our pair and the peer's mirror image: our outbound is their inbound and back.
fn pair_and_mirror(
    enc: Enc,
    integ: Integ,
    our_spi: u32,
    their_spi: u32,
    local_ts: TrafficSelector,
    remote_ts: TrafficSelector,
) -> (ChildSaPair, ChildSaPair) {
    let ours = ChildSaPair {
        local: sock("192.0.2.1:4500"),
        remote: sock("192.0.2.2:4500"),
        inbound: keys(our_spi, enc, integ, 1),
        outbound: keys(their_spi, enc, integ, 2),
        local_ts,
        remote_ts,
        encapsulation: Encapsulation::UdpTunnel,
        hard_lifetime: Lifetime::default(),
    };
    let theirs = ChildSaPair {
        local: ours.remote,
        remote: ours.local,
        inbound: ours.outbound.clone(),
        outbound: ours.inbound.clone(),
        local_ts: ours.remote_ts,
        remote_ts: ours.local_ts,
        encapsulation: Encapsulation::UdpTunnel,
        hard_lifetime: Lifetime::default(),
    };
    (ours, theirs)
}

fn protect(local: &str, remote: &str) -> Policy {
    Policy {
        local: cidr(local),
        remote: cidr(remote),
        action: PolicyAction::Protect,
        priority: 10,
    }
}

/// Two data planes joined by one AES-128/SHA1 pair for 10.1/24 <-> 10.2/24.
struct Gateways {
    a: DataPlane,
    b: DataPlane,
    a_pair: ChildSaPair,
    rng: ChaCha20Rng,
}

impl Gateways {
    fn new(enc: Enc, integ: Integ) -> Self {
        Self::with_config(enc, integ, DataPlaneConfig::default(), Lifetime::default())
    }

    fn with_config(enc: Enc, integ: Integ, config: DataPlaneConfig, life: Lifetime) -> Self {
        let (mut ours, mut theirs) = pair_and_mirror(
            enc,
            integ,
            0xc000_0001,
            0xd000_0001,
            cidr("10.1.0.0/24"),
            cidr("10.2.0.0/24"),
        );
        ours.hard_lifetime = life;
        theirs.hard_lifetime = life;
        let mut a = DataPlane::new(config);
        a.add_policy(protect("10.1.0.0/24", "10.2.0.0/24"));
        a.install(&ours).unwrap();
        let mut b = DataPlane::new(config);
        b.add_policy(protect("10.2.0.0/24", "10.1.0.0/24"));
        b.install(&theirs).unwrap();
        Self {
            a,
            b,
            a_pair: ours,
            rng: ChaCha20Rng::seed_from_u64(7),
        }
    }

    /// Encapsulates `inner` at A; returns the ESP packet bytes.
    fn send(&mut self, inner: &[u8]) -> Result<Vec<u8>, DropError> {
        let mut buf = vec![0u8; MAX_HEADROOM + inner.len() + MAX_TAILROOM];
        buf[MAX_HEADROOM..MAX_HEADROOM + inner.len()].copy_from_slice(inner);
        match self.a.encapsulate(
            &mut buf,
            MAX_HEADROOM..MAX_HEADROOM + inner.len(),
            &mut self.rng,
        )? {
            Outbound::Protected(t) => Ok(buf[t.packet].to_vec()),
            Outbound::Bypass { .. } => panic!("unexpected bypass"),
        }
    }

    /// Decapsulates at B; returns the inner packet.
    fn receive(&mut self, esp: &[u8]) -> Result<Vec<u8>, DropError> {
        let mut packet = esp.to_vec();
        let r = self.b.decapsulate(&mut packet)?;
        Ok(packet[r.inner].to_vec())
    }
}

fn ping(src: [u8; 4], dst: [u8; 4], len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| u8::try_from(i % 251).unwrap()).collect();
    ipv4(src, dst, 1, &payload)
}

#[test]
fn round_trip_every_cipher_and_integrity() {
    for enc in Enc::ALL {
        for integ in Integ::ALL {
            let mut g = Gateways::new(enc, integ);
            for len in [0, 1, 13, 14, 15, 16, 17, 100, 1400] {
                let inner = ping([10, 1, 0, 1], [10, 2, 0, 1], len);
                let esp = g.send(&inner).unwrap();
                let o = EspOverhead::new(enc, integ);
                assert_eq!(esp.len(), o.esp_len(inner.len()), "{enc:?}/{integ:?}");
                assert_eq!((esp.len() - o.headroom() - o.icv_len) % o.block_len, 0);
                assert_eq!(&esp[..4], &0xd000_0001u32.to_be_bytes());
                assert_eq!(
                    g.receive(&esp).unwrap(),
                    inner,
                    "{enc:?}/{integ:?} len {len}"
                );
            }
            let stats = g.b.pair_stats(0xd000_0001).unwrap();
            assert_eq!(stats.inbound.packets, 9);
        }
    }
}

#[test]
fn ipv6_inner_packets_round_trip_with_next_header_41() {
    let (ours, theirs) = pair_and_mirror(
        Enc::AesCbc256,
        Integ::HmacSha256_128,
        0x100,
        0x200,
        cidr("fd00:1::/64"),
        cidr("fd00:2::/64"),
    );
    let mut a = DataPlane::new(DataPlaneConfig::default());
    a.add_policy(protect("fd00:1::/64", "fd00:2::/64"));
    a.install(&ours).unwrap();
    let mut b = DataPlane::new(DataPlaneConfig::default());
    b.add_policy(protect("fd00:2::/64", "fd00:1::/64"));
    b.install(&theirs).unwrap();

    let src: Ipv6Addr = "fd00:1::5".parse().unwrap();
    let dst: Ipv6Addr = "fd00:2::9".parse().unwrap();
    let inner = ipv6(src, dst, 17, &[0x12, 0x34, 0, 53, 0, 12, 0, 0, 1, 2, 3, 4]);
    let mut buf = vec![0u8; 200];
    buf[40..40 + inner.len()].copy_from_slice(&inner);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let Outbound::Protected(t) = a
        .encapsulate(&mut buf, 40..40 + inner.len(), &mut rng)
        .unwrap()
    else {
        panic!("expected protection")
    };
    let mut esp = buf[t.packet].to_vec();

    // Peek at the trailer with the receiver's keys: next header must be 41.
    let mut copy = esp.clone();
    let mut sa = InboundSa::new(&theirs.inbound, 64).unwrap();
    assert_eq!(sa.open(&mut copy).unwrap().next_header, 41);

    let r = b.decapsulate(&mut esp).unwrap();
    assert_eq!(r.ip_version, 6);
    assert_eq!(&esp[r.inner], &inner[..]);
}

/// RFC 3602 section 4, case 5 (transport mode, next header 1 = ICMP).
#[test]
fn reproduces_rfc3602_case5_ciphertext() {
    let mut k = keys(0x4321, Enc::AesCbc128, Integ::HmacSha1_96, 0);
    k.encryption_key = SecretBytes::new(hx("90d382b4 10eeba7a d938c46c ec1a82bf"));
    let mut sa = OutboundSa::new(&k).unwrap();
    let payload = hx(
        "08000ebd a70a0000 8e9c083d b95b0700 08090a0b 0c0d0e0f 10111213 14151617
        18191a1b 1c1d1e1f 20212223 24252627 28292a2b 2c2d2e2f 30313233 34353637",
    );
    let mut buf = vec![0u8; 24 + payload.len() + 64];
    buf[24..24 + payload.len()].copy_from_slice(&payload);
    let mut iv = FixedRng(hx("e96e8c08 ab465763 fd098d45 dd3ff893"));
    let sealed = sa
        .seal(&mut buf, 24..24 + payload.len(), 1, &mut iv)
        .unwrap();
    let expected = hx("00004321 00000001 e96e8c08 ab465763 fd098d45 dd3ff893
        f663c25d 325c18c6 a9453e19 4e120849 a4870b66 cc6b9965 330013b4 898dc856
        a4699e52 3a55db08 0b59ec3a 8e4b7e52 775b07d1 db34ed9c 538ab50c 551b874a
        a269add0 47ad2d59 13ac19b7 cfbad4a6");
    let packet = &buf[sealed.packet];
    // RFC 3602's cases have no integrity; ours appends a 12-byte ICV after the same bytes.
    assert_eq!(packet.len(), expected.len() + 12);
    assert_eq!(&packet[..expected.len()], &expected[..]);
}

/// RFC 3602 section 4, case 7 (tunnel mode, sequence number 2).
#[test]
fn reproduces_rfc3602_case7_ciphertext() {
    let mut k = keys(0x8765, Enc::AesCbc128, Integ::HmacSha1_96, 0);
    k.encryption_key = SecretBytes::new(hx("01234567 89abcdef 01234567 89abcdef"));
    let mut sa = OutboundSa::new(&k).unwrap();
    let inner = hx(
        "45000054 09040000 4001f988 c0a87b03 c0a87bc8 08009f76 a90a0100 b49c083d
        02a20400 08090a0b 0c0d0e0f 10111213 14151617 18191a1b 1c1d1e1f 20212223
        24252627 28292a2b 2c2d2e2f 30313233 34353637",
    );
    let mut iv = FixedRng(hx("f4e76524 4f6407ad f13dc138 0f673f37"));
    let mut buf = vec![0u8; 24 + inner.len() + 64];
    // Sequence number 1 goes to a throwaway packet.
    buf[24..24 + inner.len()].copy_from_slice(&inner);
    sa.seal(&mut buf, 24..24 + inner.len(), 4, &mut iv).unwrap();
    buf[24..24 + inner.len()].copy_from_slice(&inner);
    let sealed = sa.seal(&mut buf, 24..24 + inner.len(), 4, &mut iv).unwrap();
    assert_eq!(sealed.sequence, 2);
    let expected = hx("00008765 00000002 f4e76524 4f6407ad f13dc138 0f673f37
        773b5241 a4c44922 5e4f3ce5 ed611b0c 237ca96c f74a9301 3c1b0ea1 a0cf70f8
        e4ecaec7 8ac53aad 7a0f022b 859243c6 47752e94 a859352b 8a4d4d2d ecd136e5
        c177f132 ad3fbfb2 201ac990 4c74ee0a 109e0ca1 e4dfe9d5 a100b842 f1c22f0d");
    assert_eq!(&buf[sealed.packet][..expected.len()], &expected[..]);
}

/// RFC 3602 section 4, case 6 (transport mode, ICMP, sequence number 8: the padding is
/// only two bytes).
#[test]
fn reproduces_rfc3602_case6_ciphertext() {
    let mut k = keys(0x4321, Enc::AesCbc128, Integ::HmacSha1_96, 0);
    k.encryption_key = SecretBytes::new(hx("90d382b4 10eeba7a d938c46c ec1a82bf"));
    let mut sa = OutboundSa::new(&k).unwrap();
    let payload = hx("0800b5e8 a80a0500 a69c083d 0b660e00 77777777 77777777 77777777");
    let mut buf = vec![0u8; 24 + payload.len() + 64];
    let mut iv = FixedRng(hx("69d08df7 d203329d b093fc49 24e5bd80"));
    // Sequence numbers 1 to 7 go to throwaway packets.
    for _ in 1..8 {
        buf[24..24 + payload.len()].copy_from_slice(&payload);
        sa.seal(&mut buf, 24..24 + payload.len(), 1, &mut iv)
            .unwrap();
    }
    buf[24..24 + payload.len()].copy_from_slice(&payload);
    let sealed = sa
        .seal(&mut buf, 24..24 + payload.len(), 1, &mut iv)
        .unwrap();
    assert_eq!(sealed.sequence, 8);
    let expected = hx("00004321 00000008 69d08df7 d203329d b093fc49 24e5bd80
        f5199588 1ec4e0c4 488987ce 742e8109 689bb379 d2d750c0 d915dca3 46a89f75");
    let packet = &buf[sealed.packet];
    assert_eq!(packet.len(), expected.len() + 12);
    assert_eq!(&packet[..expected.len()], &expected[..]);
}

/// RFC 3602 section 4, case 8 (tunnel mode, sequence number 5, 68-byte inner packet).
#[test]
fn reproduces_rfc3602_case8_ciphertext() {
    let mut k = keys(0x8765, Enc::AesCbc128, Integ::HmacSha1_96, 0);
    k.encryption_key = SecretBytes::new(hx("01234567 89abcdef 01234567 89abcdef"));
    let mut sa = OutboundSa::new(&k).unwrap();
    let inner = hx(
        "45000044 090c0000 4001f990 c0a87b03 c0a87bc8 0800d63c aa0a0200 c69c083d
        a3de0300 ffffffff ffffffff ffffffff ffffffff ffffffff ffffffff ffffffff
        ffffffff",
    );
    let mut iv = FixedRng(hx("85d47224 b5f3dd5d 2101d4ea 8dffab22"));
    let mut buf = vec![0u8; 24 + inner.len() + 64];
    // Sequence numbers 1 to 4 go to throwaway packets.
    for _ in 1..5 {
        buf[24..24 + inner.len()].copy_from_slice(&inner);
        sa.seal(&mut buf, 24..24 + inner.len(), 4, &mut iv).unwrap();
    }
    buf[24..24 + inner.len()].copy_from_slice(&inner);
    let sealed = sa.seal(&mut buf, 24..24 + inner.len(), 4, &mut iv).unwrap();
    assert_eq!(sealed.sequence, 5);
    let expected = hx("00008765 00000005 85d47224 b5f3dd5d 2101d4ea 8dffab22
        15b92683 819596a8 047232cc 00f7048f e45318e1 1f8a0f62 ede3c3fc 61203bb5
        0f980a08 c9843fd3 a1b06d5c 07ff9639 b7eb7dfb 3512e5de 435e7207 ed971ef3
        d2726d9b 5ef6affc 6d17a0de cbb13892");
    let packet = &buf[sealed.packet];
    assert_eq!(packet.len(), expected.len() + 12);
    assert_eq!(&packet[..expected.len()], &expected[..]);
}

/// Builds an ESP packet by hand with the given plaintext (payload and trailer already in
/// it), so that tests can produce packets with a valid ICV but wrong contents.
fn craft(k: &EspSaKeys, sequence: u32, plaintext: &[u8]) -> Vec<u8> {
    let cipher = Cipher::new(k.encryption, k.encryption_key.expose()).unwrap();
    let integrity = Integrity::new(k.integrity, k.integrity_key.expose()).unwrap();
    let iv = vec![0x5a; k.encryption.block_len()];
    let mut ct = plaintext.to_vec();
    cipher.encrypt_cbc(&iv, &mut ct).unwrap();
    let mut p = Vec::new();
    p.extend_from_slice(&k.spi.to_be_bytes());
    p.extend_from_slice(&sequence.to_be_bytes());
    p.extend_from_slice(&iv);
    p.extend_from_slice(&ct);
    let mut icv = vec![0; integrity.icv_len()];
    integrity.compute(&[&p], &mut icv).unwrap();
    p.extend_from_slice(&icv);
    p
}

/// `inner` plus default padding to 16 bytes, pad length and `next_header`.
fn with_trailer(inner: &[u8], next_header: u8) -> Vec<u8> {
    let pad = (16 - (inner.len() + 2) % 16) % 16;
    let mut p = inner.to_vec();
    p.extend((1..=u8::try_from(pad).unwrap()).collect::<Vec<_>>());
    p.push(u8::try_from(pad).unwrap());
    p.push(next_header);
    p
}

#[test]
fn rejects_replayed_packet() {
    let mut g = Gateways::new(Enc::AesCbc128, Integ::HmacSha1_96);
    let esp = g.send(&ping([10, 1, 0, 1], [10, 2, 0, 1], 20)).unwrap();
    g.receive(&esp).unwrap();
    let err = g.receive(&esp).unwrap_err();
    assert_eq!(
        err,
        DropError::Replay {
            spi: 0xd000_0001,
            cause: ReplayError::Duplicate { sequence: 1 }
        }
    );
    assert_eq!(g.b.drop_counters().get(DropReason::Replay), 1);
    assert_eq!(
        g.b.pair_stats(0xd000_0001)
            .unwrap()
            .drops
            .get(DropReason::Replay),
        1
    );
}

#[test]
fn rejects_bad_icv_without_moving_the_window() {
    let mut g = Gateways::new(Enc::AesCbc128, Integ::HmacSha1_96);
    let mut esp = g.send(&ping([10, 1, 0, 1], [10, 2, 0, 1], 20)).unwrap();
    let good = esp.clone();
    esp[30] ^= 1;
    assert_eq!(
        g.receive(&esp).unwrap_err(),
        DropError::BadIcv {
            spi: 0xd000_0001,
            sequence: 1
        }
    );
    // A forged sequence number far ahead must not slide the window either.
    let mut forged = good.clone();
    forged[4..8].copy_from_slice(&1000u32.to_be_bytes());
    assert_eq!(g.receive(&forged).unwrap_err().reason(), DropReason::BadIcv);
    assert_eq!(
        g.b.pair_stats(0xd000_0001)
            .unwrap()
            .highest_inbound_sequence,
        0
    );
    // The genuine packet still gets through.
    g.receive(&good).unwrap();
    assert_eq!(g.b.drop_counters().get(DropReason::BadIcv), 2);
}

#[test]
fn rejects_bad_padding_after_valid_icv() {
    let mut g = Gateways::new(Enc::AesCbc128, Integ::HmacSha1_96);
    let inner = ping([10, 1, 0, 1], [10, 2, 0, 1], 20);
    let mut pt = with_trailer(&inner, 4);
    let pad_at = inner.len();
    pt[pad_at + 1] = 7; // padding must read 1, 2, 3, ...
    let esp = craft(&g.a_pair.outbound, 1, &pt);
    assert_eq!(
        g.receive(&esp).unwrap_err(),
        DropError::BadPadding {
            spi: 0xd000_0001,
            sequence: 1
        }
    );
    // Pad length pointing before the start of the payload.
    let mut pt = with_trailer(&inner, 4);
    let n = pt.len();
    pt[n - 2] = 255;
    let esp = craft(&g.a_pair.outbound, 2, &pt);
    assert_eq!(
        g.receive(&esp).unwrap_err().reason(),
        DropReason::BadPadding
    );
    assert_eq!(g.b.drop_counters().get(DropReason::BadPadding), 2);
}

#[test]
fn rejects_wrong_next_header_and_drops_dummy_packets() {
    let mut g = Gateways::new(Enc::AesCbc128, Integ::HmacSha1_96);
    let inner = ping([10, 1, 0, 1], [10, 2, 0, 1], 20);
    let esp = craft(&g.a_pair.outbound, 1, &with_trailer(&inner, 17));
    assert_eq!(
        g.receive(&esp).unwrap_err(),
        DropError::BadNextHeader {
            spi: 0xd000_0001,
            next_header: 17
        }
    );
    // An IPv4 packet labelled as IPv6.
    let esp = craft(&g.a_pair.outbound, 2, &with_trailer(&inner, 41));
    assert_eq!(
        g.receive(&esp).unwrap_err().reason(),
        DropReason::BadNextHeader
    );
    let esp = craft(&g.a_pair.outbound, 3, &with_trailer(&[0u8; 30], 59));
    assert_eq!(
        g.receive(&esp).unwrap_err(),
        DropError::DummyPacket { spi: 0xd000_0001 }
    );
    assert_eq!(g.b.drop_counters().get(DropReason::BadNextHeader), 2);
    assert_eq!(g.b.drop_counters().get(DropReason::DummyPacket), 1);
}

#[test]
fn rejects_inner_packet_outside_selectors() {
    let mut g = Gateways::new(Enc::AesCbc128, Integ::HmacSha1_96);
    // Source outside the peer's side (remote_ts for B is 10.1.0.0/24).
    let spoofed = ping([10, 9, 0, 1], [10, 2, 0, 1], 20);
    let esp = craft(&g.a_pair.outbound, 1, &with_trailer(&spoofed, 4));
    assert_eq!(
        g.receive(&esp).unwrap_err(),
        DropError::SelectorMismatch {
            spi: 0xd000_0001,
            src: IpAddr::from([10, 9, 0, 1]),
            dst: IpAddr::from([10, 2, 0, 1]),
        }
    );
    // Destination outside our side.
    let stray = ping([10, 1, 0, 1], [10, 3, 0, 1], 20);
    let esp = craft(&g.a_pair.outbound, 2, &with_trailer(&stray, 4));
    assert_eq!(
        g.receive(&esp).unwrap_err().reason(),
        DropReason::SelectorMismatch
    );
    assert_eq!(g.b.drop_counters().get(DropReason::SelectorMismatch), 2);
    assert_eq!(g.b.pair_stats(0xd000_0001).unwrap().inbound.packets, 0);
}

#[test]
fn rejects_malformed_esp_and_inner_packets() {
    let mut g = Gateways::new(Enc::AesCbc128, Integ::HmacSha1_96);
    assert_eq!(
        g.receive(&[1, 2, 3]).unwrap_err(),
        DropError::MalformedEsp {
            spi: 0,
            len: 3,
            what: "shorter than ESP header"
        }
    );
    let esp = g.send(&ping([10, 1, 0, 1], [10, 2, 0, 1], 20)).unwrap();
    // Cut one byte: the encrypted part is no longer whole blocks.
    assert_eq!(
        g.receive(&esp[..esp.len() - 1]).unwrap_err().reason(),
        DropReason::Malformed
    );
    // Header and IV only.
    assert_eq!(
        g.receive(&esp[..30]).unwrap_err().reason(),
        DropReason::Malformed
    );
    // Valid ESP around garbage that is not an IP packet.
    let esp = craft(&g.a_pair.outbound, 5, &with_trailer(&[0x45, 0, 0], 4));
    assert!(matches!(
        g.receive(&esp).unwrap_err(),
        DropError::MalformedInner {
            spi: 0xd000_0001,
            ..
        }
    ));
    assert_eq!(g.b.drop_counters().get(DropReason::Malformed), 4);

    // Outbound: the caller's bytes are not IP.
    let mut buf = vec![0u8; 100];
    let err = g.a.encapsulate(&mut buf, 30..40, &mut g.rng).unwrap_err();
    assert_eq!(err.reason(), DropReason::Malformed);
}

#[test]
fn rejects_unknown_spi_and_policy_without_sa() {
    let mut g = Gateways::new(Enc::AesCbc128, Integ::HmacSha1_96);
    let mut esp = g.send(&ping([10, 1, 0, 1], [10, 2, 0, 1], 20)).unwrap();
    esp[0] ^= 0xff;
    assert_eq!(
        g.receive(&esp).unwrap_err(),
        DropError::NoInboundSa { spi: 0x2f00_0001 }
    );

    let mut dp = DataPlane::new(DataPlaneConfig::default());
    let id = dp.add_policy(protect("10.1.0.0/24", "10.2.0.0/24"));
    let inner = ping([10, 1, 0, 1], [10, 2, 0, 1], 20);
    let mut buf = vec![0u8; 200];
    buf[24..24 + inner.len()].copy_from_slice(&inner);
    assert_eq!(
        dp.encapsulate(&mut buf, 24..24 + inner.len(), &mut g.rng),
        Err(DropError::NoOutboundSa { policy: id })
    );
    assert_eq!(dp.drop_counters().get(DropReason::NoSa), 1);
    assert_eq!(g.b.drop_counters().get(DropReason::NoSa), 1);
}

#[test]
fn rejects_packets_without_policy_and_discards_by_policy() {
    let mut g = Gateways::new(Enc::AesCbc128, Integ::HmacSha1_96);
    let err = g.send(&ping([10, 1, 0, 1], [10, 7, 0, 1], 20)).unwrap_err();
    assert_eq!(
        err,
        DropError::NoPolicy {
            src: IpAddr::from([10, 1, 0, 1]),
            dst: IpAddr::from([10, 7, 0, 1])
        }
    );
    let deny = g.a.add_policy(Policy {
        local: cidr("10.1.0.0/24"),
        remote: cidr("10.2.0.66/32"),
        action: PolicyAction::Discard,
        priority: 1,
    });
    let err = g
        .send(&ping([10, 1, 0, 1], [10, 2, 0, 66], 20))
        .unwrap_err();
    assert_eq!(err, DropError::Discarded { policy: deny });
    assert_eq!(g.a.drop_counters().get(DropReason::NoPolicy), 1);
    assert_eq!(g.a.drop_counters().get(DropReason::PolicyDiscard), 1);
}

#[test]
fn bypass_policy_passes_clear_text_and_protect_policy_refuses_it() {
    let mut g = Gateways::new(Enc::AesCbc128, Integ::HmacSha1_96);
    let bypass = g.a.add_policy(Policy {
        local: cidr("10.1.0.0/24"),
        remote: cidr("10.2.0.53/32").with_protocol(17),
        action: PolicyAction::Bypass,
        priority: 1,
    });
    let dns = ipv4(
        [10, 1, 0, 1],
        [10, 2, 0, 53],
        17,
        &[0, 1, 0, 53, 0, 8, 0, 0],
    );
    let mut buf = vec![0u8; 200];
    buf[24..24 + dns.len()].copy_from_slice(&dns);
    assert_eq!(
        g.a.encapsulate(&mut buf, 24..24 + dns.len(), &mut g.rng),
        Ok(Outbound::Bypass { policy: bypass })
    );
    // The reply may arrive in clear; anything else from 10.2/24 must come through ESP.
    let reply = ipv4(
        [10, 2, 0, 53],
        [10, 1, 0, 1],
        17,
        &[0, 53, 0, 1, 0, 8, 0, 0],
    );
    assert_eq!(g.a.check_inbound_cleartext(&reply), Ok(bypass));
    let ping_in = ping([10, 2, 0, 1], [10, 1, 0, 1], 8);
    assert!(matches!(
        g.a.check_inbound_cleartext(&ping_in),
        Err(DropError::CleartextNotAllowed { .. })
    ));
    assert_eq!(g.a.drop_counters().get(DropReason::CleartextNotAllowed), 1);
}

#[test]
fn refuses_to_wrap_the_sequence_number() {
    let mut g = Gateways::new(Enc::AesCbc128, Integ::HmacSha1_96);
    g.a.out
        .pairs
        .get_mut(&0xc000_0001)
        .unwrap()
        .sa
        .set_last_sequence(u32::MAX - 1);
    let inner = ping([10, 1, 0, 1], [10, 2, 0, 1], 20);
    let esp = g.send(&inner).unwrap();
    assert_eq!(&esp[4..8], &u32::MAX.to_be_bytes());
    // Crossing the soft limit asked for a rekey.
    assert!(matches!(
        g.a.poll_event(),
        Some(Event::SoftLifetime {
            limit: LimitKind::SequenceNumbers,
            ..
        })
    ));
    assert_eq!(
        g.send(&inner).unwrap_err(),
        DropError::SequenceExhausted { spi: 0xd000_0001 }
    );
    assert_eq!(
        g.a.poll_event(),
        Some(Event::HardLifetime {
            policy: PolicyId(0),
            inbound_spi: 0xc000_0001,
            outbound_spi: 0xd000_0001,
            limit: LimitKind::SequenceNumbers,
        })
    );
    assert_eq!(g.a.poll_event(), None);
    assert_eq!(g.a.drop_counters().get(DropReason::SequenceExhausted), 1);
}

#[test]
fn kilobyte_lifetime_signals_soft_then_refuses_at_hard() {
    let life = Lifetime {
        seconds: None,
        kilobytes: Some(2),
    };
    let config = DataPlaneConfig {
        soft_lifetime_percent: 50,
        ..DataPlaneConfig::default()
    };
    let mut g = Gateways::with_config(Enc::AesCbc128, Integ::HmacSha1_96, config, life);
    let inner = ping([10, 1, 0, 1], [10, 2, 0, 1], 580); // 600 bytes
    g.send(&inner).unwrap();
    assert_eq!(g.a.poll_event(), None);
    g.send(&inner).unwrap(); // 1200 >= 1024: soft
    assert!(matches!(
        g.a.poll_event(),
        Some(Event::SoftLifetime {
            limit: LimitKind::Kilobytes,
            ..
        })
    ));
    g.send(&inner).unwrap(); // 1800 <= 2048
    assert_eq!(
        g.send(&inner).unwrap_err(),
        DropError::LifetimeExpired {
            spi: 0xd000_0001,
            kilobytes: 2
        }
    );
    assert!(matches!(
        g.a.poll_event(),
        Some(Event::HardLifetime {
            limit: LimitKind::Kilobytes,
            ..
        })
    ));
    assert_eq!(g.a.drop_counters().get(DropReason::LifetimeExpired), 1);
    let stats = g.a.pair_stats(0xc000_0001).unwrap();
    assert_eq!((stats.outbound.packets, stats.outbound.bytes), (3, 1800));
    assert!(stats.soft_expired && stats.hard_expired);
}

#[test]
fn rekey_moves_outbound_to_new_sa_while_old_inbound_still_accepts() {
    let mut g = Gateways::new(Enc::AesCbc128, Integ::HmacSha1_96);
    let inner = ping([10, 1, 0, 1], [10, 2, 0, 1], 20);
    // B sends a packet on the old SA that is still in flight during the rekey.
    let mut in_flight = {
        let reply = ping([10, 2, 0, 1], [10, 1, 0, 1], 20);
        let mut buf = vec![0u8; 200];
        buf[24..24 + reply.len()].copy_from_slice(&reply);
        let Outbound::Protected(t) =
            g.b.encapsulate(&mut buf, 24..24 + reply.len(), &mut g.rng)
                .unwrap()
        else {
            panic!()
        };
        buf[t.packet].to_vec()
    };

    let (new_ours, new_theirs) = pair_and_mirror(
        Enc::AesCbc256,
        Integ::HmacSha256_128,
        0xc000_0002,
        0xd000_0002,
        cidr("10.1.0.0/24"),
        cidr("10.2.0.0/24"),
    );
    g.a.install(&new_ours).unwrap();
    g.b.install(&new_theirs).unwrap();

    let esp = g.send(&inner).unwrap();
    assert_eq!(
        &esp[..4],
        &0xd000_0002u32.to_be_bytes(),
        "new SA takes over"
    );
    assert_eq!(g.receive(&esp).unwrap(), inner);
    // The old inbound SA still accepts what was sent on it.
    let r = g.a.decapsulate(&mut in_flight).unwrap();
    assert_eq!(r.spi, 0xc000_0001);
    // Once removed, it does not.
    assert!(g.a.remove_pair(0xc000_0001));
    assert!(!g.a.remove_pair(0xc000_0001));
    assert_eq!(g.a.pairs().count(), 1);
    let mut again = in_flight.clone();
    assert_eq!(
        g.a.decapsulate(&mut again).unwrap_err().reason(),
        DropReason::NoSa
    );
}

#[test]
fn install_refuses_duplicates_and_uncovered_selectors() {
    let mut g = Gateways::new(Enc::AesCbc128, Integ::HmacSha1_96);
    assert_eq!(
        g.a.install(&g.a_pair.clone()),
        Err(InstallError::DuplicateSpi(0xc000_0001))
    );
    let (wide, _) = pair_and_mirror(
        Enc::AesCbc128,
        Integ::HmacSha1_96,
        5,
        6,
        cidr("10.0.0.0/8"),
        cidr("10.2.0.0/24"),
    );
    assert!(matches!(
        g.a.install(&wide),
        Err(InstallError::NoPolicy { .. })
    ));
    assert_eq!(
        g.a.install_on(PolicyId(99), &wide),
        Err(InstallError::UnknownPolicy(PolicyId(99)))
    );
    assert_eq!(
        g.a.install_on(PolicyId(0), &wide),
        Err(InstallError::PolicyMismatch(PolicyId(0)))
    );
    let (mut weak, _) = pair_and_mirror(
        Enc::DesCbc,
        Integ::HmacSha1_96,
        7,
        8,
        cidr("10.1.0.0/24"),
        cidr("10.2.0.0/24"),
    );
    weak.inbound.encryption_key = SecretBytes::new(vec![0; 8]);
    assert!(matches!(g.a.install(&weak), Err(InstallError::Key(_))));
}

#[test]
fn too_big_packet_reports_inner_mtu_when_df_set() {
    let config = DataPlaneConfig {
        default_path_mtu: Some(1500),
        ..DataPlaneConfig::default()
    };
    let mut g = Gateways::with_config(
        Enc::AesCbc128,
        Integ::HmacSha1_96,
        config,
        Lifetime::default(),
    );
    // 1500 - 20 (IPv4) - 8 (UDP) = 1472 for ESP; - 24 - 12 = 1436; 89 blocks = 1424; - 2.
    let o = EspOverhead::new(Enc::AesCbc128, Integ::HmacSha1_96);
    assert_eq!(
        inner_mtu(o, sock("192.0.2.2:4500"), Encapsulation::UdpTunnel, 1500),
        Some(1422)
    );
    let fits = ping([10, 1, 0, 1], [10, 2, 0, 1], 1422 - 20);
    assert_eq!(g.send(&fits).unwrap().len(), 1460);
    let too_big = ping([10, 1, 0, 1], [10, 2, 0, 1], 1423 - 20);
    assert_eq!(
        g.send(&too_big).unwrap_err(),
        DropError::PacketTooBig {
            spi: 0xd000_0001,
            inner_len: 1423,
            inner_mtu: 1422,
            path_mtu: 1500
        }
    );
    // Without DF the outer packet may be fragmented: it goes out.
    let mut no_df = too_big.clone();
    no_df[6] = 0;
    assert_eq!(g.send(&no_df).unwrap().len(), 1476);
    // Turning the check off lets DF packets through too.
    assert!(g.a.set_path_mtu(0xc000_0001, None));
    g.send(&too_big).unwrap();
    assert_eq!(g.a.drop_counters().get(DropReason::PacketTooBig), 1);
}

#[test]
fn rejects_buffer_without_head_or_tailroom() {
    let mut g = Gateways::new(Enc::AesCbc128, Integ::HmacSha1_96);
    let inner = ping([10, 1, 0, 1], [10, 2, 0, 1], 20);
    let mut buf = inner.clone();
    buf.extend_from_slice(&[0; 64]);
    let err =
        g.a.encapsulate(&mut buf, 0..inner.len(), &mut g.rng)
            .unwrap_err();
    assert_eq!(err.reason(), DropReason::BufferTooSmall);
    let mut buf = vec![0u8; 24];
    buf.extend_from_slice(&inner);
    let err =
        g.a.encapsulate(&mut buf, 24..24 + inner.len(), &mut g.rng)
            .unwrap_err();
    assert_eq!(err.reason(), DropReason::BufferTooSmall);
    // The inner packet is untouched by the refusal.
    assert_eq!(&buf[24..], &inner[..]);
    assert_eq!(g.a.drop_counters().get(DropReason::BufferTooSmall), 2);
}

#[test]
fn set_remote_redirects_the_pair() {
    let mut g = Gateways::new(Enc::AesCbc128, Integ::HmacSha1_96);
    assert!(g.a.set_remote(0xc000_0001, sock("198.51.100.7:61000")));
    let inner = ping([10, 1, 0, 1], [10, 2, 0, 1], 20);
    let mut buf = vec![0u8; 200];
    buf[24..24 + inner.len()].copy_from_slice(&inner);
    let Outbound::Protected(t) =
        g.a.encapsulate(&mut buf, 24..24 + inner.len(), &mut g.rng)
            .unwrap()
    else {
        panic!()
    };
    assert_eq!(t.remote, sock("198.51.100.7:61000"));
    assert_eq!(t.local, sock("192.0.2.1:4500"));
    assert_eq!(t.encapsulation, Encapsulation::UdpTunnel);
    assert!(!g.a.set_remote(0x1234, sock("198.51.100.7:61000")));
}

#[test]
fn inbound_kilobyte_lifetime_refuses_after_hard_limit() {
    let life = Lifetime {
        seconds: None,
        kilobytes: Some(1),
    };
    let mut g = Gateways::with_config(
        Enc::AesCbc128,
        Integ::HmacSha1_96,
        DataPlaneConfig::default(),
        life,
    );
    // Crafted packets keep A's own outbound limit out of the picture.
    let inner = ping([10, 1, 0, 1], [10, 2, 0, 1], 580);
    let first = craft(&g.a_pair.outbound, 1, &with_trailer(&inner, 4));
    let second = craft(&g.a_pair.outbound, 2, &with_trailer(&inner, 4));
    g.receive(&first).unwrap();
    assert_eq!(
        g.receive(&second).unwrap_err(),
        DropError::LifetimeExpired {
            spi: 0xd000_0001,
            kilobytes: 1
        }
    );
    assert!(matches!(
        g.b.poll_event(),
        Some(Event::HardLifetime {
            limit: LimitKind::Kilobytes,
            inbound_spi: 0xd000_0001,
            ..
        })
    ));
    let stats = g.b.pair_stats(0xd000_0001).unwrap();
    assert_eq!((stats.inbound.packets, stats.inbound.bytes), (1, 600));
    assert!(stats.hard_expired);
}

#[test]
fn data_plane_can_move_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<DataPlane>();
}

#[test]
fn add_policies_indexes_a_batch() {
    let mut dp = DataPlane::new(DataPlaneConfig::default());
    let ids =
        dp.add_policies((0..3u8).map(|i| protect("10.1.0.0/24", &format!("10.{}.0.0/16", i + 2))));
    assert_eq!(ids, vec![PolicyId(0), PolicyId(1), PolicyId(2)]);
    let inner = ping([10, 1, 0, 1], [10, 4, 9, 9], 8);
    let mut buf = vec![0u8; 200];
    buf[24..24 + inner.len()].copy_from_slice(&inner);
    let mut rng = ChaCha20Rng::seed_from_u64(0);
    assert_eq!(
        dp.encapsulate(&mut buf, 24..24 + inner.len(), &mut rng),
        Err(DropError::NoOutboundSa {
            policy: PolicyId(2)
        })
    );
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn algs() -> impl Strategy<Value = (Enc, Integ)> {
        (
            prop::sample::select(Enc::ALL.to_vec()),
            prop::sample::select(Integ::ALL.to_vec()),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any IPv4 payload length, any algorithm pair: what goes in comes out.
        #[test]
        fn round_trips(
            (enc, integ) in algs(),
            body in proptest::collection::vec(any::<u8>(), 0..1500),
            host in 1u8..255,
        ) {
            let mut g = Gateways::new(enc, integ);
            let inner = ipv4([10, 1, 0, host], [10, 2, 0, 1], 17, &body);
            let esp = g.send(&inner).unwrap();
            prop_assert_eq!(esp.len(), EspOverhead::new(enc, integ).esp_len(inner.len()));
            prop_assert_eq!(g.receive(&esp).unwrap(), inner);
        }

        /// Arbitrary bytes behind a known SPI never panic and are never delivered.
        #[test]
        fn garbage_is_dropped_not_delivered(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut g = Gateways::new(Enc::AesCbc128, Integ::HmacSha1_96);
            let mut packet = 0xd000_0001u32.to_be_bytes().to_vec();
            packet.extend_from_slice(&tail);
            prop_assert!(g.receive(&packet).is_err());
            prop_assert_eq!(g.b.drop_counters().total(), 1);
        }

        /// Flipping any single bit of a valid packet makes it undeliverable.
        #[test]
        fn any_bit_flip_is_detected(bit in 0usize..(8 * 100)) {
            let mut g = Gateways::new(Enc::AesCbc128, Integ::HmacSha1_96);
            let inner = ping([10, 1, 0, 1], [10, 2, 0, 1], 44);
            let mut esp = g.send(&inner).unwrap();
            let bit = bit % (8 * esp.len());
            esp[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(g.receive(&esp).is_err());
        }
    }
}

#[test]
fn overhead_per_algorithm() {
    let max_total = |e, i| {
        let o = EspOverhead::new(e, i);
        o.headroom() + o.max_tailroom()
    };
    for i in [Integ::HmacMd5_96, Integ::HmacSha1_96] {
        assert_eq!(max_total(Enc::DesCbc, i), 37);
        assert_eq!(max_total(Enc::TripleDesCbc, i), 37);
        assert_eq!(max_total(Enc::AesCbc128, i), 53);
    }
    assert_eq!(max_total(Enc::AesCbc256, Integ::HmacSha256_128), 57);
    assert_eq!(max_total(Enc::AesCbc192, Integ::HmacSha384_192), 65);
    assert_eq!(max_total(Enc::AesCbc128, Integ::HmacSha512_256), 73);
    // The buffer constants cover the worst case.
    for e in Enc::ALL {
        for i in Integ::ALL {
            let o = EspOverhead::new(e, i);
            assert!(o.headroom() <= MAX_HEADROOM && o.max_tailroom() <= MAX_TAILROOM);
        }
    }
    // ESP in UDP over IPv6 with a 1280-byte path MTU (the IPv6 minimum), AES/SHA1:
    // 1280 - 40 - 8 = 1232; - 24 - 12 = 1196; 74 blocks = 1184; - 2 = 1182.
    let o = EspOverhead::new(Enc::AesCbc128, Integ::HmacSha1_96);
    assert_eq!(
        inner_mtu(
            o,
            sock("[2001:db8::1]:4500"),
            Encapsulation::UdpTunnel,
            1280
        ),
        Some(1182)
    );
    assert_eq!(
        inner_mtu(o, sock("192.0.2.1:4500"), Encapsulation::Tunnel, 1500),
        Some(1438)
    );
    assert_eq!(
        inner_mtu(o, sock("192.0.2.1:4500"), Encapsulation::Tunnel, 40),
        None
    );
}

#[test]
fn remove_policy_takes_its_pairs_along() {
    let mut g = Gateways::new(Enc::AesCbc128, Integ::HmacSha1_96);
    assert_eq!(g.a.pairs().count(), 1);
    let removed = g.a.remove_policy(PolicyId(0)).unwrap();
    assert_eq!(removed.action, PolicyAction::Protect);
    assert_eq!(g.a.pairs().count(), 0);
    assert!(g.a.pair_stats(0xc000_0001).is_none());
    assert!(g.a.remove_policy(PolicyId(0)).is_none());
}

#[test]
fn rejects_replay_window_size_out_of_bounds_at_install() {
    let config = DataPlaneConfig {
        replay_window: 16,
        ..DataPlaneConfig::default()
    };
    let (ours, _) = pair_and_mirror(
        Enc::AesCbc128,
        Integ::HmacSha1_96,
        1,
        2,
        cidr("10.1.0.0/24"),
        cidr("10.2.0.0/24"),
    );
    let mut dp = DataPlane::new(config);
    dp.add_policy(protect("10.1.0.0/24", "10.2.0.0/24"));
    assert_eq!(
        dp.install(&ours),
        Err(InstallError::Key(SaKeyError::WindowSize(
            replay::WindowSizeError(16)
        )))
    );
}

#[test]
fn large_replay_window_accepts_late_packets() {
    let config = DataPlaneConfig {
        replay_window: 4096,
        ..DataPlaneConfig::default()
    };
    let mut g = Gateways::with_config(
        Enc::AesCbc128,
        Integ::HmacSha1_96,
        config,
        Lifetime::default(),
    );
    let inner = ping([10, 1, 0, 1], [10, 2, 0, 1], 8);
    let first = g.send(&inner).unwrap();
    let mut last = Vec::new();
    for _ in 0..4095 {
        last = g.send(&inner).unwrap();
    }
    g.receive(&last).unwrap(); // sequence 4096
    g.receive(&first).unwrap(); // sequence 1: 4095 behind, still inside
    assert_eq!(g.b.pair_stats(0xd000_0001).unwrap().inbound.packets, 2);
}

#[test]
fn debug_output_holds_no_key_bytes() {
    let g = Gateways::new(Enc::AesCbc128, Integ::HmacSha1_96);
    let text = format!("{:?}", g.a);
    for key in [
        &g.a_pair.inbound.encryption_key,
        &g.a_pair.inbound.integrity_key,
        &g.a_pair.outbound.encryption_key,
        &g.a_pair.outbound.integrity_key,
    ] {
        let bytes = key.expose();
        assert!(!text.contains(
            &format!("{:?}", &bytes[..4])
                .trim_end_matches(']')
                .to_string()
        ));
        assert!(!text.contains(&hex::encode(&bytes[..4])));
    }
    assert!(text.contains("AesCbc128"));
}

#[test]
fn rejects_absurd_payload_ranges_without_panicking() {
    let k = keys(9, Enc::AesCbc128, Integ::HmacSha1_96, 3);
    let mut sa = OutboundSa::new(&k).unwrap();
    let mut buf = vec![0u8; 64];
    let mut rng = ChaCha20Rng::seed_from_u64(0);
    for range in [
        usize::MAX - 3..usize::MAX,
        Range { start: 40, end: 30 }, // reversed on purpose
        30..usize::MAX,
        0..10,
        30..60,
    ] {
        assert_eq!(
            sa.seal(&mut buf, range, 4, &mut rng).unwrap_err().reason(),
            DropReason::BufferTooSmall
        );
    }
    assert_eq!(sa.last_sequence(), 0);
}

#[test]
fn ipv6_packets_are_never_fragmented_so_too_big_is_reported() {
    let (ours, _) = pair_and_mirror(
        Enc::AesCbc128,
        Integ::HmacSha1_96,
        0x100,
        0x200,
        cidr("fd00:1::/64"),
        cidr("fd00:2::/64"),
    );
    let mut dp = DataPlane::new(DataPlaneConfig::default());
    dp.add_policy(protect("fd00:1::/64", "fd00:2::/64"));
    dp.install(&ours).unwrap();
    assert!(dp.set_path_mtu(0x100, Some(1280)));

    // Outer IPv4 + UDP: 1280 - 28 = 1252 for ESP; - 36 = 1216 = 76 blocks; - 2 = 1214.
    let src: Ipv6Addr = "fd00:1::5".parse().unwrap();
    let dst: Ipv6Addr = "fd00:2::9".parse().unwrap();
    let inner = ipv6(src, dst, 17, &[0u8; 1215 - 40]);
    let mut buf = vec![0u8; MAX_HEADROOM + inner.len() + MAX_TAILROOM];
    buf[MAX_HEADROOM..MAX_HEADROOM + inner.len()].copy_from_slice(&inner);
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    assert_eq!(
        dp.encapsulate(&mut buf, MAX_HEADROOM..MAX_HEADROOM + inner.len(), &mut rng),
        Err(DropError::PacketTooBig {
            spi: 0x200,
            inner_len: 1215,
            inner_mtu: 1214,
            path_mtu: 1280
        })
    );
    let fits = &inner[..1214];
    let mut fits = fits.to_vec();
    fits[4..6].copy_from_slice(&(1214u16 - 40).to_be_bytes());
    buf[MAX_HEADROOM..MAX_HEADROOM + fits.len()].copy_from_slice(&fits);
    let out = dp.encapsulate(&mut buf, MAX_HEADROOM..MAX_HEADROOM + fits.len(), &mut rng);
    let Ok(Outbound::Protected(t)) = out else {
        panic!("expected protection, got {out:?}")
    };
    assert_eq!(t.packet.len(), 1252);
}

// ------------------------------------------------------------- split halves (split.rs) --

/// One gateway's data plane as two halves, with an AES-128/SHA1 pair for 10.1/24 <-> 10.2/24
/// installed through them, and the peer's mirror-image pair.
fn split_gateway(life: Lifetime) -> (OutboundPlane, InboundPlane, PolicyId, ChildSaPair) {
    let config = DataPlaneConfig {
        soft_lifetime_percent: 50,
        ..DataPlaneConfig::default()
    };
    let (mut ours, mut theirs) = pair_and_mirror(
        Enc::AesCbc128,
        Integ::HmacSha1_96,
        0xc000_0001,
        0xd000_0001,
        cidr("10.1.0.0/24"),
        cidr("10.2.0.0/24"),
    );
    ours.hard_lifetime = life;
    theirs.hard_lifetime = life;
    let mut out = OutboundPlane::new(config);
    let mut inb = InboundPlane::new(config);
    let policy = out.add_policy(protect("10.1.0.0/24", "10.2.0.0/24"));
    assert_eq!(out.install(&ours).unwrap(), policy);
    inb.install(policy, &ours).unwrap();
    (out, inb, policy, theirs)
}

/// Seals `inner` on an outbound half; returns the ESP packet.
fn seal_on(
    out: &mut OutboundPlane,
    inner: &[u8],
    rng: &mut ChaCha20Rng,
) -> Result<Vec<u8>, DropError> {
    let mut buf = vec![0u8; MAX_HEADROOM + inner.len() + MAX_TAILROOM];
    buf[MAX_HEADROOM..MAX_HEADROOM + inner.len()].copy_from_slice(inner);
    match out.encapsulate(&mut buf, MAX_HEADROOM..MAX_HEADROOM + inner.len(), rng)? {
        Outbound::Protected(t) => Ok(buf[t.packet].to_vec()),
        Outbound::Bypass { .. } => panic!("unexpected bypass"),
    }
}

#[test]
fn split_halves_carry_traffic_both_ways_with_a_whole_data_plane() {
    let (mut out, mut inb, policy, theirs) = split_gateway(Lifetime::default());
    let mut peer = DataPlane::new(DataPlaneConfig::default());
    peer.add_policy(protect("10.2.0.0/24", "10.1.0.0/24"));
    peer.install(&theirs).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(9);

    // Our outbound half to the peer.
    let inner = ping([10, 1, 0, 1], [10, 2, 0, 1], 300);
    let mut esp = seal_on(&mut out, &inner, &mut rng).unwrap();
    assert_eq!(&esp[..8], &[0xd0, 0, 0, 1, 0, 0, 0, 1]);
    let r = peer.decapsulate(&mut esp).unwrap();
    assert_eq!(esp[r.inner].to_vec(), inner);

    // The peer's reply to our inbound half.
    let reply = ping([10, 2, 0, 1], [10, 1, 0, 1], 40);
    let mut buf = vec![0u8; MAX_HEADROOM + reply.len() + MAX_TAILROOM];
    buf[MAX_HEADROOM..MAX_HEADROOM + reply.len()].copy_from_slice(&reply);
    let Outbound::Protected(t) = peer
        .encapsulate(&mut buf, MAX_HEADROOM..MAX_HEADROOM + reply.len(), &mut rng)
        .unwrap()
    else {
        panic!("bypass")
    };
    let mut esp = buf[t.packet].to_vec();
    let r = inb.decapsulate(&mut esp).unwrap();
    assert_eq!(esp[r.inner.clone()].to_vec(), reply);
    assert_eq!((r.spi, r.sequence, r.policy), (0xc000_0001, 1, policy));

    // Both views joined for display.
    let stats = split::pair_stats(&out, &inb, 0xc000_0001).unwrap();
    assert_eq!(stats.outbound_spi, 0xd000_0001);
    assert_eq!(stats.outbound.packets, 1);
    assert_eq!(stats.outbound.bytes, 300 + 20);
    assert_eq!(stats.inbound.packets, 1);
    assert_eq!(stats.inbound.bytes, 40 + 20);
    assert_eq!(stats.last_outbound_sequence, 1);
    assert_eq!(stats.highest_inbound_sequence, 1);
    assert!(split::pair_stats(&out, &inb, 0xc000_0002).is_none());
}

#[test]
fn split_halves_work_from_two_threads() {
    use std::sync::{mpsc, Arc, Mutex};

    let (out, inb, _, theirs) = split_gateway(Lifetime::default());
    // The peer as halves too: its inbound half opens what our outbound half seals.
    let mut peer_out = OutboundPlane::new(DataPlaneConfig::default());
    let policy = peer_out.add_policy(protect("10.2.0.0/24", "10.1.0.0/24"));
    peer_out.install(&theirs).unwrap();
    let mut peer_in = InboundPlane::new(DataPlaneConfig::default());
    peer_in.install(policy, &theirs).unwrap();

    let out = Arc::new(Mutex::new(out));
    let inb = Arc::new(Mutex::new(inb));
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let sealer = {
        let out = Arc::clone(&out);
        std::thread::spawn(move || {
            let mut rng = ChaCha20Rng::seed_from_u64(3);
            for n in 0..50 {
                let inner = ping([10, 1, 0, 1], [10, 2, 0, 1], n);
                let esp = seal_on(&mut out.lock().unwrap(), &inner, &mut rng).unwrap();
                tx.send(esp).unwrap();
            }
        })
    };
    let opener = std::thread::spawn(move || {
        let mut delivered = Vec::new();
        for mut esp in rx {
            let r = peer_in.decapsulate(&mut esp).unwrap();
            delivered.push(esp[r.inner].len());
        }
        delivered
    });
    sealer.join().unwrap();
    let delivered = opener.join().unwrap();
    assert_eq!(delivered, (0..50).map(|n| n + 20).collect::<Vec<_>>());
    // Our inbound half, untouched by the other thread, is still usable here.
    assert_eq!(inb.lock().unwrap().drop_counters().total(), 0);
    assert_eq!(out.lock().unwrap().pairs.len(), 1);
}

#[test]
fn split_removal_stops_both_directions() {
    let (mut out, mut inb, policy, theirs) = split_gateway(Lifetime::default());
    let mut peer = DataPlane::new(DataPlaneConfig::default());
    peer.add_policy(protect("10.2.0.0/24", "10.1.0.0/24"));
    peer.install(&theirs).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let reply = ping([10, 2, 0, 1], [10, 1, 0, 1], 10);
    let mut buf = vec![0u8; MAX_HEADROOM + reply.len() + MAX_TAILROOM];
    buf[MAX_HEADROOM..MAX_HEADROOM + reply.len()].copy_from_slice(&reply);
    let Outbound::Protected(t) = peer
        .encapsulate(&mut buf, MAX_HEADROOM..MAX_HEADROOM + reply.len(), &mut rng)
        .unwrap()
    else {
        panic!("bypass")
    };

    assert!(out.remove_pair(0xc000_0001));
    assert!(inb.remove_pair(0xc000_0001));
    assert!(!out.remove_pair(0xc000_0001));
    assert!(!inb.remove_pair(0xc000_0001));
    let inner = ping([10, 1, 0, 1], [10, 2, 0, 1], 10);
    assert_eq!(
        seal_on(&mut out, &inner, &mut rng).unwrap_err(),
        DropError::NoOutboundSa { policy }
    );
    let mut esp = buf[t.packet].to_vec();
    assert_eq!(
        inb.decapsulate(&mut esp).unwrap_err(),
        DropError::NoInboundSa { spi: 0xc000_0001 }
    );
    assert_eq!(out.drop_counters().get(DropReason::NoSa), 1);
    assert_eq!(inb.drop_counters().get(DropReason::NoSa), 1);

    // Removing the policy names the pairs the inbound half must drop as well.
    let (ours, _) = pair_and_mirror(
        Enc::AesCbc128,
        Integ::HmacSha1_96,
        0xc000_0002,
        0xd000_0002,
        cidr("10.1.0.0/24"),
        cidr("10.2.0.0/24"),
    );
    assert_eq!(out.install(&ours).unwrap(), policy);
    inb.install(policy, &ours).unwrap();
    let (removed, spis) = out.remove_policy(policy).unwrap();
    assert_eq!(removed, protect("10.1.0.0/24", "10.2.0.0/24"));
    assert_eq!(spis, vec![0xc000_0002]);
}

#[test]
fn split_install_rejects_duplicates_and_uncovered_pairs() {
    let (mut out, mut inb, policy, _) = split_gateway(Lifetime::default());
    let (ours, _) = pair_and_mirror(
        Enc::AesCbc128,
        Integ::HmacSha1_96,
        0xc000_0001,
        0xd000_0009,
        cidr("10.1.0.0/24"),
        cidr("10.2.0.0/24"),
    );
    assert_eq!(
        out.install(&ours),
        Err(InstallError::DuplicateSpi(0xc000_0001))
    );
    assert_eq!(
        inb.install(policy, &ours),
        Err(InstallError::DuplicateSpi(0xc000_0001))
    );
    let (elsewhere, _) = pair_and_mirror(
        Enc::AesCbc128,
        Integ::HmacSha1_96,
        0xc000_0003,
        0xd000_0003,
        cidr("10.9.0.0/24"),
        cidr("10.2.0.0/24"),
    );
    assert_eq!(
        out.install(&elsewhere),
        Err(InstallError::NoPolicy {
            local: cidr("10.9.0.0/24"),
            remote: cidr("10.2.0.0/24"),
        })
    );
    assert_eq!(
        out.install_on(policy, &elsewhere),
        Err(InstallError::PolicyMismatch(policy))
    );
}

#[test]
fn split_halves_report_lifetime_events_of_their_own_direction() {
    let life = Lifetime {
        seconds: None,
        kilobytes: Some(2),
    };
    let (mut out, mut inb, policy, theirs) = split_gateway(life);
    let mut peer = DataPlane::new(DataPlaneConfig::default());
    peer.add_policy(protect("10.2.0.0/24", "10.1.0.0/24"));
    peer.install(&theirs).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let inner = ping([10, 1, 0, 1], [10, 2, 0, 1], 580); // 600 bytes

    seal_on(&mut out, &inner, &mut rng).unwrap();
    assert_eq!(out.poll_event(), None);
    seal_on(&mut out, &inner, &mut rng).unwrap(); // 1200 >= 1024 (50 % of 2 KiB): soft
    let soft = Event::SoftLifetime {
        policy,
        inbound_spi: 0xc000_0001,
        outbound_spi: 0xd000_0001,
        limit: LimitKind::Kilobytes,
    };
    assert_eq!(out.poll_event(), Some(soft));
    seal_on(&mut out, &inner, &mut rng).unwrap(); // 1800 <= 2048
    assert_eq!(
        seal_on(&mut out, &inner, &mut rng).unwrap_err(),
        DropError::LifetimeExpired {
            spi: 0xd000_0001,
            kilobytes: 2
        }
    );
    assert_eq!(
        out.poll_event(),
        Some(Event::HardLifetime {
            policy,
            inbound_spi: 0xc000_0001,
            outbound_spi: 0xd000_0001,
            limit: LimitKind::Kilobytes,
        })
    );
    assert_eq!(out.poll_event(), None);

    // The inbound half has its own count: nothing crossed there yet, and it still opens
    // the peer's packets until the control plane removes the pair.
    assert_eq!(inb.poll_event(), None);
    for _ in 0..2 {
        let reply = ping([10, 2, 0, 1], [10, 1, 0, 1], 580);
        let mut buf = vec![0u8; MAX_HEADROOM + reply.len() + MAX_TAILROOM];
        buf[MAX_HEADROOM..MAX_HEADROOM + reply.len()].copy_from_slice(&reply);
        let Outbound::Protected(t) = peer
            .encapsulate(&mut buf, MAX_HEADROOM..MAX_HEADROOM + reply.len(), &mut rng)
            .unwrap()
        else {
            panic!("bypass")
        };
        inb.decapsulate(&mut buf[t.packet]).unwrap();
    }
    assert_eq!(inb.poll_event(), Some(soft));
    assert_eq!(inb.poll_event(), None);
    let stats = split::pair_stats(&out, &inb, 0xc000_0001).unwrap();
    assert!(stats.soft_expired && stats.hard_expired);
}

/// `encapsulate_batch` gives every packet the result and the bytes `encapsulate` gives it,
/// for every cipher, across groups of lanes, alternating SAs, mixed sizes and packets that
/// are bypassed, have no policy or are malformed; the receiver opens each protected one.
#[test]
fn batch_encapsulation_equals_one_at_a_time() {
    for enc in Enc::ALL {
        // `single` seals one packet at a time, `batch` the same packets in one call, both
        // with the same random numbers; two pairs, so that runs of one SA alternate.
        let (mut single, mut batch, mut receiver) = batch_twins(
            enc,
            Integ::HmacSha1_96,
            DataPlaneConfig::default(),
            Lifetime::default(),
        );
        let mut inners: Vec<Vec<u8>> = Vec::new();
        for i in 0..21usize {
            let dst = match i % 7 {
                0..=2 => [10, 2, 0, 10],
                3 | 4 => [10, 4, 0, 10],
                _ => [10, 2, 0, 11],
            };
            inners.push(ping([10, 1, 0, 10], dst, 1 + i * 67));
        }
        inners.insert(5, ping([10, 1, 0, 10], [10, 9, 0, 1], 40)); // bypass
        inners.insert(9, ping([10, 1, 0, 10], [10, 7, 0, 1], 40)); // no policy
        inners.insert(13, vec![0x45, 0, 0]); // malformed
        let framed = |inner: &Vec<u8>| {
            let mut buf = vec![0u8; MAX_HEADROOM + inner.len() + MAX_TAILROOM];
            buf[MAX_HEADROOM..MAX_HEADROOM + inner.len()].copy_from_slice(inner);
            (buf, MAX_HEADROOM..MAX_HEADROOM + inner.len())
        };

        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let mut one: Vec<(Vec<u8>, Result<Outbound, DropError>)> = Vec::new();
        for inner in &inners {
            let (mut buf, range) = framed(inner);
            let r = single.encapsulate(&mut buf, range, &mut rng);
            one.push((buf, r));
        }

        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let mut packets: Vec<(Vec<u8>, Range<usize>)> = inners.iter().map(framed).collect();
        let mut results = Vec::new();
        batch.encapsulate_batch(&mut packets, &mut rng, &mut results);

        assert_eq!(results.len(), inners.len());
        let mut protected = 0;
        for (i, ((buf, r), ((batch_buf, _), batch_r))) in
            one.iter().zip(packets.iter().zip(&results)).enumerate()
        {
            assert_eq!(r, batch_r, "{enc:?} packet {i}");
            if let Ok(Outbound::Protected(tx)) = r {
                assert_eq!(
                    buf[tx.packet.clone()],
                    batch_buf[tx.packet.clone()],
                    "{enc:?} {i}"
                );
                let mut esp = batch_buf[tx.packet.clone()].to_vec();
                let opened = receiver.decapsulate(&mut esp).unwrap();
                assert_eq!(esp[opened.inner], inners[i][..], "{enc:?} {i}");
                protected += 1;
            }
        }
        assert_eq!(protected, 21, "{enc:?}");
        assert!(matches!(results[5], Ok(Outbound::Bypass { .. })));
        assert!(matches!(results[9], Err(DropError::NoPolicy { .. })));
        assert!(matches!(results[13], Err(DropError::MalformedInner { .. })));
        assert_eq!(batch.drop_counters(), single.drop_counters());
        assert_eq!(batch.drop_counters().total(), 2);
        let stats = |p: &DataPlane| p.pairs().map(|s| s.outbound).collect::<Vec<_>>();
        assert_eq!(stats(&batch), stats(&single));
    }
}

// ------------------------------------------- batch sealing against one at a time, attacked --

/// One packet of a batch scenario: an IPv4 ping from 10.1.0.10 to `dst` with `body` bytes
/// of payload, DF set or not, in a buffer with `headroom` bytes before it and `tailroom`
/// after it.
#[derive(Clone, Debug)]
struct Spec {
    dst: [u8; 4],
    body: usize,
    df: bool,
    headroom: usize,
    tailroom: usize,
}

impl Spec {
    fn to(dst: [u8; 4], body: usize) -> Self {
        Self {
            dst,
            body,
            df: true,
            headroom: MAX_HEADROOM,
            tailroom: MAX_TAILROOM,
        }
    }

    fn inner(&self) -> Vec<u8> {
        let mut p = ping([10, 1, 0, 10], self.dst, self.body);
        if !self.df {
            p[6] = 0;
        }
        p
    }

    fn buffer(&self) -> (Vec<u8>, Range<usize>) {
        let inner = self.inner();
        let mut buf = vec![0xeeu8; self.headroom + inner.len() + self.tailroom];
        buf[self.headroom..self.headroom + inner.len()].copy_from_slice(&inner);
        (buf, self.headroom..self.headroom + inner.len())
    }
}

/// Everything a sender shows after a run: every buffer byte, every result, the events,
/// the drop counters and every pair's counters and lifetime state.
#[derive(Debug, PartialEq)]
struct SendOutcome {
    bufs: Vec<Vec<u8>>,
    results: Vec<Result<Outbound, DropError>>,
    events: Vec<Event>,
    drops: DropCounters,
    pairs: Vec<SaPairStats>,
}

/// The events of pair 0xc000_0001 (policy 0) reaching first the soft, then the hard
/// `limit`.
fn soft_then_hard(limit: LimitKind) -> Vec<Event> {
    let (policy, inbound_spi, outbound_spi) = (PolicyId(0), 0xc000_0001, 0xd000_0001);
    vec![
        Event::SoftLifetime {
            policy,
            inbound_spi,
            outbound_spi,
            limit,
        },
        Event::HardLifetime {
            policy,
            inbound_spi,
            outbound_spi,
            limit,
        },
    ]
}

/// Two identical senders with pairs 0xc000_0001 (10.2/24) and 0xc000_0004 (10.4/24), a
/// BYPASS policy for 10.9/24 and a receiver for both pairs (no limits of its own).
fn batch_twins(
    enc: Enc,
    integ: Integ,
    config: DataPlaneConfig,
    life: Lifetime,
) -> (DataPlane, DataPlane, DataPlane) {
    let (mut ours_2, theirs_2) = pair_and_mirror(
        enc,
        integ,
        0xc000_0001,
        0xd000_0001,
        cidr("10.1.0.0/24"),
        cidr("10.2.0.0/24"),
    );
    let (mut ours_4, theirs_4) = pair_and_mirror(
        enc,
        integ,
        0xc000_0004,
        0xd000_0004,
        cidr("10.1.0.0/24"),
        cidr("10.4.0.0/24"),
    );
    ours_2.hard_lifetime = life;
    ours_4.hard_lifetime = life;
    let sender = || {
        let mut a = DataPlane::new(config);
        a.add_policy(protect("10.1.0.0/24", "10.2.0.0/24"));
        a.add_policy(protect("10.1.0.0/24", "10.4.0.0/24"));
        a.add_policy(Policy {
            local: cidr("10.1.0.0/24"),
            remote: cidr("10.9.0.0/24"),
            action: PolicyAction::Bypass,
            priority: 10,
        });
        a.install(&ours_2).unwrap();
        a.install(&ours_4).unwrap();
        a
    };
    let mut receiver = DataPlane::new(DataPlaneConfig::default());
    receiver.add_policy(protect("10.2.0.0/24", "10.1.0.0/24"));
    receiver.add_policy(protect("10.4.0.0/24", "10.1.0.0/24"));
    receiver.install(&theirs_2).unwrap();
    receiver.install(&theirs_4).unwrap();
    (sender(), sender(), receiver)
}

fn outcome_of(
    plane: &mut DataPlane,
    bufs: Vec<Vec<u8>>,
    results: Vec<Result<Outbound, DropError>>,
) -> SendOutcome {
    SendOutcome {
        bufs,
        results,
        events: std::iter::from_fn(|| plane.poll_event()).collect(),
        drops: plane.drop_counters().clone(),
        pairs: plane.pairs().collect(),
    }
}

/// `specs` through `plane.encapsulate` one at a time.
fn send_one_by_one(plane: &mut DataPlane, specs: &[Spec], seed: u64) -> SendOutcome {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut bufs = Vec::new();
    let mut results = Vec::new();
    for spec in specs {
        let (mut buf, range) = spec.buffer();
        results.push(plane.encapsulate(&mut buf, range, &mut rng));
        bufs.push(buf);
    }
    outcome_of(plane, bufs, results)
}

/// `specs` through `plane.encapsulate_batch`, cut into batches of `cut` packets (the
/// result list is reused and starts out holding stale results).
fn send_in_batches(plane: &mut DataPlane, specs: &[Spec], seed: u64, cut: usize) -> SendOutcome {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut bufs = Vec::new();
    let mut all = Vec::new();
    let mut results = vec![Err(DropError::DummyPacket { spi: 7 }); 3];
    for chunk in specs.chunks(cut.max(1)) {
        let mut packets: Vec<(Vec<u8>, Range<usize>)> = chunk.iter().map(Spec::buffer).collect();
        plane.encapsulate_batch(&mut packets, &mut rng, &mut results);
        assert_eq!(results.len(), chunk.len(), "one result per packet");
        all.append(&mut results);
        bufs.extend(packets.into_iter().map(|(b, _)| b));
    }
    outcome_of(plane, bufs, all)
}

/// The two outcomes are the same, and every protected packet opens at `receiver` into its
/// inner packet and does not carry that packet in clear.
fn assert_same_and_sealed(
    single: &SendOutcome,
    batch: &SendOutcome,
    specs: &[Spec],
    receiver: &mut DataPlane,
    what: &str,
) {
    assert_eq!(single.results, batch.results, "{what}: results");
    for (i, (a, b)) in single.bufs.iter().zip(&batch.bufs).enumerate() {
        assert_eq!(a, b, "{what}: bytes of packet {i}");
    }
    assert_eq!(single.events, batch.events, "{what}: events");
    assert_eq!(single.drops, batch.drops, "{what}: drop counters");
    assert_eq!(single.pairs, batch.pairs, "{what}: pair stats");
    for (i, r) in batch.results.iter().enumerate() {
        let Ok(Outbound::Protected(tx)) = r else {
            continue;
        };
        let inner = specs[i].inner();
        let mut esp = batch.bufs[i][tx.packet.clone()].to_vec();
        assert!(
            !esp.windows(inner.len()).any(|w| w == inner),
            "{what}: packet {i} went out in clear"
        );
        let opened = receiver
            .decapsulate(&mut esp)
            .unwrap_or_else(|e| panic!("{what}: packet {i} does not open: {e}"));
        assert_eq!(esp[opened.inner], inner[..], "{what}: packet {i}");
    }
}

/// Runs `specs` on fresh twins, one at a time and in batches of `cut`; `prepare` runs on
/// both senders first. Returns the batch outcome for exact checks.
fn batch_scenario(
    enc: Enc,
    config: DataPlaneConfig,
    life: Lifetime,
    specs: &[Spec],
    cut: usize,
    prepare: impl Fn(&mut DataPlane),
) -> SendOutcome {
    let (mut single, mut batch, mut receiver) = batch_twins(enc, Integ::HmacSha1_96, config, life);
    prepare(&mut single);
    prepare(&mut batch);
    let one = send_one_by_one(&mut single, specs, 5);
    let many = send_in_batches(&mut batch, specs, 5, cut);
    assert_same_and_sealed(
        &one,
        &many,
        specs,
        &mut receiver,
        &format!("{enc:?}, batches of {cut}"),
    );
    many
}

/// A pair crosses its soft and then its hard kilobyte limit in the middle of one batch,
/// with the other pair's packets in between: every later packet of that pair is refused,
/// the other pair goes on, and the events come once each, in order.
#[test]
fn batch_crossing_soft_and_hard_kilobyte_limits_equals_one_at_a_time() {
    let life = Lifetime {
        seconds: None,
        kilobytes: Some(3),
    };
    let config = DataPlaneConfig {
        soft_lifetime_percent: 50,
        ..DataPlaneConfig::default()
    };
    // 600 bytes each on 10.2 (0xc000_0001): soft at 1536 (3rd), hard past 3072 (6th,
    // at index 7); 120 bytes each on 10.4 at indices 2, 6 and 10.
    let mut specs = Vec::new();
    for i in 0..8 {
        specs.push(Spec::to([10, 2, 0, 10], 580));
        if i % 3 == 1 {
            specs.push(Spec::to([10, 4, 0, 10], 100));
        }
    }
    for enc in Enc::ALL {
        for cut in [1, 3, specs.len()] {
            let out = batch_scenario(enc, config, life, &specs, cut, |_| {});
            let refused: Vec<usize> = out
                .results
                .iter()
                .enumerate()
                .filter(|(_, r)| r.is_err())
                .map(|(i, _)| i)
                .collect();
            // Indices of the 6th, 7th and 8th 10.2 packets.
            assert_eq!(refused, vec![7, 8, 9], "{enc:?} {cut}");
            assert_eq!(
                out.results[7],
                Err(DropError::LifetimeExpired {
                    spi: 0xd000_0001,
                    kilobytes: 3
                })
            );
            assert_eq!(out.events, soft_then_hard(LimitKind::Kilobytes));
            assert_eq!(out.drops.get(DropReason::LifetimeExpired), 3);
            assert_eq!(out.drops.total(), 3);
            let p2 = &out.pairs[0];
            assert_eq!((p2.outbound.packets, p2.outbound.bytes), (5, 3000));
            assert!(p2.soft_expired && p2.hard_expired);
            let p4 = &out.pairs[1];
            assert_eq!((p4.outbound.packets, p4.outbound.bytes), (3, 360));
            assert!(!p4.soft_expired && !p4.hard_expired);
        }
    }
}

/// Sequence numbers run out in the middle of a batch: the last ones are used, the next
/// packet of that pair is refused as exhausted (which retires the pair, so the ones after
/// it are refused as expired), the other pair is unaffected.
#[test]
fn batch_running_out_of_sequence_numbers_equals_one_at_a_time() {
    let mut specs = Vec::new();
    for _ in 0..5 {
        specs.push(Spec::to([10, 2, 0, 10], 64));
        specs.push(Spec::to([10, 4, 0, 10], 64));
    }
    for enc in Enc::ALL {
        for cut in [1, 4, specs.len()] {
            let out = batch_scenario(
                enc,
                DataPlaneConfig::default(),
                Lifetime::default(),
                &specs,
                cut,
                |p| {
                    p.out
                        .pairs
                        .get_mut(&0xc000_0001)
                        .unwrap()
                        .sa
                        .set_last_sequence(u32::MAX - 2);
                },
            );
            let seqs: Vec<Option<u32>> = out
                .results
                .iter()
                .map(|r| match r {
                    Ok(Outbound::Protected(t)) => Some(t.sequence),
                    _ => None,
                })
                .collect();
            assert_eq!(
                seqs,
                vec![
                    Some(u32::MAX - 1),
                    Some(1),
                    Some(u32::MAX),
                    Some(2),
                    None,
                    Some(3),
                    None,
                    Some(4),
                    None,
                    Some(5)
                ],
                "{enc:?} {cut}"
            );
            assert_eq!(
                out.results[4],
                Err(DropError::SequenceExhausted { spi: 0xd000_0001 })
            );
            assert_eq!(out.events, soft_then_hard(LimitKind::SequenceNumbers));
            // Later packets of the retired pair are refused for the limit that retired it.
            assert_eq!(
                out.results[6],
                Err(DropError::SequenceExhausted { spi: 0xd000_0001 })
            );
            assert_eq!(out.results[8], out.results[6]);
            assert_eq!(out.drops.get(DropReason::SequenceExhausted), 3);
            assert_eq!(out.drops.get(DropReason::LifetimeExpired), 0);
            assert_eq!(out.drops.total(), 3);
            assert_eq!(out.pairs[0].last_outbound_sequence, u32::MAX);
            assert_eq!(out.pairs[1].last_outbound_sequence, 5);
        }
    }
}

/// Packets too big for the path MTU (DF set: refused, inner bytes untouched for the ICMP
/// error; DF clear: sealed), buffers without head- or tailroom, and fitting packets, mixed
/// in one batch.
#[test]
fn batch_with_too_big_and_roomless_packets_equals_one_at_a_time() {
    let config = DataPlaneConfig {
        default_path_mtu: Some(1500),
        ..DataPlaneConfig::default()
    };
    for enc in Enc::ALL {
        // The largest inner packet that fits: 1422 bytes for AES/SHA1 over UDP.
        let mtu = inner_mtu(
            EspOverhead::new(enc, Integ::HmacSha1_96),
            sock("192.0.2.2:4500"),
            Encapsulation::UdpTunnel,
            1500,
        )
        .unwrap();
        let fits = Spec::to([10, 2, 0, 10], mtu - 20);
        let too_big = Spec::to([10, 2, 0, 10], mtu - 19);
        let no_df = Spec {
            df: false,
            ..too_big.clone()
        };
        let no_headroom = Spec {
            headroom: 3,
            ..Spec::to([10, 4, 0, 10], 200)
        };
        let no_tailroom = Spec {
            tailroom: 2,
            ..Spec::to([10, 2, 0, 10], 200)
        };
        let specs = vec![
            fits.clone(),
            too_big.clone(),
            no_df.clone(),
            Spec::to([10, 4, 0, 10], 40),
            no_headroom,
            fits.clone(),
            no_tailroom,
            too_big.clone(),
            Spec::to([10, 9, 0, 1], 40), // bypass
            fits,
        ];
        for cut in [1, 2, specs.len()] {
            let out = batch_scenario(enc, config, Lifetime::default(), &specs, cut, |_| {});
            for i in [1, 7] {
                assert!(
                    matches!(
                        out.results[i],
                        Err(DropError::PacketTooBig { path_mtu: 1500, .. })
                    ),
                    "{enc:?} {i}: {:?}",
                    out.results[i]
                );
                // The inner packet is where it was, unchanged: the gateway quotes it.
                let (buf, range) = too_big.buffer();
                assert_eq!(out.bufs[i][range.clone()], buf[range], "{enc:?} {i}");
            }
            for i in [4, 6] {
                assert_eq!(
                    out.results[i].as_ref().unwrap_err().reason(),
                    DropReason::BufferTooSmall,
                    "{enc:?} {i}"
                );
            }
            assert!(matches!(out.results[8], Ok(Outbound::Bypass { .. })));
            assert_eq!(out.drops.get(DropReason::PacketTooBig), 2);
            assert_eq!(out.drops.get(DropReason::BufferTooSmall), 2);
            assert_eq!(out.drops.total(), 4);
            assert_eq!(out.pairs[0].outbound.packets, 4);
            assert_eq!(out.pairs[1].outbound.packets, 1);
        }
    }
}

/// An empty batch clears the result list and changes nothing; a batch of one is the same
/// as `encapsulate`, for every cipher.
#[test]
fn empty_batch_and_batch_of_one() {
    for enc in Enc::ALL {
        let (mut single, mut batch, mut receiver) = batch_twins(
            enc,
            Integ::HmacSha256_128,
            DataPlaneConfig::default(),
            Lifetime::default(),
        );
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let mut results = vec![Ok(Outbound::Bypass {
            policy: PolicyId(9),
        })];
        let mut none: Vec<(Vec<u8>, Range<usize>)> = Vec::new();
        batch.encapsulate_batch(&mut none, &mut rng, &mut results);
        assert!(results.is_empty());
        assert_eq!(batch.drop_counters().total(), 0);
        assert_eq!(batch.poll_event(), None);
        assert!(batch
            .pairs()
            .all(|p| p.outbound.packets == 0 && p.last_outbound_sequence == 0));
        // The empty batch drew no random numbers: `rng` is still in step with a fresh
        // generator of the same seed.
        let specs = [Spec::to([10, 4, 0, 10], 333)];
        let one = send_one_by_one(&mut single, &specs, 1);
        let mut packets: Vec<(Vec<u8>, Range<usize>)> = specs.iter().map(Spec::buffer).collect();
        batch.encapsulate_batch(&mut packets, &mut rng, &mut results);
        let many = outcome_of(
            &mut batch,
            packets.into_iter().map(|(b, _)| b).collect(),
            results,
        );
        assert_same_and_sealed(&one, &many, &specs, &mut receiver, &format!("{enc:?}"));
    }
}

/// The outbound half on its own (as the gateway uses it): a batch gives the same results,
/// bytes, events and drop counters as `OutboundPlane::encapsulate` one at a time, with a
/// hard limit reached mid-batch.
#[test]
fn outbound_half_batch_equals_one_at_a_time() {
    let life = Lifetime {
        seconds: None,
        kilobytes: Some(1),
    };
    let specs: Vec<Spec> = (0..6).map(|_| Spec::to([10, 2, 0, 1], 300)).collect();
    let (mut single, _, _, theirs) = split_gateway(life);
    let (mut batch, _, _, _) = split_gateway(life);
    let mut peer = DataPlane::new(DataPlaneConfig::default());
    peer.add_policy(protect("10.2.0.0/24", "10.1.0.0/24"));
    peer.install(&theirs).unwrap();

    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut one = Vec::new();
    for spec in &specs {
        let (mut buf, range) = spec.buffer();
        let r = single.encapsulate(&mut buf, range, &mut rng);
        one.push((buf, r));
    }
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut packets: Vec<(Vec<u8>, Range<usize>)> = specs.iter().map(Spec::buffer).collect();
    let mut results = Vec::new();
    batch.encapsulate_batch(&mut packets, &mut rng, &mut results);
    for (i, ((buf, r), ((bbuf, _), br))) in one.iter().zip(packets.iter().zip(&results)).enumerate()
    {
        assert_eq!(r, br, "packet {i}");
        assert_eq!(buf, bbuf, "bytes of packet {i}");
        if let Ok(Outbound::Protected(t)) = br {
            let mut esp = bbuf[t.packet.clone()].to_vec();
            let opened = peer.decapsulate(&mut esp).unwrap();
            assert_eq!(esp[opened.inner], specs[i].inner()[..]);
        }
    }
    // 320 bytes each: three fit in 1024, the fourth on is refused.
    assert_eq!(
        results.iter().map(Result::is_ok).collect::<Vec<_>>(),
        vec![true, true, true, false, false, false]
    );
    let events = |p: &mut OutboundPlane| std::iter::from_fn(|| p.poll_event()).collect::<Vec<_>>();
    let batch_events = events(&mut batch);
    assert_eq!(events(&mut single), batch_events);
    assert_eq!(
        batch_events
            .iter()
            .map(|e| matches!(e, Event::HardLifetime { .. }))
            .collect::<Vec<_>>(),
        vec![false, true]
    );
    assert_eq!(single.drop_counters(), batch.drop_counters());
    assert_eq!(batch.drop_counters().get(DropReason::LifetimeExpired), 3);
}

mod batch_properties {
    use proptest::prelude::*;

    use super::*;

    fn spec() -> impl Strategy<Value = Spec> {
        (
            prop::sample::select(vec![
                [10, 2, 0, 10],
                [10, 2, 0, 11],
                [10, 4, 0, 10],
                [10, 9, 0, 1], // bypass
                [10, 7, 0, 1], // no policy
            ]),
            0usize..1500,
            any::<bool>(),
            prop_oneof![4 => Just(MAX_HEADROOM), 1 => 0..MAX_HEADROOM],
            prop_oneof![4 => Just(MAX_TAILROOM), 1 => 0..MAX_TAILROOM],
        )
            .prop_map(|(dst, body, df, headroom, tailroom)| Spec {
                dst,
                body,
                df,
                headroom,
                tailroom,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Any mix of packets, algorithms, kilobyte lifetimes, path MTU and sequence
        /// counters near their end, cut into batches of any size: `encapsulate_batch`
        /// leaves every byte, result, event, drop counter and pair counter as
        /// `encapsulate` one at a time does, and nothing leaves unencrypted.
        #[test]
        fn batches_equal_one_at_a_time(
            enc in prop::sample::select(Enc::ALL.to_vec()),
            integ in prop::sample::select(Integ::ALL.to_vec()),
            kilobytes in prop::option::of(1u64..40),
            soft in 1u8..=100,
            path_mtu in prop::option::of(576usize..1600),
            near_end in prop::option::of(0u32..12),
            specs in prop::collection::vec(spec(), 0..48),
            cut in 1usize..20,
        ) {
            let config = DataPlaneConfig {
                soft_lifetime_percent: soft,
                default_path_mtu: path_mtu,
                ..DataPlaneConfig::default()
            };
            let life = Lifetime { seconds: None, kilobytes };
            let (mut single, mut batch, mut receiver) = batch_twins(enc, integ, config, life);
            if let Some(left) = near_end {
                for p in [&mut single, &mut batch] {
                    p.out.pairs.get_mut(&0xc000_0004).unwrap().sa.set_last_sequence(u32::MAX - left);
                }
            }
            let one = send_one_by_one(&mut single, &specs, 17);
            let many = send_in_batches(&mut batch, &specs, 17, cut);
            assert_same_and_sealed(&one, &many, &specs, &mut receiver, &format!("{enc:?}/{integ:?}"));
        }
    }
}

/// A buffer type whose `as_mut` hands out a different buffer on every second call: the
/// batch frames one and would encrypt the other. The packet must be refused, not reported
/// protected with its plaintext in place.
#[test]
fn batch_refuses_a_buffer_that_changed_between_framing_and_encryption() {
    struct Fickle {
        framed: Vec<u8>,
        other: Vec<u8>,
        calls: u32,
    }
    impl AsMut<[u8]> for Fickle {
        fn as_mut(&mut self) -> &mut [u8] {
            self.calls += 1;
            if self.calls % 2 == 1 {
                &mut self.framed
            } else {
                &mut self.other
            }
        }
    }
    let mut g = Gateways::new(Enc::AesCbc128, Integ::HmacSha1_96);
    let inner = ping([10, 1, 0, 10], [10, 2, 0, 10], 300);
    let mut buf = vec![0u8; MAX_HEADROOM + inner.len() + MAX_TAILROOM];
    buf[MAX_HEADROOM..MAX_HEADROOM + inner.len()].copy_from_slice(&inner);
    let range = MAX_HEADROOM..MAX_HEADROOM + inner.len();
    let mut packets = vec![(
        Fickle {
            framed: buf.clone(),
            other: buf.clone(),
            calls: 0,
        },
        range.clone(),
    )];
    let mut results = Vec::new();
    g.a.encapsulate_batch(&mut packets, &mut g.rng, &mut results);
    assert!(
        matches!(
            results[..],
            [Err(DropError::MalformedEsp {
                spi: 0xd000_0001,
                ..
            })]
        ),
        "{results:?}"
    );
    // The other buffer was not touched, and nothing was encrypted in the framed one.
    assert_eq!(packets[0].0.other, buf);
    assert_eq!(packets[0].0.framed[range], inner[..]);
    assert_eq!(g.a.drop_counters().get(DropReason::Malformed), 1);
}
