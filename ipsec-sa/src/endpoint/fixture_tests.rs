//! Our message protection against every encrypted message strongSwan exchanged in the
//! fixtures of `/work/shared/fixtures`: the IV chains (RFC 2409 Appendix B), decryption,
//! the HASH payload inputs (padding excluded), and sealing back to the captured bytes.

use std::path::PathBuf;

use ipsec_crypto::ikev1::{self, Phase1Keys};
use ipsec_crypto::{EncryptionAlgorithm, HashAlgorithm, SecretBytes};
use ipsec_proto::isakmp::{Message, Payload, PayloadType, RawPayload, SaPayload};
use serde_json::Value;

use super::config::{Phase1Proposal, Phase2Proposal};
use super::ike_sa::Contents;
use super::message::{self, IsakmpKeys};
use super::natt::NatTVariant;
use super::proposal;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures")
}

fn load(name: &str) -> Value {
    let path = fixtures_dir().join(name).join("session.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("fixture {} is missing ({e})", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn hx(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn cookie(v: &Value) -> [u8; 8] {
    hx(v).try_into().unwrap()
}

fn cipher(p1: &Value) -> EncryptionAlgorithm {
    match (
        p1["encryption"]["value"].as_u64(),
        p1["encryption"]["key_length_bits"].as_u64(),
    ) {
        (Some(1), _) => EncryptionAlgorithm::DesCbc,
        (Some(5), _) => EncryptionAlgorithm::TripleDesCbc,
        (Some(7), Some(128)) => EncryptionAlgorithm::AesCbc128,
        (Some(7), Some(192)) => EncryptionAlgorithm::AesCbc192,
        (Some(7), Some(256)) => EncryptionAlgorithm::AesCbc256,
        other => panic!("cipher {other:?}"),
    }
}

fn prf(p1: &Value) -> HashAlgorithm {
    match p1["hash"]["value"].as_u64() {
        Some(1) => HashAlgorithm::Md5,
        Some(2) => HashAlgorithm::Sha1,
        Some(4) => HashAlgorithm::Sha256,
        Some(5) => HashAlgorithm::Sha384,
        Some(6) => HashAlgorithm::Sha512,
        other => panic!("hash {other:?}"),
    }
}

fn keys(s: &Value) -> IsakmpKeys {
    let p1 = &s["phase1"];
    let k = Phase1Keys {
        skeyid: SecretBytes::new(hx(&p1["skeyid"])),
        skeyid_d: SecretBytes::new(hx(&p1["skeyid_d"])),
        skeyid_a: SecretBytes::new(hx(&p1["skeyid_a"])),
        skeyid_e: SecretBytes::new(hx(&p1["skeyid_e"])),
        encryption_key: SecretBytes::new(hx(&p1["ka"])),
    };
    IsakmpKeys::new(prf(p1), cipher(p1), k, &hx(&p1["g_xi"]), &hx(&p1["g_xr"])).unwrap()
}

fn hash_payload<'a>(raw: &[RawPayload<'a>]) -> &'a [u8] {
    let first = raw.first().unwrap();
    assert_eq!(first.payload_type, PayloadType::HASH);
    first.body
}

