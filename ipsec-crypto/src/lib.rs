//! Cryptography for IKEv1 and ESP.
//!
//! This crate knows algorithms and the IKEv1 key schedule (RFC 2409 section 5 and
//! Appendix B); it knows nothing of messages or SAs. It performs no I/O and reads no
//! clock; randomness comes from a caller-supplied RNG so that runs are reproducible.
//!
//! - [`Cipher`]: DES, 3DES and AES CBC in place on the caller's buffer (RFC 2405, 2451, 3602);
//!   [`Cipher::encrypt_cbc_many`] encrypts several buffers side by side, up to
//!   [`CBC_LANES`] at once for AES, so that the serial chain of CBC encryption does not
//!   leave the AES-NI pipeline idle (about 3-5x less AES time per packet in a batch).
//! - [`hash()`], [`Prf`]: the bare hash (IVs) and HMAC, the IKEv1 PRF (RFC 2104, 2409).
//! - [`Integrity`]: truncated HMAC ICVs for ESP (RFC 2403, 2404, 4868).
//! - [`DhPrivateKey`]: MODP Diffie-Hellman, groups 1, 2, 5, 14-18, 22-24
//!   (RFC 2409 section 6, RFC 3526, RFC 5114).
//! - [`ikev1`]: SKEYID and friends, IVs, HASH_I/HASH_R, Quick Mode hashes and KEYMAT.
//! - [`weaknesses`]: which negotiated algorithms deserve a warning, with the reason.
//!
//! Secret values (pre-shared keys, DH private values, SKEYID*, keys) live in types that
//! are zeroized on drop and whose `Debug` prints no bytes. MACs and hashes received from a
//! peer are compared in constant time. No function panics on any input: bad lengths, weak
//! keys and bad peer values are [`CryptoError`]s.
//!
//! # Diffie-Hellman: constant time, and how big the exponent is
//!
//! The exponentiation with the private value uses `crypto-bigint` 0.5's Montgomery
//! exponentiation (`DynResidue::pow_bounded_exp`) over a fixed number of exponent bits, so
//! its running time depends on the group, not on the secret. We measured it against the
//! variable-time `num-bigint` 0.4 `modpow` with a throwaway program (release build, rustc
//! 1.95, 2-core AMD EPYC VM; group 14, 2000 random bases and 256-bit exponents with the top
//! bit set, the two libraries interleaved operation by operation and timed in thread CPU
//! time because parallel builds loaded the machine; results checked equal): crypto-bigint
//! 0.78 ms per exponentiation, num-bigint 0.91 ms, a ratio of 0.85-0.86 over three runs.
//! Wall-clock runs under load scattered between 0.77 and 1.30. The constant-time path is
//! not slower, so it is the only one (the budget was 1.2x) and `num-bigint` is not a
//! dependency. A whole [`DhPrivateKey::generate`] plus [`DhPrivateKey::shared_secret`] in
//! group 14 (two exponentiations with our 320-bit exponent) takes 1.9 ms of CPU; the
//! Montgomery constants of each group (0.6-0.9 ms for group 14) are computed once per
//! process and cached.
//!
//! Private exponents, per RFC 3526 section 8 ("double the entropy of the strength") and
//! SP 800-56A (at least twice the security strength): for the safe-prime groups we take the
//! exponent size of the higher strength estimate in the RFC 3526 section 8 table, rounded up
//! to 64 bits, never below 256: groups 1, 2, 5: 256 bits; 14: 320; 15: 448; 16: 512;
//! 17: 576; 18: 640. The top bit is set so the length, and so the time, is fixed. For the
//! RFC 5114 groups (22, 23, 24) the exponent is uniform in `[1, q-1]` (SP 800-56A section
//! 5.6.1.1), i.e. 160, 224 or 256 bits. Peer public values must be exactly the modulus
//! length and in `[2, p-2]`; for RFC 5114 groups they must also lie in the order-q subgroup
//! (RFC 6989 section 2.2).
//!
//! # Known limitations
//!
//! - The keyed HMAC state is rebuilt from the stored (zeroized) key on every call, because
//!   the `hmac` 0.12 state cannot be wiped; this costs two extra compression-function calls
//!   per MAC. Stack copies made inside the RustCrypto hash and cipher crates during a call,
//!   and the window table inside `crypto-bigint`'s exponentiation, are not wiped by us.
//! - The CBC key schedule is cloned per call of the one-buffer functions (cheap, and the
//!   clone wipes itself on drop); `encrypt_cbc_many` uses it in place.
//! - DES and 3DES come from the `des` crate, which is slow: encrypting 1504 bytes took
//!   68 us (DES) and 217 us (3DES) against about 2 us for AES-CBC with AES-NI on the VM
//!   above (release build). They are here for interoperability only.

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
pub use cipher::{CbcJob, Cipher, CBC_LANES};
pub use dh::DhPrivateKey;
pub use error::CryptoError;
pub use hash::{hash, Digest, Prf};
pub use integrity::Integrity;
pub use secret::SecretBytes;
pub use weak::{weaknesses, Algorithm, Weakness};
