//! Quick Mode and Informational handling after phase 1: two endpoints in memory run Main
//! Mode and one Quick Mode to the end (group 2, no PFS, fixed seeds), then the fuzzer's
//! plaintexts are encrypted the way a peer would (phase-1 cipher key Ka, IV of RFC 2409
//! Appendix B for the message ID, or the last block of the previous message with that ID)
//! and handed to either side. The fuzzer cannot compute HASH(1) (SKEYID_a stays inside
//! the endpoint), so most inputs end at the HASH check, after decryption and payload
//! parsing; see fuzz/README.md for the hook that would let it past.
//!
//! Input: messages, each `flags, message ID (4), first payload type, length (2), chain`:
//! - flags bit 0: to the initiator (else the responder);
//! - bit 1: Informational (else Quick Mode);
//! - bit 2: sent in clear (header flags 0) instead of encrypted;
//! - bit 3: a 20-byte HASH payload is put in front of the fuzzer's chain;
//! - bit 4: the message ID of the established Quick Mode instead of the input's.
//!
//! Nothing may panic; then a timeout an hour later and a shutdown.

#![no_main]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ipsec_crypto::{Cipher, DhGroup, EncryptionAlgorithm, HashAlgorithm, SecretBytes};
use ipsec_proto::isakmp::{ExchangeType, Flags, Header, PayloadType};
use ipsec_sa::endpoint::{Endpoint, EndpointConfig, Phase1Proposal, TunnelConfig};
use ipsec_sa::selector::TrafficSelector;
use libfuzzer_sys::fuzz_target;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

static START: OnceLock<Instant> = OnceLock::new();

fn tunnel(name: &str, local: [u8; 4], remote: [u8; 4]) -> Option<TunnelConfig> {
    let net = |a: [u8; 4]| TrafficSelector::from_cidr([10, a[3], 0, 0].into(), 24).ok();
    let mut t = TunnelConfig::new(
        name,
        SocketAddr::from((local, 500)),
        SocketAddr::from((remote, 500)),
        SecretBytes::from_slice(b"fuzz-psk"),
        net(local)?,
        net(remote)?,
    );
    t.phase1.proposals = vec![Phase1Proposal {
        encryption: EncryptionAlgorithm::AesCbc128,
        hash: HashAlgorithm::Sha1,
        group: DhGroup::Modp1024,
    }];
    t.phase2.pfs_group = None;
    Some(t)
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Some(head)
}

fuzz_target!(|data: &[u8]| {
    let now = *START.get_or_init(Instant::now);
    let (Some(l), Some(r)) = (
        tunnel("left", [192, 0, 2, 1], [192, 0, 2, 2]),
        tunnel("right", [192, 0, 2, 2], [192, 0, 2, 1]),
    ) else {
        return;
    };
    let (la, ra) = (l.local_addr, r.local_addr);
    let mk = |seed| {
        Endpoint::new(
            EndpointConfig::default(),
            Box::new(ChaCha20Rng::seed_from_u64(seed)),
        )
    };
    let (mut left, mut right) = (mk(1), mk(2));
    let (Ok(lt), Ok(_)) = (left.add_tunnel(l), right.add_tunnel(r)) else {
        return;
    };
    if left.initiate(lt, now).is_err() {
        return;
    }

    // Main Mode and Quick Mode, in lockstep; remember MM6 and QM1.
    let mut sent: Vec<Vec<u8>> = Vec::new();
    for _ in 0..12 {
        let mut moved = false;
        while let Some(t) = left.poll_transmit() {
            sent.push(t.payload.clone());
            right.handle_datagram(now, ra, la, &t.payload);
            moved = true;
        }
        while let Some(t) = right.poll_transmit() {
            sent.push(t.payload.clone());
            left.handle_datagram(now, la, ra, &t.payload);
            moved = true;
        }
        if !moved {
            break;
        }
    }
    while left.poll_event().is_some() {}
    while right.poll_event().is_some() {}
    let (Some(mm6), Some(qm1)) = (sent.get(5), sent.get(6)) else {
        return;
    };
    let Some(((cky_i, ka), cky_r)) = left
        .phase1_encryption_key(lt)
        .zip(mm6.get(8..16).and_then(|c| <[u8; 8]>::try_from(c).ok()))
    else {
        return;
    };
    let Some(last_block) = mm6.get(mm6.len().saturating_sub(16)..) else {
        return;
    };
    let qm_id = qm1
        .get(20..24)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_be_bytes);
    let Ok(cipher) = Cipher::new(EncryptionAlgorithm::AesCbc128, ka.expose()) else {
        return;
    };

    // The CBC chain per message ID: the next IV is the last block sent with that ID.
    let mut ivs: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut rest = data;
    let mut at = now;
    for _ in 0..8 {
        let Some(&[flags, m0, m1, m2, m3, first, hi, lo]) = take(&mut rest, 8) else {
            break;
        };
        let len = usize::from(u16::from_be_bytes([hi, lo])).min(rest.len());
        let Some(chain) = take(&mut rest, len) else {
            break;
        };
        let message_id = if flags & 16 != 0 {
            qm_id
        } else {
            u32::from_be_bytes([m0, m1, m2, m3])
        };
        let mut body = Vec::new();
        let next_payload = if flags & 8 != 0 {
            body.extend_from_slice(&[first, 0, 0, 24]);
            body.extend_from_slice(&[0u8; 20]);
            PayloadType::HASH
        } else {
            PayloadType(first)
        };
        body.extend_from_slice(chain);
        let encrypted = flags & 4 == 0;
        if encrypted {
            body.resize(body.len().div_ceil(16) * 16, 0);
            let iv = ivs.get(&message_id).cloned().unwrap_or_else(|| {
                ipsec_crypto::ikev1::phase2_iv(HashAlgorithm::Sha1, last_block, message_id, 16)
            });
            if cipher.encrypt_cbc(&iv, &mut body).is_err() {
                continue;
            }
            if let Some(b) = body.get(body.len().saturating_sub(16)..) {
                ivs.insert(message_id, b.to_vec());
            }
        }
        let header = Header {
            initiator_cookie: cky_i,
            responder_cookie: cky_r,
            next_payload,
            version: 0x10,
            exchange_type: if flags & 2 != 0 {
                ExchangeType::INFORMATIONAL
            } else {
                ExchangeType::QUICK_MODE
            },
            flags: Flags(u8::from(encrypted)),
            message_id,
            length: u32::try_from(28 + body.len()).unwrap_or(u32::MAX),
        };
        let mut m = Vec::new();
        header.encode(&mut m);
        m.extend_from_slice(&body);
        at += Duration::from_millis(100);
        if flags & 1 != 0 {
            left.handle_datagram(at, la, ra, &m);
        } else {
            right.handle_datagram(at, ra, la, &m);
        }
        while left.poll_transmit().is_some() {}
        while right.poll_transmit().is_some() {}
    }
    for ep in [&mut left, &mut right] {
        ep.handle_timeout(at + Duration::from_secs(3600));
        ep.shutdown(at + Duration::from_secs(3601));
        while ep.poll_transmit().is_some() {}
        while ep.poll_event().is_some() {}
    }
});
