//! Property tests: Diffie-Hellman agreement in every group, CBC round trips for every cipher,
//! several buffers encrypted side by side equal to one at a time, and ICV verification for
//! every integrity algorithm.

use ipsec_crypto::{
    CbcJob, Cipher, CryptoError, DhGroup, DhPrivateKey, EncryptionAlgorithm, Integrity,
    IntegrityAlgorithm, CBC_LANES,
};
use proptest::prelude::*;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// Both sides of an exchange in `group` from one seed agree, on a secret of modulus length.
fn agree(group: DhGroup, seed: u64) -> Result<(), TestCaseError> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let a = DhPrivateKey::generate(group, &mut rng);
    let b = DhPrivateKey::generate(group, &mut rng);
    prop_assert_eq!(a.public_key().len(), group.modulus_len());
    prop_assert_eq!(b.public_key().len(), group.modulus_len());
    prop_assert_ne!(a.public_key(), b.public_key());
    let za = a
        .shared_secret(&b.public_key())
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let zb = b
        .shared_secret(&a.public_key())
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(za.len(), group.modulus_len());
    prop_assert!(za.ct_eq(zb.expose()));
    Ok(())
}

/// Fewer cases for the big groups: an 8192-bit exponentiation in an unoptimised test build
/// takes a large fraction of a second.
fn cases(group: DhGroup) -> u32 {
    match group.modulus_len() {
        0..=256 => 8,
        257..=384 => 4,
        _ => 2,
    }
}

macro_rules! dh_agreement {
    ($($name:ident => $group:expr,)*) => {$(
        proptest! {
            #![proptest_config(ProptestConfig::with_cases(cases($group)))]
            #[test]
            fn $name(seed in any::<u64>()) {
                agree($group, seed)?;
            }
        }
    )*};
}

dh_agreement! {
    dh_agreement_group_1 => DhGroup::Modp768,
    dh_agreement_group_2 => DhGroup::Modp1024,
    dh_agreement_group_5 => DhGroup::Modp1536,
    dh_agreement_group_14 => DhGroup::Modp2048,
    dh_agreement_group_15 => DhGroup::Modp3072,
    dh_agreement_group_16 => DhGroup::Modp4096,
    dh_agreement_group_17 => DhGroup::Modp6144,
    dh_agreement_group_18 => DhGroup::Modp8192,
    dh_agreement_group_22 => DhGroup::Modp1024S160,
    dh_agreement_group_23 => DhGroup::Modp2048S224,
    dh_agreement_group_24 => DhGroup::Modp2048S256,
}

#[test]
fn dh_agreement_covers_every_group() {
    // Keep the macro list above in step with the supported groups.
    assert_eq!(DhGroup::ALL.len(), 11);
}

fn any_cipher() -> impl Strategy<Value = EncryptionAlgorithm> {
    prop::sample::select(EncryptionAlgorithm::ALL.to_vec())
}

fn any_integrity() -> impl Strategy<Value = IntegrityAlgorithm> {
    prop::sample::select(IntegrityAlgorithm::ALL.to_vec())
}

