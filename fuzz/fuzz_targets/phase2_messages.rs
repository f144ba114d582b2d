//! Quick Mode and Informational handling after phase 1: two endpoints in memory run Main
//! Mode and one Quick Mode to the end (group 2, no PFS, fixed seeds), then the fuzzer's
//! plaintexts are encrypted the way a peer would (phase-1 cipher key Ka, IV of RFC 2409
//! Appendix B for the message ID, or the last block of the previous message with that ID)
//! and handed to either side. With ipsec-sa's `fuzzing` feature the target reads SKEYID_a
//! (`Endpoint::fuzzing_skeyid_a`) and puts a correct HASH(1) in front of the fuzzer's
//! chain, so the Quick Mode responder and the Informational handlers see authenticated
//! payloads of the fuzzer's choosing; it can also finish a Quick Mode it started with a
//! correct HASH(3), so fuzzer-chosen proposals and identities reach the ESP SA set-up.
//!
//! Input: messages, each `flags, message ID (4), first payload type, length (2), chain`:
//! - flags bit 0: to the initiator (else the responder);
//! - bit 1: Informational (else Quick Mode);
//! - bit 2: sent in clear (header flags 0) instead of encrypted;
//! - bit 3: a HASH payload (HASH(1) computed with SKEYID_a over the chain) is put in
//!   front of the fuzzer's chain;
//! - bit 4: the message ID of the established Quick Mode instead of the input's;
//! - bit 5: if the receiver answers on that message ID (QM2), decrypt it and send QM3 with
//!   HASH(3) = prf(SKEYID_a, 0 | M-ID | Ni_b | Nr_b), Ni_b from the fuzzer's chain;
//! - bit 6: the chain is the genuine QM1's (decrypted, after its HASH) with the fuzzer's
//!   bytes XORed over it from the start, and its first payload type; a valid starting
//!   point that a Quick Mode responder accepts as is.
//!
//! Nothing may panic; then a timeout an hour later and a shutdown.

#![no_main]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ipsec_crypto::{Cipher, DhGroup, EncryptionAlgorithm, HashAlgorithm, SecretBytes};
use ipsec_proto::isakmp::{parse_payloads, ExchangeType, Flags, Header, PayloadType};
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
    let Some(skeyid_a) = left.fuzzing_skeyid_a(lt) else {
        return;
    };
    let genuine = genuine_chain(&cipher, last_block, qm_id, qm1).unwrap_or((0, Vec::new()));

    // The CBC chain per message ID: the next IV is the last block sent with that ID.
    let mut ivs: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut rest = data;
    // PHASE2_DEBUG=1 prints the events the fuzzer's messages cause (to check seeds).
    let debug = std::env::var_os("PHASE2_DEBUG").is_some();
    let mut at = now;
    for _ in 0..8 {
        let Some(&[flags, m0, m1, m2, m3, first_in, hi, lo]) = take(&mut rest, 8) else {
            break;
        };
        let len = usize::from(u16::from_be_bytes([hi, lo])).min(rest.len());
        let Some(input_chain) = take(&mut rest, len) else {
            break;
        };
        let (first, owned);
        let chain: &[u8] = if flags & 64 != 0 && !genuine.1.is_empty() {
            let mut c = genuine.1.clone();
            let n = c.len();
            for (i, b) in input_chain.iter().enumerate() {
                if let Some(x) = c.get_mut(i % n) {
                    *x ^= b;
                }
            }
            (first, owned) = (genuine.0, c);
            &owned
        } else {
            first = first_in;
            input_chain
        };
        let message_id = if flags & 16 != 0 {
            qm_id
        } else {
            u32::from_be_bytes([m0, m1, m2, m3])
        };
        let exchange = if flags & 2 != 0 {
            ExchangeType::INFORMATIONAL
        } else {
            ExchangeType::QUICK_MODE
        };
        // The chain as far as it parses: what the receiver hashes (padding excluded).
        let parsed = parse_payloads(PayloadType(first), chain).ok();
        let hashed_len = parsed
            .as_ref()
            .and_then(|p| p.last().map(|l| l.offset + l.raw.len()))
            .unwrap_or(chain.len());
        let ni = parsed.as_ref().and_then(|p| {
            p.iter()
                .find(|r| r.payload_type == PayloadType::NONCE)
                .map(|r| r.body.to_vec())
        });
        let mut plain = Vec::new();
        let next_payload = if flags & 8 != 0 {
            // HASH(1) = prf(SKEYID_a, M-ID | rest), the same formula for Quick Mode and
            // Informational (RFC 2409 sections 5.5 and 5.7).
            let hash = ipsec_crypto::ikev1::qm_hash1(
                HashAlgorithm::Sha1,
                &skeyid_a,
                message_id,
                chain.get(..hashed_len).unwrap_or(chain),
            );
            plain.extend_from_slice(&[first, 0, 0, 24]);
            plain.extend_from_slice(hash.as_bytes());
            PayloadType::HASH
        } else {
            PayloadType(first)
        };
        plain.extend_from_slice(chain);
        let encrypted = flags & 4 == 0;
        let Some(m) = seal(
            &cipher,
            &mut ivs,
            last_block,
            (cky_i, cky_r),
            exchange,
            message_id,
            next_payload,
            plain,
            encrypted,
        ) else {
            continue;
        };
        at += Duration::from_millis(100);
        let (to, local, remote) = if flags & 1 != 0 {
            (&mut left, la, ra)
        } else {
            (&mut right, ra, la)
        };
        to.handle_datagram(at, local, remote, &m);
        let mut answer = None;
        while let Some(t) = to.poll_transmit() {
            let same = t.payload.get(18) == Some(&32)
                && t.payload.get(20..24) == Some(&message_id.to_be_bytes()[..]);
            if same && answer.is_none() {
                answer = Some(t.payload);
            }
        }

        // Finish the Quick Mode: QM3 = HDR*, HASH(3).
        if let (true, Some(qm2), Some(ni)) = (flags & 32 != 0, answer, ni) {
            let Some(nr) = open_nonce(&cipher, &mut ivs, message_id, &qm2) else {
                continue;
            };
            let h3 =
                ipsec_crypto::ikev1::qm_hash3(HashAlgorithm::Sha1, &skeyid_a, message_id, &ni, &nr);
            let mut qm3 = vec![0, 0, 0, 24];
            qm3.extend_from_slice(h3.as_bytes());
            let Some(m) = seal(
                &cipher,
                &mut ivs,
                last_block,
                (cky_i, cky_r),
                ExchangeType::QUICK_MODE,
                message_id,
                PayloadType::HASH,
                qm3,
                true,
            ) else {
                continue;
            };
            to.handle_datagram(at, local, remote, &m);
        }
        while left.poll_transmit().is_some() {}
        while right.poll_transmit().is_some() {}
        for ep in [&mut left, &mut right] {
            while let Some(e) = ep.poll_event() {
                if debug {
                    eprintln!("phase2_messages: {e:?}");
                }
            }
        }
    }
    for ep in [&mut left, &mut right] {
        ep.handle_timeout(at + Duration::from_secs(3600));
        ep.shutdown(at + Duration::from_secs(3601));
        while ep.poll_transmit().is_some() {}
        while ep.poll_event().is_some() {}
    }
});

