//! The IKEv1 key schedule for pre-shared-key authentication (RFC 2409 section 5 and
//! Appendix B).
//!
//! Every function takes the negotiated hash as `prf`/`hash`: the PRF is HMAC with that hash
//! (RFC 2409 section 4). Byte strings are exactly as on the wire: `ni_b`/`nr_b` are nonce
//! payload bodies, `g_xi`/`g_xr` KE payload bodies, `sai_b` the initiator's whole SA payload
//! body, `idii_b`/`idir_b` ID payload bodies, all without their generic headers.

use crate::alg::{EncryptionAlgorithm, HashAlgorithm};
use crate::hash::{hash, Digest, Prf};
use crate::secret::SecretBytes;

/// The keys of an ISAKMP SA (RFC 2409 section 5).
#[derive(Clone, Debug)]
pub struct Phase1Keys {
    /// SKEYID, the root of the phase-1 key schedule.
    pub skeyid: SecretBytes,
    /// SKEYID_d, which keys KEYMAT for every phase-2 SA.
    pub skeyid_d: SecretBytes,
    /// SKEYID_a, which keys the Quick Mode and Informational HASH payloads.
    pub skeyid_a: SecretBytes,
    /// SKEYID_e, the seed of the phase-1 encryption key.
    pub skeyid_e: SecretBytes,
    /// Ka, the phase-1 cipher key: SKEYID_e truncated, or expanded when too short
    /// (RFC 2409 Appendix B).
    pub encryption_key: SecretBytes,
}

/// SKEYID for pre-shared-key authentication (RFC 2409 section 5).
pub fn skeyid_psk(prf: HashAlgorithm, psk: &[u8], ni_b: &[u8], nr_b: &[u8]) -> SecretBytes {
    // SKEYID = prf(pre-shared-key, Ni_b | Nr_b)
    Prf::new(prf, psk).compute(&[ni_b, nr_b])
}

/// SKEYID_d, SKEYID_a, SKEYID_e and Ka from SKEYID (RFC 2409 section 5, Appendix B).
///
/// `g_xy` is the shared secret as long as the modulus, left-padded with zeros.
pub fn phase1_keys(
    prf: HashAlgorithm,
    skeyid: SecretBytes,
    g_xy: &[u8],
    cky_i: &[u8; 8],
    cky_r: &[u8; 8],
    cipher: EncryptionAlgorithm,
) -> Phase1Keys {
    let keyed = Prf::new(prf, skeyid.expose());

    // SKEYID_d = prf(SKEYID, g^xy | CKY-I | CKY-R | 0)
    let skeyid_d = keyed.compute(&[g_xy, cky_i, cky_r, &[0]]);
    // SKEYID_a = prf(SKEYID, SKEYID_d | g^xy | CKY-I | CKY-R | 1)
    let skeyid_a = keyed.compute(&[skeyid_d.expose(), g_xy, cky_i, cky_r, &[1]]);
    // SKEYID_e = prf(SKEYID, SKEYID_a | g^xy | CKY-I | CKY-R | 2)
    let skeyid_e = keyed.compute(&[skeyid_a.expose(), g_xy, cky_i, cky_r, &[2]]);

    let encryption_key = encryption_key(prf, &skeyid_e, cipher.key_len());
    Phase1Keys {
        skeyid,
        skeyid_d,
        skeyid_a,
        skeyid_e,
        encryption_key,
    }
}