proptest! {
    #[test]
    fn cbc_round_trips_for_every_cipher(
        alg in any_cipher(),
        key in prop::collection::vec(any::<u8>(), 32),
        iv in prop::collection::vec(any::<u8>(), 16),
        blocks in 0usize..40,
        fill in any::<u8>(),
    ) {
        // A random key is weak for DES/3DES with negligible probability; skip if so.
        let Ok(cipher) = Cipher::new(alg, &key[..alg.key_len()]) else {
            return Ok(());
        };
        let iv = &iv[..alg.block_len()];
        let plaintext: Vec<u8> = (0..blocks * alg.block_len())
            .map(|i| fill.wrapping_add(u8::try_from(i % 251).unwrap_or(0)))
            .collect();
        let mut buf = plaintext.clone();
        cipher.encrypt_cbc(iv, &mut buf).unwrap();
        if blocks > 0 {
            prop_assert_ne!(&buf, &plaintext);
        }
        cipher.decrypt_cbc(iv, &mut buf).unwrap();
        prop_assert_eq!(buf, plaintext);
    }

    /// Any number of buffers (more than one group of lanes, of mixed lengths, empty
    /// ones too) come out of `encrypt_cbc_many` exactly as `encrypt_cbc` makes them.
    #[test]
    fn cbc_many_equals_one_at_a_time(
        alg in any_cipher(),
        key in prop::collection::vec(any::<u8>(), 32),
        jobs in prop::collection::vec(
            (prop::collection::vec(any::<u8>(), 16), 0usize..100, any::<u8>()),
            0..(3 * CBC_LANES),
        ),
    ) {
        let Ok(cipher) = Cipher::new(alg, &key[..alg.key_len()]) else {
            return Ok(());
        };
        let bl = alg.block_len();
        let ivs: Vec<&[u8]> = jobs.iter().map(|(iv, _, _)| &iv[..bl]).collect();
        let plain: Vec<Vec<u8>> = jobs
            .iter()
            .map(|(_, blocks, fill)| (0..blocks * bl).map(|i| fill ^ i.to_le_bytes()[0]).collect())
            .collect();
        let mut one = plain.clone();
        for (iv, buf) in ivs.iter().zip(one.iter_mut()) {
            cipher.encrypt_cbc(iv, buf).unwrap();
        }
        let mut many = plain.clone();
        let mut batch: Vec<CbcJob<'_>> = ivs
            .iter()
            .zip(many.iter_mut())
            .map(|(iv, buf)| CbcJob { iv, buf })
            .collect();
        cipher.encrypt_cbc_many(&mut batch).unwrap();
        prop_assert_eq!(many, one);
    }

    /// One bad job (short IV or unaligned buffer) anywhere refuses the whole call and
    /// leaves every buffer as it was.
    #[test]
    fn cbc_many_checks_every_job_first(
        alg in any_cipher(),
        count in 1usize..(2 * CBC_LANES),
        bad in any::<prop::sample::Index>(),
        short_iv in any::<bool>(),
    ) {
        let key: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
        let cipher = Cipher::new(alg, &key[..alg.key_len()]).unwrap();
        let bl = alg.block_len();
        let bad = bad.index(count);
        let iv = vec![7u8; bl];
        let mut bufs: Vec<Vec<u8>> = (0..count)
            .map(|i| vec![i.to_le_bytes()[0]; if i == bad && !short_iv { 3 * bl + 1 } else { 3 * bl }])
            .collect();
        let before = bufs.clone();
        let mut batch: Vec<CbcJob<'_>> = bufs
            .iter_mut()
            .enumerate()
            .map(|(i, buf)| CbcJob { iv: if i == bad && short_iv { &iv[1..] } else { &iv }, buf })
            .collect();
        let err = cipher.encrypt_cbc_many(&mut batch).unwrap_err();
        let expected_iv_error = matches!(err, CryptoError::InvalidIvLength { .. });
        prop_assert_eq!(expected_iv_error, short_iv, "{}", err);
        prop_assert_eq!(bufs, before);
    }

    #[test]
    fn cbc_rejects_any_unaligned_length(alg in any_cipher(), len in 0usize..200) {
        // 32 distinct bytes, so no DES sub-key repeats.
        let key: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
        let cipher = Cipher::new(alg, &key[..alg.key_len()]).unwrap();
        let iv = vec![0u8; alg.block_len()];
        let mut buf = vec![0u8; len];
        let aligned = len % alg.block_len() == 0;
        prop_assert_eq!(cipher.encrypt_cbc(&iv, &mut buf).is_ok(), aligned);
        prop_assert_eq!(cipher.decrypt_cbc(&iv, &mut buf).is_ok(), aligned);
    }

    #[test]
    fn icv_verifies_and_detects_any_single_bit_flip(
        alg in any_integrity(),
        key in prop::collection::vec(any::<u8>(), 64),
        data in prop::collection::vec(any::<u8>(), 0..300),
        bit in any::<prop::sample::Index>(),
    ) {
        let mac = Integrity::new(alg, &key[..alg.key_len()]).unwrap();
        let mut icv = vec![0u8; mac.icv_len()];
        mac.compute(&[&data], &mut icv).unwrap();
        prop_assert!(mac.verify(&[&data], &icv));

        // Flip one bit anywhere in data or ICV.
        let total_bits = (data.len() + icv.len()) * 8;
        let i = bit.index(total_bits);
        let (mut data2, mut icv2) = (data.clone(), icv.clone());
        if i < data.len() * 8 {
            data2[i / 8] ^= 1 << (i % 8);
        } else {
            let j = i - data.len() * 8;
            icv2[j / 8] ^= 1 << (j % 8);
        }
        prop_assert!(!mac.verify(&[&data2], &icv2));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Arbitrary peer bytes never panic: they give a secret of modulus length or a typed error.
    #[test]
    fn shared_secret_accepts_or_rejects_any_peer_bytes(
        group in prop::sample::select(vec![DhGroup::Modp768, DhGroup::Modp1024, DhGroup::Modp1024S160]),
        peer in prop::collection::vec(any::<u8>(), 0..140),
        pad_to_modulus in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let key = DhPrivateKey::generate(group, &mut ChaCha20Rng::seed_from_u64(seed));
        let mut peer = peer;
        if pad_to_modulus {
            peer.resize(group.modulus_len(), 0xff);
        }
        match key.shared_secret(&peer) {
            Ok(z) => {
                prop_assert_eq!(peer.len(), group.modulus_len());
                prop_assert_eq!(z.len(), group.modulus_len());
            }
            Err(e) => {
                let typed = matches!(
                    e,
                    CryptoError::InvalidPublicValue { .. }
                        | CryptoError::InvalidPublicValueLength { .. }
                );
                prop_assert!(typed, "unexpected error {:?}", e);
            }
        }
    }

    /// Any exponent bytes are accepted into a key or rejected with a typed error.
    #[test]
    fn from_exponent_accepts_or_rejects_any_bytes(
        group in prop::sample::select(vec![DhGroup::Modp768, DhGroup::Modp1024S160]),
        exponent in prop::collection::vec(any::<u8>(), 0..100),
    ) {
        match DhPrivateKey::from_exponent(group, &exponent) {
            Ok(key) => prop_assert_eq!(key.public_key().len(), group.modulus_len()),
            Err(e) => prop_assert_eq!(e, CryptoError::InvalidPrivateExponent { group }),
        }
    }
}

proptest! {
    /// Keys of any length and content give a cipher or a typed error, never a panic.
    #[test]
    fn cipher_new_accepts_or_rejects_any_key(
        alg in any_cipher(),
        key in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        match Cipher::new(alg, &key) {
            Ok(c) => prop_assert_eq!(c.algorithm(), alg),
            Err(CryptoError::InvalidKeyLength { expected, actual, .. }) => {
                prop_assert_eq!(expected, alg.key_len());
                prop_assert_eq!(actual, key.len());
                prop_assert_ne!(actual, expected);
            }
            Err(CryptoError::WeakKey { algorithm, .. }) => {
                prop_assert!(algorithm.is_weak());
                prop_assert_eq!(key.len(), alg.key_len());
            }
            Err(e) => prop_assert!(false, "unexpected error {:?}", e),
        }
    }

    /// Integrity keys of any length give a key or a typed error, never a panic.
    #[test]
    fn integrity_new_accepts_exactly_the_key_length(
        alg in any_integrity(),
        key in prop::collection::vec(any::<u8>(), 0..80),
    ) {
        prop_assert_eq!(Integrity::new(alg, &key).is_ok(), key.len() == alg.key_len());
    }
}
