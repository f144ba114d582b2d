//! Finite-field Diffie-Hellman over the IKE MODP groups (RFC 2409 section 6, RFC 3526,
//! RFC 5114 section 2).
//!
//! Exponentiation with the private exponent runs in constant time for a given group: it is
//! `crypto-bigint`'s fixed-window exponentiation in Montgomery form, with constant-time
//! table lookups, over exactly the exponent's fixed bit length, so the time depends on the
//! group, never on the exponent's value. Operations on public values (checking a peer's
//! value) use the same code.

mod groups;

use core::fmt;
use std::sync::OnceLock;

use crypto_bigint::modular::runtime_mod::{DynResidue, DynResidueParams};
use crypto_bigint::{Limb, Uint, Word, U1024, U1536, U2048, U3072, U4096, U6144, U768, U8192};
use rand_core::CryptoRngCore;
use zeroize::Zeroize;

use crate::alg::DhGroup;
use crate::error::CryptoError;
use crate::secret::SecretBytes;

/// The parameters of one group, at the integer width that fits its modulus.
struct Params<const L: usize> {
    /// The prime modulus.
    p: Uint<L>,
    /// The generator.
    g: Uint<L>,
    /// For RFC 5114 groups, the prime order of the subgroup `g` generates and its bit
    /// length. The RFC 2409/3526 groups use safe primes and need no subgroup check.
    q: Option<(Uint<L>, usize)>,
    /// Montgomery constants for `p`, computed once per process (about 0.9 ms for group 14
    /// in a release build, a fifth of a whole exchange if redone on every operation).
    residue: DynResidueParams<L>,
}

impl<const L: usize> Params<L> {
    /// Every modulus here is an odd prime constant, which is all `DynResidueParams::new`
    /// requires, so this cannot panic.
    fn new(p: Uint<L>, g: Uint<L>, q: Option<(Uint<L>, usize)>) -> Self {
        Self {
            p,
            g,
            q,
            residue: DynResidueParams::new(&p),
        }
    }
}