/// Ka, the phase-1 encryption key of `key_len` bytes derived from SKEYID_e
/// (RFC 2409 Appendix B).
///
/// When SKEYID_e is at least `key_len` bytes, Ka is its leading bytes. Otherwise
/// SKEYID_e keys the PRF to produce `Ka = K1 | K2 | K3 ...` (first bytes used). A `key_len`
/// too large to allocate gives an empty key, which every cipher then rejects.
pub fn encryption_key(prf: HashAlgorithm, skeyid_e: &SecretBytes, key_len: usize) -> SecretBytes {
    if let Some(ka) = skeyid_e.expose().get(..key_len) {
        return SecretBytes::from_slice(ka);
    }
    let keyed = Prf::new(prf, skeyid_e.expose());
    let Some(mut ka) = secret_buffer(key_len, prf) else {
        return SecretBytes::default();
    };
    // K1 = prf(SKEYID_e, 0)
    let mut block = keyed.compute(&[&[0]]);
    while ka.len() < key_len {
        ka.extend_from_slice(block.expose());
        // Kn = prf(SKEYID_e, Kn-1)
        block = keyed.compute(&[block.expose()]);
    }
    ka.truncate(key_len);
    SecretBytes::new(ka)
}

/// An empty buffer with room for `len` bytes plus one more PRF block, so that growing it
/// never reallocates (a reallocation would leave an unwiped copy of key material behind).
/// `None` if that much memory cannot be reserved.
fn secret_buffer(len: usize, prf: HashAlgorithm) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    buf.try_reserve_exact(len.checked_add(prf.output_len())?)
        .ok()?;
    Some(buf)
}

/// HASH_I, the initiator's authentication hash in Main and Aggressive Mode
/// (RFC 2409 section 5).
#[expect(
    clippy::too_many_arguments,
    reason = "one argument per RFC 2409 formula term"
)]
pub fn hash_i(
    prf: HashAlgorithm,
    skeyid: &SecretBytes,
    g_xi: &[u8],
    g_xr: &[u8],
    cky_i: &[u8; 8],
    cky_r: &[u8; 8],
    sai_b: &[u8],
    idii_b: &[u8],
) -> Digest {
    // HASH_I = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b )
    Prf::new(prf, skeyid.expose()).compute_public(&[g_xi, g_xr, cky_i, cky_r, sai_b, idii_b])
}

/// HASH_R, the responder's authentication hash in Main and Aggressive Mode
/// (RFC 2409 section 5).
#[expect(
    clippy::too_many_arguments,
    reason = "one argument per RFC 2409 formula term"
)]
pub fn hash_r(
    prf: HashAlgorithm,
    skeyid: &SecretBytes,
    g_xr: &[u8],
    g_xi: &[u8],
    cky_r: &[u8; 8],
    cky_i: &[u8; 8],
    sai_b: &[u8],
    idir_b: &[u8],
) -> Digest {
    // HASH_R = prf(SKEYID, g^xr | g^xi | CKY-R | CKY-I | SAi_b | IDir_b )
    Prf::new(prf, skeyid.expose()).compute_public(&[g_xr, g_xi, cky_r, cky_i, sai_b, idir_b])
}

/// The IV of the first encrypted phase-1 message (RFC 2409 Appendix B): the hash of the
/// two public values, truncated to the cipher's block length.
///
/// Later messages chain: each one's IV is the last ciphertext block of the previous one.
pub fn phase1_iv(hash_alg: HashAlgorithm, g_xi: &[u8], g_xr: &[u8], block_len: usize) -> Vec<u8> {
    // IV = hash(g^xi | g^xr), truncated to the block size
    truncate(hash(hash_alg, &[g_xi, g_xr]), block_len)
}

/// The IV of the first message of a Quick Mode or Informational exchange (RFC 2409
/// Appendix B).
///
/// `last_phase1_block` is the last ciphertext block of the last phase-1 message, the same
/// for every exchange of this ISAKMP SA; `message_id` is that exchange's message ID.
pub fn phase2_iv(
    hash_alg: HashAlgorithm,
    last_phase1_block: &[u8],
    message_id: u32,
    block_len: usize,
) -> Vec<u8> {
    // IV = hash(last phase-1 CBC output block | M-ID), truncated to the block size
    truncate(
        hash(hash_alg, &[last_phase1_block, &message_id.to_be_bytes()]),
        block_len,
    )
}

