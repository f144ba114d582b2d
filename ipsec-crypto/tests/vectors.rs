//! Published known-answer tests, read from the data files in `tests/vectors/` (see the
//! header of each file for its sources).

#![expect(
    clippy::panic,
    reason = "test helpers fail the test, naming the vector, on unexpected data"
)]

use ipsec_crypto::{
    CbcJob, Cipher, CryptoError, DhGroup, DhPrivateKey, EncryptionAlgorithm, HashAlgorithm,
    Integrity, IntegrityAlgorithm, Prf,
};

/// One data line: its 1-based line number, the comment just above it, and its fields.
struct Vector<'a> {
    line: usize,
    name: &'a str,
    fields: Vec<&'a str>,
}

/// Parses a vector file: `#` lines name the vector on the next data line.
fn vectors(text: &str, fields: usize) -> Vec<Vector<'_>> {
    let mut name = "";
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(comment) = line.strip_prefix('#') {
            name = comment.trim();
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), fields, "line {}: expected {fields} fields", i + 1);
        out.push(Vector {
            line: i + 1,
            name,
            fields: f,
        });
    }
    out
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex {s}: {e}"))
}

fn hash_alg(name: &str) -> HashAlgorithm {
    match name {
        "md5" => HashAlgorithm::Md5,
        "sha1" => HashAlgorithm::Sha1,
        "sha256" => HashAlgorithm::Sha256,
        "sha384" => HashAlgorithm::Sha384,
        "sha512" => HashAlgorithm::Sha512,
        other => panic!("unknown hash {other}"),
    }
}

fn cipher_alg(name: &str) -> EncryptionAlgorithm {
    EncryptionAlgorithm::ALL
        .into_iter()
        .find(|a| format!("{a:?}") == name)
        .unwrap_or_else(|| panic!("unknown cipher {name}"))
}

fn integrity_alg(name: &str) -> IntegrityAlgorithm {
    IntegrityAlgorithm::ALL
        .into_iter()
        .find(|a| format!("{a:?}") == name)
        .unwrap_or_else(|| panic!("unknown integrity algorithm {name}"))
}

#[test]
fn hmac_matches_rfc2202_and_rfc4231() {
    let all = vectors(include_str!("vectors/hmac.txt"), 4);
    assert_eq!(all.len(), 32);
    for v in all {
        let prf = Prf::new(hash_alg(v.fields[0]), &unhex(v.fields[1]));
        let data = unhex(v.fields[2]);
        let want = unhex(v.fields[3]);
        assert_eq!(
            prf.compute_public(&[&data]).as_bytes(),
            want,
            "{} (line {})",
            v.name,
            v.line
        );
        assert!(prf.compute(&[&data]).ct_eq(&want), "{}", v.name);

        // The PRF covers the concatenation of its parts, wherever they are split.
        let (a, b) = data.split_at(data.len() / 3);
        assert_eq!(
            prf.compute_public(&[a, &[], b]).as_bytes(),
            want,
            "{}",
            v.name
        );
    }
}

#[test]
fn integrity_matches_rfc2202_and_rfc4868_truncated_vectors() {
    let all = vectors(include_str!("vectors/icv.txt"), 4);
    assert_eq!(all.len(), 16);
    for v in all {
        let alg = integrity_alg(v.fields[0]);
        let mac = Integrity::new(alg, &unhex(v.fields[1])).unwrap();
        let data = unhex(v.fields[2]);
        let want = unhex(v.fields[3]);
        assert_eq!(want.len(), alg.icv_len());

        let mut out = [0xa5u8; 40];
        mac.compute(&[&data], &mut out).unwrap();
        assert_eq!(&out[..alg.icv_len()], want, "{} (line {})", v.name, v.line);
        assert!(
            out[alg.icv_len()..].iter().all(|&b| b == 0xa5),
            "wrote past the ICV"
        );
        assert!(mac.verify(&[&data], &want), "{}", v.name);

        let mut wrong = want.clone();
        *wrong.last_mut().unwrap() ^= 1;
        assert!(!mac.verify(&[&data], &wrong), "{}", v.name);
    }
}

