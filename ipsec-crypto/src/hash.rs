//! Plain hashes and HMAC (RFC 2104), the IKEv1 pseudo-random function.
//!
//! RFC 2409 section 4 makes the PRF of an IKE SA the HMAC version of the negotiated hash
//! when no PRF attribute is negotiated, which is the only case in practice, so the PRF is
//! named by a [`HashAlgorithm`].

use core::fmt;
use core::ops::Deref;

use hmac::{Hmac, Mac};
use sha2::digest::{self, KeyInit};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::alg::HashAlgorithm;
use crate::secret::SecretBytes;

/// Largest digest we produce (SHA2-512).
pub(crate) const MAX_OUTPUT_LEN: usize = 64;

/// Largest hash block (SHA2-384 and SHA2-512), the size of a prepared HMAC key.
const MAX_BLOCK_LEN: usize = 128;

/// A public hash or PRF output (an IV seed, HASH_I, a Quick Mode HASH), kept inline.
///
/// Values of this type go on the wire, so `Debug` prints them in hex. Secret PRF outputs
/// (SKEYID and friends) are [`SecretBytes`] instead. Compare a received value against a
/// computed one with [`Digest::ct_eq`].
#[derive(Clone, Copy)]
pub struct Digest {
    bytes: [u8; MAX_OUTPUT_LEN],
    len: usize,
}

impl Digest {
    /// Copies up to 64 bytes of `value`; longer input is truncated.
    fn from_slice(value: &[u8]) -> Self {
        let mut bytes = [0u8; MAX_OUTPUT_LEN];
        let len = value.len().min(MAX_OUTPUT_LEN);
        bytes[..len].copy_from_slice(&value[..len]);
        Self { bytes, len }
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Constant-time comparison with a received value (length is not secret).
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.len == other.len() && bool::from(self.as_bytes().ct_eq(other))
    }
}

impl Deref for Digest {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl AsRef<[u8]> for Digest {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for Digest {
    /// Constant-time, like [`Digest::ct_eq`].
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other.as_bytes())
    }
}

impl Eq for Digest {}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Digest(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// Runs `$body` with `$d` bound to the RustCrypto hash type for `$alg`.
macro_rules! with_hash {
    ($alg:expr, $d:ident => $body:expr) => {
        match $alg {
            HashAlgorithm::Md5 => {
                type $d = md5::Md5;
                $body
            }
            HashAlgorithm::Sha1 => {
                type $d = sha1::Sha1;
                $body
            }
            HashAlgorithm::Sha256 => {
                type $d = sha2::Sha256;
                $body
            }
            HashAlgorithm::Sha384 => {
                type $d = sha2::Sha384;
                $body
            }
            HashAlgorithm::Sha512 => {
                type $d = sha2::Sha512;
                $body
            }
        }
    };
}

/// Hashes the concatenation of `parts` with `alg`.
///
/// IKEv1 uses the bare hash only for IVs (RFC 2409 Appendix B).
pub fn hash(alg: HashAlgorithm, parts: &[&[u8]]) -> Digest {
    fn run<D: digest::Digest>(parts: &[&[u8]]) -> Digest {
        let mut h = D::new();
        for part in parts {
            h.update(part);
        }
        Digest::from_slice(&h.finalize())
    }
    with_hash!(alg, D => run::<D>(parts))
}

/// The input block length of `alg`, which is the HMAC key block length (RFC 2104 section 2).
const fn block_len(alg: HashAlgorithm) -> usize {
    match alg {
        HashAlgorithm::Md5 | HashAlgorithm::Sha1 | HashAlgorithm::Sha256 => 64,
        HashAlgorithm::Sha384 | HashAlgorithm::Sha512 => 128,
    }
}

/// An HMAC key prepared as RFC 2104 section 2 step (1) describes: hashed when longer than
/// the block, then zero-padded to the block length.
///
/// The HMAC state is keyed again from this block on every call. The keyed state of
/// `hmac` 0.12 cannot be wiped (the digest cores do not implement `Zeroize`), so keeping
/// one alive for the lifetime of a key would leave key-equivalent bytes in memory after
/// drop. The price is two extra compression-function calls per MAC.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct HmacKey {
    #[zeroize(skip)]
    alg: HashAlgorithm,
    block: [u8; MAX_BLOCK_LEN],
}

