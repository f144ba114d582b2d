//! The error type of every fallible operation in this crate.

use crate::alg::{DhGroup, EncryptionAlgorithm, IntegrityAlgorithm};

/// Why a cryptographic operation refused its input.
///
/// Each variant names the algorithm or group and the sizes involved, so that a caller can
/// log a useful reason without ever seeing key bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// A cipher key is not the length the algorithm requires.
    #[error("{algorithm:?} key must be {expected} bytes, got {actual}")]
    InvalidKeyLength {
        /// The cipher the key was meant for.
        algorithm: EncryptionAlgorithm,
        /// Required length in bytes.
        expected: usize,
        /// Length supplied.
        actual: usize,
    },

    /// An integrity key is not the length the algorithm requires (RFC 2403, 2404, 4868 2.1.1).
    #[error("{algorithm:?} key must be {expected} bytes, got {actual}")]
    InvalidIntegrityKeyLength {
        /// The integrity algorithm the key was meant for.
        algorithm: IntegrityAlgorithm,
        /// Required length in bytes.
        expected: usize,
        /// Length supplied.
        actual: usize,
    },

    /// A DES or 3DES key is weak, semi-weak, or degenerates 3DES to single DES
    /// (RFC 2405 section 5, RFC 2451 section 2.3).
    #[error("{algorithm:?} key rejected: {reason}")]
    WeakKey {
        /// The cipher the key was meant for.
        algorithm: EncryptionAlgorithm,
        /// Which property made the key weak.
        reason: &'static str,
    },

    /// A CBC IV is not one block long.
    #[error("{algorithm:?} IV must be {expected} bytes, got {actual}")]
    InvalidIvLength {
        /// The cipher in use.
        algorithm: EncryptionAlgorithm,
        /// The block length.
        expected: usize,
        /// Length supplied.
        actual: usize,
    },

    /// A CBC buffer is not a whole number of blocks.
    #[error("{algorithm:?} buffer of {len} bytes is not a multiple of the {block_len}-byte block")]
    NotBlockAligned {
        /// The cipher in use.
        algorithm: EncryptionAlgorithm,
        /// The block length.
        block_len: usize,
        /// Length supplied.
        len: usize,
    },

    /// A peer's Diffie-Hellman public value is unusable (RFC 2409 section 5, RFC 6989
    /// section 2.1, SP 800-56A section 5.6.2.3).
    #[error("group {} public value rejected: {reason}", group.id())]
    InvalidPublicValue {
        /// The group in use.
        group: DhGroup,
        /// What is wrong with the value.
        reason: &'static str,
    },

    /// A peer's Diffie-Hellman public value has the wrong length (it must be exactly as long
    /// as the modulus, RFC 2409 section 5).
    #[error("group {} public value must be {expected} bytes, got {actual}", group.id())]
    InvalidPublicValueLength {
        /// The group in use.
        group: DhGroup,
        /// The modulus length in bytes.
        expected: usize,
        /// Length supplied.
        actual: usize,
    },

    /// A private exponent supplied to [`crate::DhPrivateKey::from_exponent`] is outside
    /// `[1, p-2]` (safe-prime groups) or `[1, q-1]` (RFC 5114 groups, SP 800-56A 5.6.1.1).
    #[error("group {} private exponent out of range", group.id())]
    InvalidPrivateExponent {
        /// The group in use.
        group: DhGroup,
    },

    /// An output buffer is too short for the value to be written.
    #[error("output buffer of {actual} bytes is shorter than the {needed} bytes required")]
    BufferTooShort {
        /// Bytes required.
        needed: usize,
        /// Bytes available.
        actual: usize,
    },
}
