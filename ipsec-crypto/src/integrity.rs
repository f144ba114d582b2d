//! ESP integrity check values: HMAC truncated to the ICV length (RFC 2403, RFC 2404,
//! RFC 4868 section 2).

use core::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use crate::alg::IntegrityAlgorithm;
use crate::error::CryptoError;
use crate::hash::{HmacKey, MAX_OUTPUT_LEN};

/// An ESP integrity key: computes and verifies truncated HMAC ICVs.
///
/// The key is wiped on drop and `Debug` prints the algorithm only. Neither
/// [`Integrity::compute`] nor [`Integrity::verify`] allocates.
#[derive(Clone)]
pub struct Integrity {
    alg: IntegrityAlgorithm,
    key: HmacKey,
}

impl Integrity {
    /// Keys `alg` with `key`, which must be exactly the hash's output length
    /// (RFC 2403 section 3, RFC 2404 section 3, RFC 4868 section 2.1.1).
    pub fn new(alg: IntegrityAlgorithm, key: &[u8]) -> Result<Self, CryptoError> {
        if key.len() != alg.key_len() {
            return Err(CryptoError::InvalidIntegrityKeyLength {
                algorithm: alg,
                expected: alg.key_len(),
                actual: key.len(),
            });
        }
        Ok(Self {
            alg,
            key: HmacKey::new(alg.hash(), key),
        })
    }

    /// The integrity algorithm.
    pub fn algorithm(&self) -> IntegrityAlgorithm {
        self.alg
    }

    /// Length of the ICV in bytes.
    pub fn icv_len(&self) -> usize {
        self.alg.icv_len()
    }

    /// Computes the ICV over the concatenation of `parts` (for ESP: SPI, sequence number,
    /// IV and ciphertext, RFC 4303 section 3.3.2.1) and writes it to `out[..icv_len]`.
    ///
    /// The HMAC output is truncated to its leftmost `icv_len` bytes (RFC 2104 section 5).
    /// Fails if `out` is shorter than the ICV; bytes of `out` past the ICV are untouched.
    pub fn compute(&self, parts: &[&[u8]], out: &mut [u8]) -> Result<(), CryptoError> {
        let icv_len = self.icv_len();
        let Some(dst) = out.get_mut(..icv_len) else {
            return Err(CryptoError::BufferTooShort {
                needed: icv_len,
                actual: out.len(),
            });
        };
        let mut full = [0u8; MAX_OUTPUT_LEN];
        self.key.mac_into(parts, &mut full);
        dst.copy_from_slice(&full[..icv_len]);
        full.zeroize();
        Ok(())
    }

    /// Whether `icv` is the correct ICV for `parts`, compared in constant time.
    ///
    /// An `icv` of the wrong length is simply wrong (the length is public).
    pub fn verify(&self, parts: &[&[u8]], icv: &[u8]) -> bool {
        let icv_len = self.icv_len();
        if icv.len() != icv_len {
            return false;
        }
        let mut full = [0u8; MAX_OUTPUT_LEN];
        self.key.mac_into(parts, &mut full);
        let ok = bool::from(full[..icv_len].ct_eq(icv));
        full.zeroize();
        ok
    }
}

impl fmt::Debug for Integrity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Integrity")
            .field("algorithm", &self.alg)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_wrong_key_length() {
        for alg in IntegrityAlgorithm::ALL {
            assert_eq!(
                Integrity::new(alg, &[1; 3]).map(|_| ()),
                Err(CryptoError::InvalidIntegrityKeyLength {
                    algorithm: alg,
                    expected: alg.key_len(),
                    actual: 3
                })
            );
        }
    }

    #[test]
    fn verify_accepts_own_icv_and_rejects_any_change() {
        for alg in IntegrityAlgorithm::ALL {
            let mac = Integrity::new(alg, &vec![0x0b; alg.key_len()]).unwrap();
            let mut icv = [0u8; 40];
            mac.compute(&[b"spi+seq", b"iv and ciphertext"], &mut icv)
                .unwrap();
            let icv = &icv[..mac.icv_len()];
            assert!(mac.verify(&[b"spi+seq", b"iv and ciphertext"], icv));
            // Same bytes split differently: the MAC covers the concatenation.
            assert!(mac.verify(&[b"spi+seqiv and ", b"ciphertext"], icv));
            assert!(!mac.verify(&[b"spi+seq", b"iv and ciphertexT"], icv));
            let mut bad = icv.to_vec();
            bad[0] ^= 0x80;
            assert!(!mac.verify(&[b"spi+seq", b"iv and ciphertext"], &bad));
            assert!(!mac.verify(&[b"spi+seq", b"iv and ciphertext"], &icv[1..]));
        }
    }

    #[test]
    fn rejects_short_output_buffer_without_writing() {
        let mac = Integrity::new(IntegrityAlgorithm::HmacSha1_96, &[1; 20]).unwrap();
        let mut out = [0xee; 11];
        assert_eq!(
            mac.compute(&[b"x"], &mut out),
            Err(CryptoError::BufferTooShort {
                needed: 12,
                actual: 11
            })
        );
        assert_eq!(out, [0xee; 11]);
    }

    #[test]
    fn debug_prints_no_key_bytes() {
        let mac = Integrity::new(IntegrityAlgorithm::HmacSha1_96, &[0xab; 20]).unwrap();
        assert_eq!(
            format!("{mac:?}"),
            "Integrity { algorithm: HmacSha1_96, .. }"
        );
    }
}