impl HmacKey {
    /// Prepares `key` for HMAC with `alg`; any length is accepted (RFC 2104 section 3).
    pub(crate) fn new(alg: HashAlgorithm, key: &[u8]) -> Self {
        let mut block = [0u8; MAX_BLOCK_LEN];
        if key.len() > block_len(alg) {
            let digest = hash(alg, &[key]);
            block[..digest.len].copy_from_slice(digest.as_bytes());
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        Self { alg, block }
    }

    /// The hash inside the HMAC.
    pub(crate) fn algorithm(&self) -> HashAlgorithm {
        self.alg
    }

    /// HMAC over the concatenation of `parts`, the full untruncated output written to
    /// `out[..output_len]`; returns the output length. `out` must hold 64 bytes.
    pub(crate) fn mac_into(&self, parts: &[&[u8]], out: &mut [u8; MAX_OUTPUT_LEN]) -> usize {
        let block = &self.block[..block_len(self.alg)];
        with_hash!(self.alg, D => {
            // HMAC accepts keys of any length, so `new_from_slice` cannot fail; an empty
            // output would be caught by every test of this module.
            let Ok(mut mac) = <Hmac<D> as KeyInit>::new_from_slice(block) else {
                return 0;
            };
            for part in parts {
                mac.update(part);
            }
            let tag = mac.finalize().into_bytes();
            let len = tag.len().min(MAX_OUTPUT_LEN);
            out[..len].copy_from_slice(&tag[..len]);
            len
        })
    }
}

/// The IKEv1 PRF: HMAC with the negotiated hash, keyed with a secret (RFC 2409 section 4).
///
/// The key is wiped on drop and `Debug` prints only the algorithm.
#[derive(Clone)]
pub struct Prf {
    key: HmacKey,
}

impl Prf {
    /// Keys HMAC-`alg` with `key` (any length; RFC 2104 section 3).
    pub fn new(alg: HashAlgorithm, key: &[u8]) -> Self {
        Self {
            key: HmacKey::new(alg, key),
        }
    }

    /// The hash inside the HMAC.
    pub fn algorithm(&self) -> HashAlgorithm {
        self.key.algorithm()
    }

    /// Output length in bytes (the hash's output length).
    pub fn output_len(&self) -> usize {
        self.key.algorithm().output_len()
    }

    /// PRF over the concatenation of `parts`, for an output that must stay secret
    /// (SKEYID, SKEYID_*, KEYMAT).
    pub fn compute(&self, parts: &[&[u8]]) -> SecretBytes {
        let mut out = [0u8; MAX_OUTPUT_LEN];
        let len = self.key.mac_into(parts, &mut out);
        let secret = SecretBytes::from_slice(&out[..len]);
        out.zeroize();
        secret
    }

    /// PRF over the concatenation of `parts`, for an output that goes on the wire
    /// (HASH_I, HASH_R, the Quick Mode and Informational HASHes).
    pub fn compute_public(&self, parts: &[&[u8]]) -> Digest {
        let mut out = [0u8; MAX_OUTPUT_LEN];
        let len = self.key.mac_into(parts, &mut out);
        Digest::from_slice(&out[..len])
    }
}

impl fmt::Debug for Prf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prf")
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_of_abc_matches_rfc1321_and_fips180() {
        let cases = [
            (HashAlgorithm::Md5, "900150983cd24fb0d6963f7d28e17f72"),
            (
                HashAlgorithm::Sha1,
                "a9993e364706816aba3e25717850c26c9cd0d89d",
            ),
            (
                HashAlgorithm::Sha256,
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            (
                HashAlgorithm::Sha384,
                "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded163\
                 1a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7",
            ),
            (
                HashAlgorithm::Sha512,
                "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
                 2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
            ),
        ];
        for (alg, want) in cases {
            let digest = hash(alg, &[b"a", b"", b"bc"]);
            assert_eq!(digest.len(), alg.output_len());
            let text: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(text, want, "{alg:?}");
        }
    }

    #[test]
    fn digest_debug_is_hex_and_prf_debug_has_no_key() {
        let digest = hash(HashAlgorithm::Md5, &[b"abc"]);
        assert_eq!(
            format!("{digest:?}"),
            "Digest(900150983cd24fb0d6963f7d28e17f72)"
        );
        let prf = Prf::new(HashAlgorithm::Sha1, b"\xde\xad\xbe\xef");
        assert_eq!(format!("{prf:?}"), "Prf { algorithm: Sha1, .. }");
    }

    #[test]
    fn digest_comparison_checks_length_and_content() {
        let d = hash(HashAlgorithm::Sha1, &[b"x"]);
        assert!(d.ct_eq(d.as_bytes()));
        assert!(!d.ct_eq(&d.as_bytes()[..19]));
        let mut other = d.as_bytes().to_vec();
        other[19] ^= 1;
        assert!(!d.ct_eq(&other));
        assert_eq!(d, hash(HashAlgorithm::Sha1, &[b"x"]));
        assert_ne!(d, hash(HashAlgorithm::Sha1, &[b"y"]));
    }
}