/// Builds a message, encrypting `plain` with Ka on the message ID's IV chain (RFC 2409
/// Appendix B) unless `encrypted` is false.
#[allow(clippy::too_many_arguments)]
fn seal(
    cipher: &Cipher,
    ivs: &mut HashMap<u32, Vec<u8>>,
    last_block: &[u8],
    (cky_i, cky_r): ([u8; 8], [u8; 8]),
    exchange: ExchangeType,
    message_id: u32,
    next_payload: PayloadType,
    mut body: Vec<u8>,
    encrypted: bool,
) -> Option<Vec<u8>> {
    if encrypted {
        body.resize(body.len().div_ceil(16) * 16, 0);
        let iv = ivs.get(&message_id).cloned().unwrap_or_else(|| {
            ipsec_crypto::ikev1::phase2_iv(HashAlgorithm::Sha1, last_block, message_id, 16)
        });
        cipher.encrypt_cbc(&iv, &mut body).ok()?;
        ivs.insert(
            message_id,
            body.get(body.len().checked_sub(16)?..)?.to_vec(),
        );
    }
    let header = Header {
        initiator_cookie: cky_i,
        responder_cookie: cky_r,
        next_payload,
        version: 0x10,
        exchange_type: exchange,
        flags: Flags(u8::from(encrypted)),
        message_id,
        length: u32::try_from(28 + body.len()).ok()?,
    };
    let mut m = Vec::new();
    header.encode(&mut m);
    m.extend_from_slice(&body);
    Some(m)
}

/// Decrypts an answer on `message_id`'s IV chain and returns its Nonce payload's body.
fn open_nonce(
    cipher: &Cipher,
    ivs: &mut HashMap<u32, Vec<u8>>,
    message_id: u32,
    message: &[u8],
) -> Option<Vec<u8>> {
    let first = PayloadType(*message.get(16)?);
    let mut body = message.get(28..)?.to_vec();
    let iv = ivs.get(&message_id)?.clone();
    let next_iv = body.get(body.len().checked_sub(16)?..)?.to_vec();
    cipher.decrypt_cbc(&iv, &mut body).ok()?;
    ivs.insert(message_id, next_iv);
    let payloads = parse_payloads(first, &body).ok()?;
    let nonce = payloads
        .iter()
        .find(|r| r.payload_type == PayloadType::NONCE)?;
    Some(nonce.body.to_vec())
}

/// The genuine QM1's payload chain after its HASH (RFC 2409 section 5.5: SA, Ni, IDci,
/// IDcr), decrypted with the phase-2 IV of its message ID, and the type of its first
/// payload.
fn genuine_chain(
    cipher: &Cipher,
    last_block: &[u8],
    message_id: u32,
    qm1: &[u8],
) -> Option<(u8, Vec<u8>)> {
    let mut body = qm1.get(28..)?.to_vec();
    let iv = ipsec_crypto::ikev1::phase2_iv(HashAlgorithm::Sha1, last_block, message_id, 16);
    cipher.decrypt_cbc(&iv, &mut body).ok()?;
    let payloads = parse_payloads(PayloadType(*qm1.get(16)?), &body).ok()?;
    let (hash, last) = (payloads.first()?, payloads.last()?);
    let next = *hash.raw.first()?;
    let end = last.offset + last.raw.len();
    Some((next, body.get(hash.raw.len()..end)?.to_vec()))
}