/// The leading `len` bytes of `digest` (all of it if shorter; no hash is shorter than a
/// block of the ciphers we support).
fn truncate(digest: Digest, len: usize) -> Vec<u8> {
    let len = len.min(digest.len());
    digest.as_bytes()[..len].to_vec()
}

/// HASH(1) of Quick Mode message 1 (RFC 2409 section 5.5).
///
/// `after_hash` is every payload that follows the HASH payload, generic headers included,
/// up to the end of the chain (padding excluded).
pub fn qm_hash1(
    prf: HashAlgorithm,
    skeyid_a: &SecretBytes,
    message_id: u32,
    after_hash: &[u8],
) -> Digest {
    // HASH(1) = prf(SKEYID_a, M-ID | SA | Ni [ | KE ] [ | IDci | IDcr ])
    Prf::new(prf, skeyid_a.expose()).compute_public(&[&message_id.to_be_bytes(), after_hash])
}

/// HASH(2) of Quick Mode message 2 (RFC 2409 section 5.5); `ni_b` is the initiator's
/// Quick Mode nonce body, `after_hash` as for [`qm_hash1`].
pub fn qm_hash2(
    prf: HashAlgorithm,
    skeyid_a: &SecretBytes,
    message_id: u32,
    ni_b: &[u8],
    after_hash: &[u8],
) -> Digest {
    // HASH(2) = prf(SKEYID_a, M-ID | Ni_b | SA | Nr [ | KE ] [ | IDci | IDcr ])
    Prf::new(prf, skeyid_a.expose()).compute_public(&[&message_id.to_be_bytes(), ni_b, after_hash])
}

/// HASH(3) of Quick Mode message 3 (RFC 2409 section 5.5).
pub fn qm_hash3(
    prf: HashAlgorithm,
    skeyid_a: &SecretBytes,
    message_id: u32,
    ni_b: &[u8],
    nr_b: &[u8],
) -> Digest {
    // HASH(3) = prf(SKEYID_a, 0 | M-ID | Ni_b | Nr_b)
    Prf::new(prf, skeyid_a.expose()).compute_public(&[&[0], &message_id.to_be_bytes(), ni_b, nr_b])
}

/// The HASH of an Informational exchange message (RFC 2409 section 5.7); `after_hash` is
/// the Notification or Delete payload (and anything after it), generic headers included.
pub fn informational_hash(
    prf: HashAlgorithm,
    skeyid_a: &SecretBytes,
    message_id: u32,
    after_hash: &[u8],
) -> Digest {
    // HASH(1) = prf(SKEYID_a, M-ID | N/D)
    Prf::new(prf, skeyid_a.expose()).compute_public(&[&message_id.to_be_bytes(), after_hash])
}

