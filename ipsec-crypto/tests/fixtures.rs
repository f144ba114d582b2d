//! Recomputes every derived value of the captured strongSwan/libreswan exchanges in
//! `shared/fixtures/*/session.json` and checks it byte for byte (see the README there).

#![expect(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test, naming the fixture, on unexpected data"
)]

use std::path::PathBuf;

use ipsec_crypto::{
    ikev1, Cipher, DhGroup, EncryptionAlgorithm, HashAlgorithm, Integrity, IntegrityAlgorithm,
    SecretBytes,
};
use serde_json::Value;

/// One fixture: its directory name and parsed `session.json`.
struct Fixture {
    name: String,
    json: Value,
}

fn fixtures() -> Vec<Fixture> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "fixtures not found at {}: {e} (expected /work/shared/fixtures next to the repo)",
            dir.display()
        )
    });
    let mut out: Vec<Fixture> = entries
        .filter_map(|e| {
            let path = e.ok()?.path().join("session.json");
            let text = std::fs::read_to_string(&path).ok()?;
            let json: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: invalid JSON: {e}", path.display()));
            let name = path.parent()?.file_name()?.to_string_lossy().into_owned();
            Some(Fixture { name, json })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(
        out.len() >= 8,
        "expected at least 8 fixtures with session.json under {}, found {}",
        dir.display(),
        out.len()
    );
    out
}

fn hex(v: &Value) -> Vec<u8> {
    hex::decode(
        v.as_str()
            .unwrap_or_else(|| panic!("not a hex string: {v}")),
    )
    .unwrap_or_else(|e| panic!("bad hex {v}: {e}"))
}

fn cookie(v: &Value) -> [u8; 8] {
    hex(v).try_into().expect("cookie is 8 bytes")
}

fn u32_of(v: &Value) -> u32 {
    u32::try_from(v.as_u64().expect("integer")).expect("fits u32")
}

fn hash_alg(phase1: &Value) -> HashAlgorithm {
    match phase1["hash"]["name"].as_str().unwrap() {
        "MD5" => HashAlgorithm::Md5,
        "SHA1" => HashAlgorithm::Sha1,
        "SHA2-256" => HashAlgorithm::Sha256,
        "SHA2-384" => HashAlgorithm::Sha384,
        "SHA2-512" => HashAlgorithm::Sha512,
        other => panic!("unknown hash {other}"),
    }
}

fn cipher_alg(phase1: &Value) -> EncryptionAlgorithm {
    let enc = &phase1["encryption"];
    match (
        enc["name"].as_str().unwrap(),
        enc["key_length_bits"].as_u64().unwrap(),
    ) {
        ("DES-CBC", _) => EncryptionAlgorithm::DesCbc,
        ("3DES-CBC", _) => EncryptionAlgorithm::TripleDesCbc,
        ("AES-CBC", 128) => EncryptionAlgorithm::AesCbc128,
        ("AES-CBC", 192) => EncryptionAlgorithm::AesCbc192,
        ("AES-CBC", 256) => EncryptionAlgorithm::AesCbc256,
        other => panic!("unknown cipher {other:?}"),
    }
}

/// ESP transform (RFC 2407 4.4.4 transform ID, key length) to our cipher.
fn esp_cipher(chosen: &Value) -> EncryptionAlgorithm {
    match (
        chosen["transform_id"].as_u64().unwrap(),
        chosen["key_length_bits"].as_u64(),
    ) {
        (2, _) => EncryptionAlgorithm::DesCbc,
        (3, _) => EncryptionAlgorithm::TripleDesCbc,
        (12, Some(128)) => EncryptionAlgorithm::AesCbc128,
        (12, Some(192)) => EncryptionAlgorithm::AesCbc192,
        (12, Some(256)) => EncryptionAlgorithm::AesCbc256,
        other => panic!("unknown ESP transform {other:?}"),
    }
}

/// ESP authentication algorithm attribute (RFC 2407 4.5) to our integrity algorithm.
fn esp_integrity(chosen: &Value) -> IntegrityAlgorithm {
    match chosen["auth_algorithm"].as_u64().unwrap() {
        1 => IntegrityAlgorithm::HmacMd5_96,
        2 => IntegrityAlgorithm::HmacSha1_96,
        5 => IntegrityAlgorithm::HmacSha256_128,
        6 => IntegrityAlgorithm::HmacSha384_192,
        7 => IntegrityAlgorithm::HmacSha512_256,
        other => panic!("unknown ESP auth {other}"),
    }
}

/// The phase-1 keys recomputed from the PSK, nonces and g^xy.
fn phase1_keys(f: &Fixture) -> ikev1::Phase1Keys {
    let p1 = &f.json["phase1"];
    let prf = hash_alg(p1);
    let skeyid = ikev1::skeyid_psk(
        prf,
        &hex(&f.json["psk_hex"]),
        &hex(&p1["ni_b"]),
        &hex(&p1["nr_b"]),
    );
    ikev1::phase1_keys(
        prf,
        skeyid,
        &hex(&p1["g_xy"]),
        &cookie(&p1["cky_i"]),
        &cookie(&p1["cky_r"]),
        cipher_alg(p1),
    )
}

fn assert_secret(name: &str, what: &str, got: &SecretBytes, want: &Value) {
    assert_eq!(
        hex::encode(got.expose()),
        want.as_str().unwrap(),
        "{name}: {what} differs"
    );
}

/// Splits a decrypted payload chain that starts with a HASH payload into the HASH value
/// and the bytes after it up to the end of the chain (RFC 2409 section 5.5, 5.7).
fn split_after_hash<'a>(
    name: &str,
    message: &'a Value,
    plaintext: &'a [u8],
) -> (&'a [u8], &'a [u8]) {
    let isakmp = hex(&message["isakmp_hex"]);
    assert_eq!(
        isakmp[16], 8,
        "{name}: frame {} does not start with HASH",
        message["frame"]
    );
    let hash_len = usize::from(u16::from_be_bytes([plaintext[2], plaintext[3]]));
    let chain_len = usize::try_from(message["payload_chain_length"].as_u64().unwrap()).unwrap();
    (&plaintext[4..hash_len], &plaintext[hash_len..chain_len])
}