/// Defines a function returning the lazily built, process-wide [`Params`] of one group.
macro_rules! group_params {
    ($(#[$doc:meta])* $name:ident: $limbs:expr => $p:expr, $g:expr, $q:expr) => {
        $(#[$doc])*
        fn $name() -> &'static Params<{ $limbs }> {
            static CELL: OnceLock<Params<{ $limbs }>> = OnceLock::new();
            CELL.get_or_init(|| Params::new($p, $g, $q))
        }
    };
}

group_params!(
    /// Group 1 (RFC 2409 section 6.1).
    modp_768: U768::LIMBS => groups::MODP_768, Uint::from_u8(2), None);
group_params!(
    /// Group 2 (RFC 2409 section 6.2).
    modp_1024: U1024::LIMBS => groups::MODP_1024, Uint::from_u8(2), None);
group_params!(
    /// Group 5 (RFC 3526 section 2).
    modp_1536: U1536::LIMBS => groups::MODP_1536, Uint::from_u8(2), None);
group_params!(
    /// Group 14 (RFC 3526 section 3).
    modp_2048: U2048::LIMBS => groups::MODP_2048, Uint::from_u8(2), None);
group_params!(
    /// Group 15 (RFC 3526 section 4).
    modp_3072: U3072::LIMBS => groups::MODP_3072, Uint::from_u8(2), None);
group_params!(
    /// Group 16 (RFC 3526 section 5).
    modp_4096: U4096::LIMBS => groups::MODP_4096, Uint::from_u8(2), None);
group_params!(
    /// Group 17 (RFC 3526 section 6).
    modp_6144: U6144::LIMBS => groups::MODP_6144, Uint::from_u8(2), None);
group_params!(
    /// Group 18 (RFC 3526 section 7).
    modp_8192: U8192::LIMBS => groups::MODP_8192, Uint::from_u8(2), None);
group_params!(
    /// Group 22 (RFC 5114 section 2.1).
    modp_1024_160: U1024::LIMBS => groups::MODP_1024_160_P, groups::MODP_1024_160_G,
    Some((groups::MODP_1024_160_Q.resize(), 160)));
group_params!(
    /// Group 23 (RFC 5114 section 2.2).
    modp_2048_224: U2048::LIMBS => groups::MODP_2048_224_P, groups::MODP_2048_224_G,
    Some((groups::MODP_2048_224_Q.resize(), 224)));
group_params!(
    /// Group 24 (RFC 5114 section 2.3).
    modp_2048_256: U2048::LIMBS => groups::MODP_2048_256_P, groups::MODP_2048_256_G,
    Some((groups::MODP_2048_256_Q.resize(), 256)));

/// Runs `$body` with `$params` bound to the `&'static` [`Params`] of `$group` (of the right
/// width for that group).
macro_rules! with_params {
    ($group:expr, $params:ident => $body:expr) => {
        match $group {
            DhGroup::Modp768 => {
                let $params = modp_768();
                $body
            }
            DhGroup::Modp1024 => {
                let $params = modp_1024();
                $body
            }
            DhGroup::Modp1536 => {
                let $params = modp_1536();
                $body
            }
            DhGroup::Modp2048 => {
                let $params = modp_2048();
                $body
            }
            DhGroup::Modp3072 => {
                let $params = modp_3072();
                $body
            }
            DhGroup::Modp4096 => {
                let $params = modp_4096();
                $body
            }
            DhGroup::Modp6144 => {
                let $params = modp_6144();
                $body
            }
            DhGroup::Modp8192 => {
                let $params = modp_8192();
                $body
            }
            DhGroup::Modp1024S160 => {
                let $params = modp_1024_160();
                $body
            }
            DhGroup::Modp2048S224 => {
                let $params = modp_2048_224();
                $body
            }
            DhGroup::Modp2048S256 => {
                let $params = modp_2048_256();
                $body
            }
        }
    };
}

/// Private exponent length in bits.
///
/// Safe-prime groups:
/// RFC 3526 section 8 asks for an exponent with twice the entropy of the group's strength
/// and gives two strength estimates per group; we take the higher estimate's exponent size
/// (the right-hand column), rounded up to a multiple of 64 bits and never under 256 bits,
/// which also meets SP 800-56A's "at least twice the security strength". RFC 5114 groups
/// use an exponent uniform in `[1, q-1]` (SP 800-56A section 5.6.1.1), so their length is
/// the bit length of q.
const fn exponent_bits(group: DhGroup) -> usize {
    match group {
        DhGroup::Modp768 | DhGroup::Modp1024 | DhGroup::Modp1536 => 256,
        DhGroup::Modp2048 => 320,
        DhGroup::Modp3072 => 448,
        DhGroup::Modp4096 => 512,
        DhGroup::Modp6144 => 576,
        DhGroup::Modp8192 => 640,
        DhGroup::Modp1024S160 => 160,
        DhGroup::Modp2048S224 => 224,
        DhGroup::Modp2048S256 => 256,
    }
}

/// Reads big-endian `bytes` into an integer, left-padding with zeros; `None` if too long.
fn uint_from_be<const L: usize>(bytes: &[u8]) -> Option<Uint<L>> {
    if bytes.len() > L * Limb::BYTES {
        return None;
    }
    let mut words = [Word::default(); L];
    for (i, byte) in bytes.iter().rev().enumerate() {
        let word = words.get_mut(i / Limb::BYTES)?;
        *word |= Word::from(*byte) << (8 * (i % Limb::BYTES));
    }
    let value = Uint::from_words(words);
    words.zeroize();
    Some(value)
}

/// Writes `value` big-endian into all of `out`, which is `L * Limb::BYTES` long.
fn uint_to_be<const L: usize>(value: &Uint<L>, out: &mut [u8]) {
    for (chunk, word) in out.rchunks_exact_mut(Limb::BYTES).zip(value.as_words()) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
}

/// `base^exponent mod p`, in time that depends only on `exponent_bits` and the width.
fn pow_mod<const L: usize>(
    params: &DynResidueParams<L>,
    base: &Uint<L>,
    exponent: &Uint<L>,
    exponent_bits: usize,
) -> Uint<L> {
    let mut power = DynResidue::new(base, *params).pow_bounded_exp(exponent, exponent_bits);
    let value = power.retrieve();
    power.zeroize();
    value
}

/// A Diffie-Hellman private value with its public value, for one exchange.
///
/// The exponent is wiped on drop and `Debug` prints only the group. Public values and
/// shared secrets are exactly as long as the modulus, left-padded with zeros
/// (RFC 2409 section 5: "g^xy ... padded with zeros ... to the length of the prime").
pub struct DhPrivateKey {
    group: DhGroup,
    /// Big-endian exponent.
    exponent: SecretBytes,
    /// Fixed bit length over which exponentiation runs (public).
    exponent_bits: usize,
    /// `g^x mod p`, modulus length.
    public: Vec<u8>,
}

impl DhPrivateKey {
    /// Draws a fresh private exponent for `group` from `rng` and computes the public value.
    ///
    /// Safe-prime groups: a random exponent of
    /// [`DhPrivateKey::exponent_bits`] bits with the top bit set, so the length (and
    /// therefore the exponentiation time) is fixed. RFC 5114 groups: uniform in `[1, q-1]`
    /// by rejection sampling.
    pub fn generate(group: DhGroup, rng: &mut impl CryptoRngCore) -> Self {
        let exponent = with_params!(group, params => random_exponent(group, params, rng));
        Self::with_exponent(group, exponent, exponent_bits(group))
    }

    /// Builds a key from a known big-endian exponent, for known-answer tests and replay.
    ///
    /// The exponent must lie in `[1, p-2]` (safe-prime groups) or `[1, q-1]` (RFC 5114
    /// groups). Exponentiation runs over the group's usual exponent length or the given
    /// exponent's byte length, whichever is longer.
    pub fn from_exponent(group: DhGroup, exponent: &[u8]) -> Result<Self, CryptoError> {
        let invalid = CryptoError::InvalidPrivateExponent { group };
        let in_range = with_params!(group, params => {
            let Some(mut x) = uint_from_be(exponent) else {
                return Err(invalid);
            };
            let upper = match params.q {
                Some((q, _)) => q,
                None => params.p.wrapping_sub(&Uint::ONE),
            };
            let ok = x != Uint::ZERO && x < upper;
            x.zeroize();
            ok
        });
        if !in_range {
            return Err(invalid);
        }
        let bits = exponent_bits(group).max(exponent.len() * 8);
        Ok(Self::with_exponent(
            group,
            SecretBytes::from_slice(exponent),
            bits,
        ))
    }

    fn with_exponent(group: DhGroup, exponent: SecretBytes, exponent_bits: usize) -> Self {
        let mut public = vec![0u8; group.modulus_len()];
        with_params!(group, params => {
            let mut x = uint_from_be(exponent.expose()).unwrap_or_default();
            let y = pow_mod(&params.residue, &params.g, &x, exponent_bits);
            x.zeroize();
            uint_to_be(&y, &mut public);
        });
        Self {
            group,
            exponent,
            exponent_bits,
            public,
        }
    }

    /// The group this key belongs to.
    pub fn group(&self) -> DhGroup {
        self.group
    }

    /// Bit length over which the private exponentiation runs (public information).
    pub fn exponent_bits(&self) -> usize {
        self.exponent_bits
    }

    /// Our public value `g^x mod p`, modulus length, left-padded (the KE payload body).
    pub fn public_key(&self) -> Vec<u8> {
        self.public.clone()
    }

    /// Our public value without copying it.
    pub fn public_key_bytes(&self) -> &[u8] {
        &self.public
    }

    /// The shared secret `peer^x mod p`, modulus length, left-padded (RFC 2409 section 5).
    ///
    /// Rejects a peer value that is not exactly the modulus length (RFC 2409 section 5),
    /// that lies outside `[2, p-2]` (0, 1 and p-1 would force a known secret; RFC 6989
    /// section 2.1, SP 800-56A section 5.6.2.3.1), or, for RFC 5114 groups, that is not in
    /// the order-q subgroup (RFC 6989 section 2.2, SP 800-56A section 5.6.2.3.2).
    pub fn shared_secret(&self, peer_public: &[u8]) -> Result<SecretBytes, CryptoError> {
        let group = self.group;
        let expected = group.modulus_len();
        if peer_public.len() != expected {
            tracing::debug!(
                group = group.id(),
                expected,
                actual = peer_public.len(),
                "peer DH public value has the wrong length"
            );
            return Err(CryptoError::InvalidPublicValueLength {
                group,
                expected,
                actual: peer_public.len(),
            });
        }

        let mut secret = vec![0u8; expected];
        with_params!(group, params => {
            let y = uint_from_be(peer_public).unwrap_or_default();
            check_public(group, params, &y)?;
            let mut x = uint_from_be(self.exponent.expose()).unwrap_or_default();
            let mut z = pow_mod(&params.residue, &y, &x, self.exponent_bits);
            uint_to_be(&z, &mut secret);
            x.zeroize();
            z.zeroize();
        });
        Ok(SecretBytes::new(secret))
    }
}

/// Draws an exponent for `group` (see [`DhPrivateKey::generate`]), big-endian.
fn random_exponent<const L: usize>(
    group: DhGroup,
    params: &Params<L>,
    rng: &mut impl CryptoRngCore,
) -> SecretBytes {
    match params.q {
        None => {
            let bits = exponent_bits(group);
            let mut bytes = vec![0u8; bits / 8];
            rng.fill_bytes(&mut bytes);
            if let Some(top) = bytes.first_mut() {
                *top |= 0x80;
            }
            SecretBytes::new(bytes)
        }
        Some((q, q_bits)) => {
            let len = q_bits.div_ceil(8);
            let mut bytes = vec![0u8; len];
            // Each draw is accepted with probability above 1/2 (q's top bit is set), so 128
            // draws all failing has probability under 2^-128. If it ever happens we fall
            // back to the last draw with its top bit cleared, which is below q but not
            // uniform, and never zero.
            for _ in 0..128 {
                rng.fill_bytes(&mut bytes);
                if let Some(mut x) = uint_from_be::<L>(&bytes) {
                    let ok = x != Uint::ZERO && x < q;
                    x.zeroize();
                    if ok {
                        return SecretBytes::new(bytes);
                    }
                }
            }
            if let Some(top) = bytes.first_mut() {
                *top &= 0x7f;
            }
            if let Some(last) = bytes.last_mut() {
                *last |= 1;
            }
            SecretBytes::new(bytes)
        }
    }
}

/// Validates a peer's public value `y` (see [`DhPrivateKey::shared_secret`]).
fn check_public<const L: usize>(
    group: DhGroup,
    params: &Params<L>,
    y: &Uint<L>,
) -> Result<(), CryptoError> {
    let reject = |reason: &'static str| {
        tracing::debug!(group = group.id(), reason, "peer DH public value rejected");
        CryptoError::InvalidPublicValue { group, reason }
    };
    let two = Uint::<L>::from_u8(2);
    let p_minus_1 = params.p.wrapping_sub(&Uint::ONE);
    if *y < two {
        return Err(reject("value is 0 or 1"));
    }
    if *y >= p_minus_1 {
        return Err(reject("value is p-1 or not below the prime"));
    }
    if let Some((q, q_bits)) = &params.q {
        if pow_mod(&params.residue, y, q, *q_bits) != Uint::ONE {
            return Err(reject("value is not in the prime-order subgroup"));
        }
    }
    Ok(())
}

