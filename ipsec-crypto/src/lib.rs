//! Cryptography for IKEv1 and ESP.
//!
//! This crate knows algorithms and the IKEv1 key schedule (RFC 2409 section 5 and
//! Appendix B); it knows nothing of messages or SAs. It performs no I/O and reads no
//! clock; randomness comes from a caller-supplied RNG so that runs are reproducible.
//!
//! Secret values (pre-shared keys, DH private values, SKEYID*, keys) live in types that
//! are zeroized on drop and whose `Debug` prints no bytes.

#![forbid(unsafe_code)]

pub mod alg;
pub mod secret;

pub use alg::{DhGroup, EncryptionAlgorithm, HashAlgorithm, IntegrityAlgorithm};
pub use secret::SecretBytes;
