//! Cryptography for IKEv1 and ESP.
//!
//! This crate knows algorithms and the IKEv1 key schedule (RFC 2409 section 5 and
//! Appendix B); it knows nothing of messages or SAs. It performs no I/O and reads no
//! clock; randomness comes from a caller-supplied RNG so that runs are reproducible.
//!
//! - [`Cipher`]: DES, 3DES and AES CBC in place on the caller's buffer (RFC 2405, 2451, 3602).
//! - [`hash()`], [`Prf`]: the bare hash (IVs) and HMAC, the IKEv1 PRF (RFC 2104, 2409).
//! - [`Integrity`]: truncated HMAC ICVs for ESP (RFC 2403, 2404, 4868).
//! - [`DhPrivateKey`]: MODP Diffie-Hellman, groups 1, 2, 5, 14-18, 22-24
//!   (RFC 2409 section 6, RFC 3526, RFC 5114).
//! - [`ikev1`]: SKEYID and friends, IVs, HASH_I/HASH_R, Quick Mode hashes and KEYMAT.
//! - [`weaknesses`]: which negotiated algorithms deserve a warning, with the reason.
//!
//! Secret values (pre-shared keys, DH private values, SKEYID*, keys) live in types that
//! are zeroized on drop and whose `Debug` prints no bytes. MACs and hashes received from a
//! peer are compared in constant time.

#![forbid(unsafe_code)]

pub mod alg;
mod cipher;
mod dh;
mod error;
mod hash;
pub mod ikev1;
mod integrity;
pub mod secret;
mod weak;

pub use alg::{DhGroup, EncryptionAlgorithm, HashAlgorithm, IntegrityAlgorithm};
pub use cipher::Cipher;
pub use dh::DhPrivateKey;
pub use error::CryptoError;
pub use hash::{hash, Digest, Prf};
pub use integrity::Integrity;
pub use secret::SecretBytes;
pub use weak::{weaknesses, Algorithm, Weakness};