/// Replays every encrypted message of one fixture through [`IsakmpKeys`].
fn replay(name: &str) -> usize {
    let s = load(name);
    let p1 = &s["phase1"];
    let (alg, hash) = (cipher(p1), prf(p1));
    let (cky_i, cky_r) = (cookie(&p1["cky_i"]), cookie(&p1["cky_r"]));
    let mut keys = keys(&s);
    let mut per_mid: std::collections::HashMap<u32, usize> = Default::default();
    let mut checked = 0;

    for m in s["messages"].as_array().unwrap() {
        if !m["encrypted"].as_bool().unwrap() || !m["retransmission_of"].is_null() {
            continue;
        }
        let frame = m["frame"].as_u64().unwrap();
        let wire = hx(&m["isakmp_hex"]);
        let msg = Message::parse(&wire).unwrap();
        let mid = msg.header.message_id;
        let exchange = msg.header.exchange_type.0;
        let informational = exchange == message::exchange::INFORMATIONAL;
        let chain_len = usize::try_from(m["payload_chain_length"].as_u64().unwrap()).unwrap();

        // Sealing the recorded plaintext chain gives the recorded bytes whenever the
        // sender padded minimally, as we do.
        let plain_expected = hx(&m["plaintext_hex"]);
        let padding = plain_expected.len() - chain_len;
        if padding < alg.block_len() {
            let sealed = keys
                .seal(
                    cky_i,
                    cky_r,
                    exchange,
                    mid,
                    msg.header.next_payload,
                    &plain_expected[..chain_len],
                    true,
                )
                .unwrap();
            assert_eq!(
                hex::encode(&sealed),
                hex::encode(&wire),
                "{name} frame {frame}: seal"
            );
        }

        let (plain, next_iv) = keys.open(mid, msg.body).unwrap();
        assert_eq!(plain, plain_expected, "{name} frame {frame}: plaintext");
        let raw = message::payloads(msg.header.next_payload, &plain).unwrap();
        let after = message::after_first(&plain, &raw);
        let n = per_mid.entry(mid).or_default();
        *n += 1;

        let initiator_sent = m["direction"].as_str() == Some("initiator->responder");
        match (exchange, mid) {
            (_, 0) => {
                // MM5/MM6 (AM3): HASH_I or HASH_R over SAi_b and the ID payload body.
                let c = Contents::decode(&raw).unwrap();
                let (g_xi, g_xr, sai_b) = (hx(&p1["g_xi"]), hx(&p1["g_xr"]), hx(&p1["sai_b"]));
                // AM3 carries no ID: the initiator's went in clear in AM1.
                let idii_b = hx(&p1["idii_b"]);
                let id = c.id_bodies.first().unwrap_or(&idii_b);
                let expected = if initiator_sent {
                    ikev1::hash_i(hash, &keys.skeyid, &g_xi, &g_xr, &cky_i, &cky_r, &sai_b, id)
                } else {
                    ikev1::hash_r(hash, &keys.skeyid, &g_xr, &g_xi, &cky_r, &cky_i, &sai_b, id)
                };
                assert!(
                    expected.ct_eq(c.hash.as_deref().unwrap()),
                    "{name} frame {frame}: HASH_I/R"
                );
            }
            (message::exchange::QUICK, _) => {
                let qm = s["quick_modes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|q| q["message_id"].as_u64() == Some(u64::from(mid)))
                    .unwrap();
                // libreswan never answered QM1 there: no Nr.
                let ni_b = hx(&qm["ni_b"]);
                let nr_b = if qm["nr_b"].is_null() {
                    Vec::new()
                } else {
                    hx(&qm["nr_b"])
                };
                let expected = match *n {
                    1 => ikev1::qm_hash1(hash, &keys.skeyid_a, mid, after),
                    2 => ikev1::qm_hash2(hash, &keys.skeyid_a, mid, &ni_b, after),
                    _ => ikev1::qm_hash3(hash, &keys.skeyid_a, mid, &ni_b, &nr_b),
                };
                assert!(
                    expected.ct_eq(hash_payload(&raw)),
                    "{name} frame {frame}: HASH({n})"
                );
            }
            _ => {
                assert!(informational, "{name} frame {frame}: exchange {exchange}");
                let expected = ikev1::informational_hash(hash, &keys.skeyid_a, mid, after);
                assert!(
                    expected.ct_eq(hash_payload(&raw)),
                    "{name} frame {frame}: informational HASH"
                );
            }
        }
        if !informational {
            keys.commit_iv(mid, next_iv);
        }
        checked += 1;
    }
    // After phase 1 the chain holds the last phase-1 CBC block (the base of phase-2 IVs).
    let last = hx(&p1["last_phase1_cbc_block"]);
    assert_eq!(keys.iv_for_test(0), last, "{name}: last phase-1 block");
    checked
}

#[test]
fn every_encrypted_fixture_message_opens_verifies_and_reseals() {
    let mut total = 0;
    for name in [
        "mm-aes128-sha1-modp2048-pfs",
        "mm-3des-md5-modp1024",
        "mm-aes192-sha256-modp1536-pfs14",
        "mm-des-sha1-modp1024",
        "natt-mm-aes128-sha1-modp2048",
        "dpd-idle",
        "libreswan-mm-aes128-sha1-modp2048",
        "am-aes256-sha256-modp2048",
    ] {
        let n = replay(name);
        assert!(n >= 3, "{name}: only {n} encrypted messages");
        total += n;
    }
    // 7 + 7 + 7 + 7 + 7 + 17 + 5 + 6 encrypted first transmissions.
    assert!(total >= 60, "{total}");
}

fn sa_of(s: &Value, frame: u64, mid_plain: bool) -> (SaPayload, Vec<u8>) {
    let m = s["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["frame"].as_u64() == Some(frame))
        .unwrap();
    let (first, body) = if mid_plain {
        let wire = hx(&m["isakmp_hex"]);
        let msg = Message::parse(&wire).unwrap();
        (msg.header.next_payload, msg.body.to_vec())
    } else {
        let wire = hx(&m["isakmp_hex"]);
        let msg = Message::parse(&wire).unwrap();
        (msg.header.next_payload, hx(&m["plaintext_hex"]))
    };
    let raw = message::payloads(first, &body).unwrap();
    let c = Contents::decode(&raw).unwrap();
    let vids: Vec<u8> = c.vendor_ids.concat();
    (c.sa.unwrap(), vids)
}

#[test]
fn our_offers_encode_like_strongswan() {
    let s = load("mm-aes128-sha1-modp2048-pfs");
    // SAi_b: the body of MM1's SA payload.
    let ours = proposal::phase1_offer(
        &[Phase1Proposal::default()],
        std::time::Duration::from_secs(15_840),
    );
    assert_eq!(
        hex::encode(Payload::Sa(ours).body_bytes()),
        s["phase1"]["sai_b"].as_str().unwrap()
    );

    // QM1's SA payload, with strongSwan's SPI and lifetime.
    let (theirs, _) = sa_of(&s, 7, false);
    let ours = proposal::phase2_offer(
        &[Phase2Proposal::default()],
        Some(ipsec_crypto::DhGroup::Modp2048),
        3,
        std::time::Duration::from_secs(3_960),
        None,
        0x89a5_b7f5,
    );
    assert_eq!(ours, theirs);
}

#[test]
fn strongswan_answers_pass_our_checks() {
    let s = load("mm-aes128-sha1-modp2048-pfs");
    // MM1 as responder: we choose its only transform; MM2 as initiator: accepted.
    let (mm1, vids1) = sa_of(&s, 1, true);
    let (_, choice) = proposal::choose_phase1(&mm1, &[Phase1Proposal::default()]).unwrap();
    assert_eq!(
        choice.lifetime,
        Some(std::time::Duration::from_secs(15_840))
    );
    let (mm2, _) = sa_of(&s, 2, true);
    let c = proposal::check_phase1_answer(&mm2, &[Phase1Proposal::default()]).unwrap();
    assert_eq!(c.proposal, Phase1Proposal::default());
    assert!(!vids1.is_empty());

    // QM1 as responder: UDP tunnel (3) accepted with RFC 3947; QM2 as initiator.
    let (qm1, _) = sa_of(&s, 7, false);
    let (spi, c) = proposal::choose_phase2(
        &qm1,
        &[Phase2Proposal::default()],
        Some(ipsec_crypto::DhGroup::Modp2048),
        &[1, 3],
    )
    .unwrap();
    assert_eq!(spi, 0x89a5_b7f5);
    assert_eq!(c.life_seconds, Some(3_960));
    let (qm2, _) = sa_of(&s, 8, false);
    let (spi, _) = proposal::check_phase2_answer(
        &qm2,
        &[Phase2Proposal::default()],
        Some(ipsec_crypto::DhGroup::Modp2048),
        3,
    )
    .unwrap();
    assert_eq!(spi, 0x44e3_8204);
}

#[test]
fn strongswan_vendor_ids_select_rfc3947() {
    let s = load("mm-aes128-sha1-modp2048-pfs");
    let vids: Vec<Vec<u8>> = s["phase1"]["vendor_ids"]["responder->initiator"]
        .as_array()
        .unwrap()
        .iter()
        .map(hx)
        .collect();
    assert_eq!(
        NatTVariant::from_vendor_ids(vids.iter().map(Vec::as_slice)),
        Some(NatTVariant::Rfc3947)
    );
    assert!(super::natt::has_dpd_vendor_id(
        vids.iter().map(Vec::as_slice)
    ));
}