fn message_by_frame<'a>(f: &'a Fixture, frame: &Value) -> &'a Value {
    f.json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["frame"] == *frame)
        .unwrap_or_else(|| panic!("{}: no message for frame {frame}", f.name))
}

#[test]
fn fixture_phase1_key_schedule_matches() {
    for f in fixtures() {
        let p1 = &f.json["phase1"];
        let keys = phase1_keys(&f);
        assert_secret(&f.name, "SKEYID", &keys.skeyid, &p1["skeyid"]);
        assert_secret(&f.name, "SKEYID_d", &keys.skeyid_d, &p1["skeyid_d"]);
        assert_secret(&f.name, "SKEYID_a", &keys.skeyid_a, &p1["skeyid_a"]);
        assert_secret(&f.name, "SKEYID_e", &keys.skeyid_e, &p1["skeyid_e"]);
        assert_secret(&f.name, "Ka", &keys.encryption_key, &p1["ka"]);
    }
}

#[test]
fn fixture_ka_expansion_is_exercised() {
    // mm-3des-md5-modp1024: SKEYID_e (16 bytes of MD5) is shorter than the 24-byte 3DES key.
    let fixtures = fixtures();
    let expanded: Vec<&Fixture> = fixtures
        .iter()
        .filter(|f| f.json["phase1"]["ka_expanded"] == Value::Bool(true))
        .collect();
    assert!(
        !expanded.is_empty(),
        "no fixture exercises Appendix B expansion"
    );
    for f in expanded {
        let p1 = &f.json["phase1"];
        let keys = phase1_keys(f);
        let blocks: String = p1["ka_expansion_blocks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_str().unwrap())
            .collect();
        assert!(blocks.starts_with(&hex::encode(keys.encryption_key.expose())));
    }
}

#[test]
fn fixture_phase1_iv_and_auth_hashes_match() {
    for f in fixtures() {
        let p1 = &f.json["phase1"];
        let prf = hash_alg(p1);
        let cipher = cipher_alg(p1);
        let keys = phase1_keys(&f);
        let (g_xi, g_xr) = (hex(&p1["g_xi"]), hex(&p1["g_xr"]));
        let (cky_i, cky_r) = (cookie(&p1["cky_i"]), cookie(&p1["cky_r"]));

        let iv = ikev1::phase1_iv(prf, &g_xi, &g_xr, cipher.block_len());
        assert_eq!(iv, hex(&p1["initial_iv"]), "{}: initial IV", f.name);

        let sai_b = hex(&p1["sai_b"]);
        let hash_i = ikev1::hash_i(
            prf,
            &keys.skeyid,
            &g_xi,
            &g_xr,
            &cky_i,
            &cky_r,
            &sai_b,
            &hex(&p1["idii_b"]),
        );
        assert_eq!(hash_i.as_bytes(), hex(&p1["hash_i"]), "{}: HASH_I", f.name);
        let hash_r = ikev1::hash_r(
            prf,
            &keys.skeyid,
            &g_xr,
            &g_xi,
            &cky_r,
            &cky_i,
            &sai_b,
            &hex(&p1["idir_b"]),
        );
        assert_eq!(hash_r.as_bytes(), hex(&p1["hash_r"]), "{}: HASH_R", f.name);
    }
}

#[test]
fn fixture_dh_public_values_have_modulus_length() {
    for f in fixtures() {
        let p1 = &f.json["phase1"];
        let id = u16::try_from(p1["dh_group"].as_u64().unwrap()).unwrap();
        let group = DhGroup::from_id(id).unwrap();
        for field in ["g_xi", "g_xr", "g_xy"] {
            assert_eq!(
                hex(&p1[field]).len(),
                group.modulus_len(),
                "{}: {field}",
                f.name
            );
        }
        for qm in f.json["quick_modes"].as_array().unwrap() {
            let pfs = &qm["pfs"];
            if pfs.is_null() {
                continue;
            }
            let id = u16::try_from(pfs["group"].as_u64().unwrap()).unwrap();
            let group = DhGroup::from_id(id).unwrap();
            for field in ["g_qm_xi", "g_qm_xr", "g_qm_xy"] {
                if !pfs[field].is_null() {
                    assert_eq!(
                        hex(&pfs[field]).len(),
                        group.modulus_len(),
                        "{}: {field}",
                        f.name
                    );
                }
            }
        }
    }
}

#[test]
fn fixture_phase2_ivs_match_iv_log() {
    let mut first_ivs = 0;
    for f in fixtures() {
        let p1 = &f.json["phase1"];
        let prf = hash_alg(p1);
        let block_len = cipher_alg(p1).block_len();
        let last_block = hex(&p1["last_phase1_cbc_block"]);
        for entry in f.json["iv_log"].as_array().unwrap() {
            let equals = entry["equals"].as_str().unwrap();
            if equals.starts_with("first IV of MID") {
                let mid = u32_of(&entry["mid"]);
                let iv = ikev1::phase2_iv(prf, &last_block, mid, block_len);
                assert_eq!(
                    iv,
                    hex(&entry["iv"]),
                    "{}: first IV of MID {mid:08x}",
                    f.name
                );
                first_ivs += 1;
            }
        }
    }
    assert!(first_ivs >= 8, "only {first_ivs} phase-2 IVs checked");
}

#[test]
fn fixture_encrypted_messages_decrypt_with_ka() {
    let mut decrypted = 0;
    for f in fixtures() {
        let keys = phase1_keys(&f);
        let cipher =
            Cipher::new(cipher_alg(&f.json["phase1"]), keys.encryption_key.expose()).unwrap();
        for m in f.json["messages"].as_array().unwrap() {
            if m["encrypted"] != Value::Bool(true) {
                continue;
            }
            let isakmp = hex(&m["isakmp_hex"]);
            let mut body = isakmp[28..].to_vec();
            cipher.decrypt_cbc(&hex(&m["iv"]), &mut body).unwrap();
            assert_eq!(
                body,
                hex(&m["plaintext_hex"]),
                "{}: frame {}",
                f.name,
                m["frame"]
            );
            // And back: encryption reproduces the wire bytes.
            cipher.encrypt_cbc(&hex(&m["iv"]), &mut body).unwrap();
            assert_eq!(body, &isakmp[28..]);
            decrypted += 1;
        }
    }
    assert!(decrypted >= 40, "only {decrypted} messages decrypted");
}

#[test]
fn fixture_quick_mode_hashes_match() {
    let mut checked = 0;
    for f in fixtures() {
        let prf = hash_alg(&f.json["phase1"]);
        let keys = phase1_keys(&f);
        for qm in f.json["quick_modes"].as_array().unwrap() {
            let mid = u32_of(&qm["message_id"]);
            let ni_b = hex(&qm["ni_b"]);
            let retransmitted = qm["retransmitted_frames"].as_array().unwrap();
            let frames: Vec<&Value> = qm["frames"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|fr| !retransmitted.contains(fr))
                .collect();

            for (i, frame) in frames.iter().enumerate() {
                let m = message_by_frame(&f, frame);
                let plaintext = hex(&m["plaintext_hex"]);
                let (hash, after) = split_after_hash(&f.name, m, &plaintext);
                let (computed, want) = match i {
                    0 => (
                        ikev1::qm_hash1(prf, &keys.skeyid_a, mid, after),
                        &qm["hash_1"],
                    ),
                    1 => (
                        ikev1::qm_hash2(prf, &keys.skeyid_a, mid, &ni_b, after),
                        &qm["hash_2"],
                    ),
                    _ => {
                        let nr_b = hex(&qm["nr_b"]);
                        (
                            ikev1::qm_hash3(prf, &keys.skeyid_a, mid, &ni_b, &nr_b),
                            &qm["hash_3"],
                        )
                    }
                };
                assert_eq!(
                    computed.as_bytes(),
                    hash,
                    "{}: QM HASH({}) vs wire",
                    f.name,
                    i + 1
                );
                assert_eq!(
                    computed.as_bytes(),
                    hex(want),
                    "{}: QM HASH({})",
                    f.name,
                    i + 1
                );
                assert!(computed.ct_eq(hash));
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} Quick Mode hashes checked");
}

#[test]
fn fixture_informational_hashes_match() {
    let mut checked = 0;
    for f in fixtures() {
        let prf = hash_alg(&f.json["phase1"]);
        let keys = phase1_keys(&f);
        for info in f.json["informationals"].as_array().unwrap() {
            if info["encrypted"] != Value::Bool(true) {
                continue;
            }
            let m = message_by_frame(&f, &info["frame"]);
            let plaintext = hex(&m["plaintext_hex"]);
            let (hash, after) = split_after_hash(&f.name, m, &plaintext);
            let mid = u32_of(&info["message_id"]);
            let computed = ikev1::informational_hash(prf, &keys.skeyid_a, mid, after);
            assert_eq!(
                computed.as_bytes(),
                hash,
                "{}: frame {}",
                f.name,
                info["frame"]
            );
            assert_eq!(computed.as_bytes(), hex(&info["hash"]));
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} informational hashes checked");
}

#[test]
fn fixture_keymat_matches() {
    let mut checked = 0;
    for f in fixtures() {
        let prf = hash_alg(&f.json["phase1"]);
        let keys = phase1_keys(&f);
        for qm in f.json["quick_modes"].as_array().unwrap() {
            let Some(sas) = qm["sas"].as_array() else {
                continue;
            };
            let chosen = &qm["proposal_chosen"];
            let protocol = u8::try_from(chosen["protocol_id"].as_u64().unwrap()).unwrap();
            let enc_len =
                usize::try_from(chosen["encryption_key_bytes"].as_u64().unwrap()).unwrap();
            let int_len = usize::try_from(chosen["integrity_key_bytes"].as_u64().unwrap()).unwrap();
            let g_qm_xy = (!qm["pfs"].is_null()).then(|| hex(&qm["pfs"]["g_qm_xy"]));
            for sa in sas {
                let spi = u32::from_be_bytes(hex(&sa["spi"]).try_into().unwrap());
                let keymat = ikev1::keymat(
                    prf,
                    &keys.skeyid_d,
                    g_qm_xy.as_deref(),
                    protocol,
                    spi,
                    &hex(&qm["ni_b"]),
                    &hex(&qm["nr_b"]),
                    enc_len + int_len,
                );
                assert_secret(&f.name, "KEYMAT", &keymat, &sa["keymat"]);
                checked += 1;
            }
        }
    }
    assert!(checked >= 14, "only {checked} KEYMATs checked");
}

#[test]
fn fixture_esp_packets_verify_and_decrypt() {
    let mut checked = 0;
    for f in fixtures() {
        for pkt in f.json["esp_packets"].as_array().unwrap() {
            let qm = f.json["quick_modes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|q| q["message_id_hex"] == pkt["quick_mode_message_id_hex"])
                .expect("quick mode of the packet");
            let sa = qm["sas"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["spi"] == pkt["spi"])
                .expect("SA of the packet");
            let chosen = &qm["proposal_chosen"];
            let cipher = Cipher::new(esp_cipher(chosen), &hex(&sa["encryption_key"])).unwrap();
            let integrity =
                Integrity::new(esp_integrity(chosen), &hex(&sa["integrity_key"])).unwrap();

            // RFC 4303 section 2: SPI | seq | IV | ciphertext | ICV.
            let esp = hex(&pkt["esp_hex"]);
            let icv_len = integrity.icv_len();
            let (authenticated, icv) = esp.split_at(esp.len() - icv_len);
            assert!(
                integrity.verify(&[authenticated], icv),
                "{}: frame {}",
                f.name,
                pkt["frame"]
            );
            let mut computed = vec![0u8; icv_len];
            integrity
                .compute(&[&authenticated[..8], &authenticated[8..]], &mut computed)
                .unwrap();
            assert_eq!(computed, hex(&pkt["icv"]));

            let bs = cipher.block_len();
            let iv = &authenticated[8..8 + bs];
            assert_eq!(iv, hex(&pkt["iv"]));
            let mut body = authenticated[8 + bs..].to_vec();
            cipher.decrypt_cbc(iv, &mut body).unwrap();
            let mut want = hex(&pkt["inner_ip_hex"]);
            want.extend(hex(&pkt["padding"]));
            want.push(u8::try_from(pkt["pad_length"].as_u64().unwrap()).unwrap());
            want.push(u8::try_from(pkt["next_header"].as_u64().unwrap()).unwrap());
            assert_eq!(body, want, "{}: frame {}", f.name, pkt["frame"]);
            checked += 1;
        }
    }
    assert!(checked >= 50, "only {checked} ESP packets checked");
}

/// Every encrypted message's IV follows RFC 2409 Appendix B: the first phase-1 IV is
/// H(g^xi | g^xr), the first IV of any other exchange is H(last phase-1 block | M-ID), and
/// every later message of an exchange continues from the last ciphertext block of the
/// previous one. A retransmission is a byte-identical copy, so it reuses the original's IV.
#[test]
fn fixture_iv_chains_follow_appendix_b() {
    use std::collections::HashMap;
    let mut checked = 0;
    for f in fixtures() {
        let p1 = &f.json["phase1"];
        let prf = hash_alg(p1);
        let block_len = cipher_alg(p1).block_len();
        let last_phase1 = hex(&p1["last_phase1_cbc_block"]);
        let mut next_iv: HashMap<u32, Vec<u8>> = HashMap::new();
        let mut iv_of_frame: HashMap<u64, Vec<u8>> = HashMap::new();
        next_iv.insert(
            0,
            ikev1::phase1_iv(prf, &hex(&p1["g_xi"]), &hex(&p1["g_xr"]), block_len),
        );

        for m in f.json["messages"].as_array().unwrap() {
            if m["encrypted"] != Value::Bool(true) {
                continue;
            }
            let frame = m["frame"].as_u64().unwrap();
            let iv = hex(&m["iv"]);
            if let Some(original) = m["retransmission_of"].as_u64() {
                assert_eq!(
                    Some(&iv),
                    iv_of_frame.get(&original),
                    "{}: frame {frame}",
                    f.name
                );
                continue;
            }
            let mid = u32_of(&m["message_id"]);
            let expected = next_iv
                .get(&mid)
                .cloned()
                .unwrap_or_else(|| ikev1::phase2_iv(prf, &last_phase1, mid, block_len));
            assert_eq!(iv, expected, "{}: frame {frame} (MID {mid:08x})", f.name);

            let isakmp = hex(&m["isakmp_hex"]);
            let last_block = isakmp[isakmp.len() - block_len..].to_vec();
            next_iv.insert(mid, last_block);
            iv_of_frame.insert(frame, iv);
            checked += 1;
        }
        assert_eq!(
            next_iv.get(&0),
            Some(&last_phase1),
            "{}: last phase-1 block",
            f.name
        );
    }
    assert!(checked >= 40, "only {checked} IVs checked");
}