#[test]
fn cbc_matches_sp800_38a_rfc3602_fips81_and_sp800_67() {
    let all = vectors(include_str!("vectors/cbc.txt"), 5);
    assert_eq!(all.len(), 11);
    for alg in EncryptionAlgorithm::ALL {
        assert!(
            all.iter().any(|v| cipher_alg(v.fields[0]) == alg),
            "no vector for {alg:?}"
        );
    }
    for v in all {
        let cipher = Cipher::new(cipher_alg(v.fields[0]), &unhex(v.fields[1])).unwrap();
        let iv = unhex(v.fields[2]);
        let plaintext = unhex(v.fields[3]);
        let ciphertext = unhex(v.fields[4]);

        let mut buf = plaintext.clone();
        cipher.encrypt_cbc(&iv, &mut buf).unwrap();
        assert_eq!(buf, ciphertext, "{} (line {})", v.name, v.line);
        cipher.decrypt_cbc(&iv, &mut buf).unwrap();
        assert_eq!(buf, plaintext, "{} (line {})", v.name, v.line);
    }
}

/// `encrypt_cbc_many` against the same published answers: a CBC ciphertext's first `k`
/// blocks are the encryption of the plaintext's first `k`, so a batch of prefixes of each
/// vector (every length from none to all, some twice, more jobs than one group of lanes,
/// the shortest first, last and in the middle) must give the ciphertext's prefixes.
#[test]
fn cbc_many_matches_the_same_vectors_on_prefixes_of_mixed_length() {
    for v in vectors(include_str!("vectors/cbc.txt"), 5) {
        let alg = cipher_alg(v.fields[0]);
        let cipher = Cipher::new(alg, &unhex(v.fields[1])).unwrap();
        let iv = unhex(v.fields[2]);
        let plaintext = unhex(v.fields[3]);
        let ciphertext = unhex(v.fields[4]);
        let blocks = plaintext.len() / alg.block_len();
        // Block counts of the jobs: 0..=blocks, then blocks..=0, then all of them twice.
        let counts: Vec<usize> = (0..=blocks)
            .chain((0..=blocks).rev())
            .chain([blocks, blocks])
            .collect();
        let mut bufs: Vec<Vec<u8>> = counts
            .iter()
            .map(|&k| plaintext[..k * alg.block_len()].to_vec())
            .collect();
        let mut jobs: Vec<CbcJob<'_>> =
            bufs.iter_mut().map(|buf| CbcJob { iv: &iv, buf }).collect();
        assert!(
            jobs.len() > ipsec_crypto::CBC_LANES || blocks < 4,
            "{}",
            v.name
        );
        cipher.encrypt_cbc_many(&mut jobs).unwrap();
        for (buf, &k) in bufs.iter().zip(&counts) {
            assert_eq!(
                buf[..],
                ciphertext[..k * alg.block_len()],
                "{} (line {}), {k} blocks",
                v.name,
                v.line
            );
        }
    }
}

#[test]
fn dh_matches_rfc5114_appendix_a() {
    let all = vectors(include_str!("vectors/dh.txt"), 6);
    assert_eq!(all.len(), 3);
    for v in all {
        let id: u16 = v.fields[0].parse().unwrap();
        let group = DhGroup::from_id(id).unwrap();
        let a = DhPrivateKey::from_exponent(group, &unhex(v.fields[1])).unwrap();
        let b = DhPrivateKey::from_exponent(group, &unhex(v.fields[3])).unwrap();
        let (ya, yb, z) = (unhex(v.fields[2]), unhex(v.fields[4]), unhex(v.fields[5]));

        assert_eq!(a.public_key(), ya, "{}: yA", v.name);
        assert_eq!(b.public_key(), yb, "{}: yB", v.name);
        assert_eq!(
            a.shared_secret(&yb).unwrap().expose(),
            z,
            "{}: Z from A",
            v.name
        );
        assert_eq!(
            b.shared_secret(&ya).unwrap().expose(),
            z,
            "{}: Z from B",
            v.name
        );
    }
}

#[test]
fn rejects_rfc5114_exponent_not_below_q() {
    // q itself for group 24 (RFC 5114 section 2.3).
    let q = unhex("8cf83642a709a097b447997640129da299b1a47d1eb3750ba308b0fe64f5fbd3");
    assert!(matches!(
        DhPrivateKey::from_exponent(DhGroup::Modp2048S256, &q),
        Err(CryptoError::InvalidPrivateExponent {
            group: DhGroup::Modp2048S256
        })
    ));
}