impl fmt::Debug for DhPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DhPrivateKey")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn agreement_and_lengths_for_small_groups() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        for group in [
            DhGroup::Modp768,
            DhGroup::Modp1024,
            DhGroup::Modp2048,
            DhGroup::Modp2048S256,
        ] {
            let a = DhPrivateKey::generate(group, &mut rng);
            let b = DhPrivateKey::generate(group, &mut rng);
            assert_eq!(a.public_key().len(), group.modulus_len());
            let sa = a.shared_secret(&b.public_key()).unwrap();
            let sb = b.shared_secret(&a.public_key()).unwrap();
            assert_eq!(sa.len(), group.modulus_len());
            assert!(sa.ct_eq(sb.expose()));
            assert_ne!(a.public_key(), b.public_key());
        }
    }

    #[test]
    fn known_small_exponent_gives_known_public_value() {
        // 2^10 = 1024, left-padded to the modulus length.
        let key = DhPrivateKey::from_exponent(DhGroup::Modp2048, &[10]).unwrap();
        let mut expected = vec![0u8; 256];
        expected[254] = 0x04;
        assert_eq!(key.public_key(), expected);
        // Shared secret with peer value 3: 3^10 = 59049 = 0xe6a9.
        let mut peer = vec![0u8; 256];
        peer[255] = 3;
        let z = key.shared_secret(&peer).unwrap();
        assert_eq!(&z.expose()[254..], &[0xe6, 0xa9]);
        assert!(z.expose()[..254].iter().all(|&b| b == 0));
    }

    #[test]
    fn rejects_peer_values_outside_2_to_p_minus_2() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let key = DhPrivateKey::generate(DhGroup::Modp1024, &mut rng);
        let p = groups::MODP_1024;
        let mut p_bytes = vec![0u8; 128];
        uint_to_be(&p, &mut p_bytes);
        let mut p_minus_1 = p_bytes.clone();
        p_minus_1[127] -= 1;
        let mut p_minus_2 = p_bytes.clone();
        p_minus_2[127] -= 2;
        let mut one = vec![0u8; 128];
        one[127] = 1;
        let mut two = vec![0u8; 128];
        two[127] = 2;
        for bad in [vec![0u8; 128], one, p_minus_1, p_bytes, vec![0xff; 128]] {
            assert!(matches!(
                key.shared_secret(&bad),
                Err(CryptoError::InvalidPublicValue { .. })
            ));
        }
        assert!(key.shared_secret(&two).is_ok());
        assert!(key.shared_secret(&p_minus_2).is_ok());
    }

    #[test]
    fn rejects_peer_value_of_wrong_length() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let key = DhPrivateKey::generate(DhGroup::Modp1024, &mut rng);
        let mut short = key.public_key();
        short.remove(0);
        assert_eq!(
            key.shared_secret(&short).map(|_| ()),
            Err(CryptoError::InvalidPublicValueLength {
                group: DhGroup::Modp1024,
                expected: 128,
                actual: 127
            })
        );
        assert!(key.shared_secret(&[]).is_err());
    }

    #[test]
    fn rejects_rfc5114_peer_value_outside_the_subgroup() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let key = DhPrivateKey::generate(DhGroup::Modp1024S160, &mut rng);
        // 2 is in range but (with overwhelming probability, and checked here) not of order q.
        let mut two = vec![0u8; 128];
        two[127] = 2;
        assert!(matches!(
            key.shared_secret(&two),
            Err(CryptoError::InvalidPublicValue {
                reason: "value is not in the prime-order subgroup",
                ..
            })
        ));
    }

    #[test]
    fn rfc5114_exponent_is_below_q() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        for _ in 0..20 {
            let key = DhPrivateKey::generate(DhGroup::Modp2048S224, &mut rng);
            assert_eq!(key.exponent.len(), 28);
            let x: crypto_bigint::U256 = uint_from_be(key.exponent.expose()).unwrap();
            assert!(x < groups::MODP_2048_224_Q && x != Uint::ZERO);
        }
    }

    #[test]
    fn debug_prints_no_exponent() {
        let key = DhPrivateKey::from_exponent(DhGroup::Modp768, &[0x42]).unwrap();
        assert_eq!(format!("{key:?}"), "DhPrivateKey { group: Modp768, .. }");
    }

    #[test]
    fn rejects_out_of_range_exponent() {
        assert!(DhPrivateKey::from_exponent(DhGroup::Modp768, &[0]).is_err());
        assert!(DhPrivateKey::from_exponent(DhGroup::Modp768, &[0xff; 97]).is_err());
        assert!(DhPrivateKey::from_exponent(DhGroup::Modp1024S160, &[0xff; 20]).is_err());
    }
}