/// KEYMAT for one direction of a phase-2 SA, expanded to `len` bytes (RFC 2409 section
/// 5.5).
///
/// `g_qm_xy` is the Quick Mode shared secret when PFS is in use. `protocol` is the
/// proposal's protocol ID (3 for ESP) and `spi` the SPI of this direction, the one the
/// receiving side chose. `ni_b`/`nr_b` are the Quick Mode nonce bodies. The caller splits
/// the result: encryption key first, then integrity key (RFC 2409 section 5.5, RFC 2407).
/// A `len` too large to allocate gives an empty result rather than a panic.
#[expect(
    clippy::too_many_arguments,
    reason = "one argument per RFC 2409 formula term"
)]
pub fn keymat(
    prf: HashAlgorithm,
    skeyid_d: &SecretBytes,
    g_qm_xy: Option<&[u8]>,
    protocol: u8,
    spi: u32,
    ni_b: &[u8],
    nr_b: &[u8],
    len: usize,
) -> SecretBytes {
    let keyed = Prf::new(prf, skeyid_d.expose());
    let spi = spi.to_be_bytes();
    let pfs: &[u8] = g_qm_xy.unwrap_or(&[]);
    let Some(mut keymat) = secret_buffer(len, prf) else {
        return SecretBytes::default();
    };

    // K1 = prf(SKEYID_d, [ g(qm)^xy | ] protocol | SPI | Ni_b | Nr_b)
    let mut block = keyed.compute(&[pfs, &[protocol], &spi, ni_b, nr_b]);
    while keymat.len() < len {
        keymat.extend_from_slice(block.expose());
        // Kn = prf(SKEYID_d, Kn-1 | [ g(qm)^xy | ] protocol | SPI | Ni_b | Nr_b)
        block = keyed.compute(&[block.expose(), pfs, &[protocol], &spi, ni_b, nr_b]);
    }
    keymat.truncate(len);
    SecretBytes::new(keymat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ka_expansion_follows_appendix_b() {
        // MD5 gives a 16-byte SKEYID_e; 3DES needs 24 bytes.
        let skeyid_e = SecretBytes::from_slice(&[0x42; 16]);
        let prf = Prf::new(HashAlgorithm::Md5, skeyid_e.expose());
        let k1 = prf.compute(&[&[0]]);
        let k2 = prf.compute(&[k1.expose()]);
        let expected = [k1.expose(), &k2.expose()[..8]].concat();
        let ka = encryption_key(HashAlgorithm::Md5, &skeyid_e, 24);
        assert_eq!(ka.expose(), expected);
        // Long enough: plain truncation.
        let ka = encryption_key(HashAlgorithm::Md5, &skeyid_e, 16);
        assert_eq!(ka.expose(), skeyid_e.expose());
    }

    #[test]
    fn keymat_blocks_chain_per_rfc2409_5_5() {
        let skeyid_d = SecretBytes::from_slice(b"skeyid_d");
        let prf = Prf::new(HashAlgorithm::Sha1, skeyid_d.expose());
        let spi = 0x1234_5678u32.to_be_bytes();
        let k1 = prf.compute(&[b"gxy", &[3], &spi, b"ni", b"nr"]);
        let k2 = prf.compute(&[k1.expose(), b"gxy", &[3], &spi, b"ni", b"nr"]);
        let km = keymat(
            HashAlgorithm::Sha1,
            &skeyid_d,
            Some(b"gxy"),
            3,
            0x1234_5678,
            b"ni",
            b"nr",
            36,
        );
        assert_eq!(km.expose(), [k1.expose(), &k2.expose()[..16]].concat());
        let no_pfs = keymat(
            HashAlgorithm::Sha1,
            &skeyid_d,
            None,
            3,
            0x1234_5678,
            b"ni",
            b"nr",
            20,
        );
        assert_eq!(
            no_pfs.expose(),
            prf.compute(&[&[3], &spi, b"ni", b"nr"]).expose()
        );
        assert!(keymat(HashAlgorithm::Sha1, &skeyid_d, None, 3, 1, b"", b"", 0).is_empty());
    }

    #[test]
    fn absurd_lengths_give_empty_keys_instead_of_panicking() {
        let s = SecretBytes::from_slice(&[1; 8]);
        assert!(keymat(HashAlgorithm::Sha1, &s, None, 3, 1, b"", b"", usize::MAX).is_empty());
        assert!(encryption_key(HashAlgorithm::Md5, &s, usize::MAX).is_empty());
    }

    #[test]
    fn ivs_are_truncated_hashes() {
        let iv = phase1_iv(HashAlgorithm::Sha1, b"gxi", b"gxr", 16);
        assert_eq!(iv, &hash(HashAlgorithm::Sha1, &[b"gxigxr"])[..16]);
        let iv = phase2_iv(HashAlgorithm::Md5, b"last", 0x0102_0304, 8);
        assert_eq!(
            iv,
            &hash(HashAlgorithm::Md5, &[b"last\x01\x02\x03\x04"])[..8]
        );
    }
}
