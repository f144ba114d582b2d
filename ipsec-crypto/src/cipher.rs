//! CBC block ciphers for IKEv1 messages (RFC 2409 Appendix B) and ESP (RFC 2405, RFC 2451,
//! RFC 3602), working in place on the caller's buffer.

use core::fmt;

use aes::{Aes128, Aes192, Aes256};
use cbc::cipher::consts::U16;
use cbc::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyInit};
use cbc::cipher::{Block, BlockCipher, BlockDecrypt, BlockEncrypt, InnerIvInit};
use des::{Des, TdesEde3};

use crate::alg::EncryptionAlgorithm;
use crate::error::CryptoError;

/// The expanded key schedule of one cipher. Every variant wipes itself on drop (the `aes`
/// and `des` crates are built with their `zeroize` feature).
#[derive(Clone)]
enum Schedule {
    Des(Des),
    TripleDes(TdesEde3),
    Aes128(Aes128),
    Aes192(Aes192),
    Aes256(Aes256),
}

/// A CBC cipher with its key schedule, ready to encrypt or decrypt many buffers.
///
/// Each call takes the IV explicitly: ESP carries it in every packet (RFC 2405 section 3.1,
/// RFC 3602 section 3), and IKEv1 chains it from message to message (RFC 2409 Appendix B).
/// Neither call allocates. `Debug` prints the algorithm only.
#[derive(Clone)]
pub struct Cipher {
    alg: EncryptionAlgorithm,
    schedule: Schedule,
}

impl Cipher {
    /// Expands `key` for `alg`.
    ///
    /// Rejects a key of the wrong length, a DES key that is weak or semi-weak
    /// (RFC 2405 section 5), and a 3DES key whose three sub-keys are not all distinct,
    /// which would reduce it to single DES or to two-key 3DES (RFC 2451 section 2.3).
    /// Parity bits are ignored, as DES itself ignores them.
    pub fn new(alg: EncryptionAlgorithm, key: &[u8]) -> Result<Self, CryptoError> {
        if key.len() != alg.key_len() {
            return Err(CryptoError::InvalidKeyLength {
                algorithm: alg,
                expected: alg.key_len(),
                actual: key.len(),
            });
        }
        let invalid = |_| CryptoError::InvalidKeyLength {
            algorithm: alg,
            expected: alg.key_len(),
            actual: key.len(),
        };

        let schedule = match alg {
            EncryptionAlgorithm::DesCbc => {
                check_des_key(alg, key)?;
                Schedule::Des(Des::new_from_slice(key).map_err(invalid)?)
            }
            EncryptionAlgorithm::TripleDesCbc => {
                check_triple_des_key(alg, key)?;
                Schedule::TripleDes(TdesEde3::new_from_slice(key).map_err(invalid)?)
            }
            EncryptionAlgorithm::AesCbc128 => {
                Schedule::Aes128(Aes128::new_from_slice(key).map_err(invalid)?)
            }
            EncryptionAlgorithm::AesCbc192 => {
                Schedule::Aes192(Aes192::new_from_slice(key).map_err(invalid)?)
            }
            EncryptionAlgorithm::AesCbc256 => {
                Schedule::Aes256(Aes256::new_from_slice(key).map_err(invalid)?)
            }
        };
        Ok(Self { alg, schedule })
    }

    /// The cipher this key schedule belongs to.
    pub fn algorithm(&self) -> EncryptionAlgorithm {
        self.alg
    }

    /// Block length in bytes, which is also the IV length.
    pub fn block_len(&self) -> usize {
        self.alg.block_len()
    }

    /// Encrypts `buf` in place in CBC mode starting from `iv`.
    ///
    /// `iv` must be one block and `buf` a whole number of blocks (padding is the caller's:
    /// RFC 4303 section 2.4 for ESP, RFC 2409 section 5.3 for IKE).
    pub fn encrypt_cbc(&self, iv: &[u8], buf: &mut [u8]) -> Result<(), CryptoError> {
        self.check(iv, buf)?;
        match &self.schedule {
            Schedule::Des(c) => encrypt_with(c, iv, buf),
            Schedule::TripleDes(c) => encrypt_with(c, iv, buf),
            Schedule::Aes128(c) => encrypt_with(c, iv, buf),
            Schedule::Aes192(c) => encrypt_with(c, iv, buf),
            Schedule::Aes256(c) => encrypt_with(c, iv, buf),
        }
        .map_err(|()| self.not_aligned(buf.len()))
    }

    /// Decrypts `buf` in place in CBC mode starting from `iv`.
    ///
    /// Same length rules as [`Cipher::encrypt_cbc`]. Nothing is authenticated here: check
    /// the ICV (ESP) or the HASH payload (IKE) as well.
    pub fn decrypt_cbc(&self, iv: &[u8], buf: &mut [u8]) -> Result<(), CryptoError> {
        self.check(iv, buf)?;
        match &self.schedule {
            Schedule::Des(c) => decrypt_with(c, iv, buf),
            Schedule::TripleDes(c) => decrypt_with(c, iv, buf),
            Schedule::Aes128(c) => decrypt_with(c, iv, buf),
            Schedule::Aes192(c) => decrypt_with(c, iv, buf),
            Schedule::Aes256(c) => decrypt_with(c, iv, buf),
        }
        .map_err(|()| self.not_aligned(buf.len()))
    }

    /// Encrypts several independent buffers in place in CBC mode, each from its own IV:
    /// the same bytes as [`Cipher::encrypt_cbc`] on each job in turn.
    ///
    /// CBC encryption is a chain: each block waits for the one before, so one buffer
    /// keeps the AES unit's pipeline mostly idle. Here AES takes up to [`CBC_LANES`]
    /// buffers at once and encrypts block `n` of all of them in one call, which the
    /// AES-NI backend pipelines (the gain is largest when the buffers have about the same
    /// length, as a batch of full-size packets does). DES and 3DES have no parallel
    /// backend and encrypt the jobs one after the other.
    ///
    /// Every job is checked before any is touched: on an IV of the wrong length or a
    /// buffer that is not a whole number of blocks, nothing is encrypted.
    pub fn encrypt_cbc_many(&self, jobs: &mut [CbcJob<'_>]) -> Result<(), CryptoError> {
        for job in jobs.iter() {
            self.check(job.iv, job.buf)?;
        }
        let parallel = jobs.len() > 1;
        match &self.schedule {
            Schedule::Aes128(c) if parallel => encrypt_lanes(c, jobs),
            Schedule::Aes192(c) if parallel => encrypt_lanes(c, jobs),
            Schedule::Aes256(c) if parallel => encrypt_lanes(c, jobs),
            // One job (the lanes would only add their gathering), or no parallel backend.
            _ => {
                for job in jobs.iter_mut() {
                    self.encrypt_cbc(job.iv, job.buf)?;
                }
            }
        }
        Ok(())
    }

    fn check(&self, iv: &[u8], buf: &[u8]) -> Result<(), CryptoError> {
        let block_len = self.alg.block_len();
        if iv.len() != block_len {
            return Err(CryptoError::InvalidIvLength {
                algorithm: self.alg,
                expected: block_len,
                actual: iv.len(),
            });
        }
        if buf.len() % block_len != 0 {
            return Err(self.not_aligned(buf.len()));
        }
        Ok(())
    }

    fn not_aligned(&self, len: usize) -> CryptoError {
        CryptoError::NotBlockAligned {
            algorithm: self.alg,
            block_len: self.alg.block_len(),
            len,
        }
    }
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cipher")
            .field("algorithm", &self.alg)
            .finish_non_exhaustive()
    }
}

/// How many buffers [`Cipher::encrypt_cbc_many`] encrypts side by side with AES: the
/// number of blocks the `aes` crate's AES-NI backend pipelines in one call.
pub const CBC_LANES: usize = 8;

/// One buffer of [`Cipher::encrypt_cbc_many`]: the IV it starts from (one block) and the
/// blocks to encrypt in place. The default job is empty (and refused for its IV), a
/// placeholder for arrays of jobs on the stack.
#[derive(Debug, Default)]
pub struct CbcJob<'a> {
    /// The IV: one cipher block.
    pub iv: &'a [u8],
    /// The plaintext, a whole number of blocks, replaced by its ciphertext.
    pub buf: &'a mut [u8],
}

/// AES-CBC of up to [`CBC_LANES`] jobs at a time, block `n` of every job in one
/// `encrypt_blocks` call. The jobs have been checked (16-byte IVs, whole blocks).
///
/// Within a group, all lanes run together up to the shortest job's length; what is left
/// of the longer ones is a new, smaller group that goes on from each lane's last
/// ciphertext block (so a batch of full-size packets with one short one keeps its
/// lanes). A group of one job takes the `cbc` crate's serial loop, which is faster for a
/// single chain.
fn encrypt_lanes<C>(cipher: &C, jobs: &mut [CbcJob<'_>])
where
    C: BlockEncrypt<BlockSize = U16> + BlockCipher + Clone,
{
    const BLOCK: usize = 16;
    for group in jobs.chunks_mut(CBC_LANES) {
        if let [job] = group {
            // Checked by the caller: cannot fail.
            let _ = encrypt_with(cipher, job.iv, job.buf);
            continue;
        }
        // Each lane's block in flight: its IV, then its last ciphertext block.
        let mut blocks = [Block::<C>::default(); CBC_LANES];
        for (block, job) in blocks.iter_mut().zip(group.iter()) {
            if let Ok(iv) = <[u8; BLOCK]>::try_from(job.iv) {
                *block = iv.into();
            }
        }
        let n = group.len().min(CBC_LANES);
        let shortest = group.iter().map(|j| j.buf.len()).min().unwrap_or(0);
        for offset in (0..shortest).step_by(BLOCK) {
            for (block, job) in blocks.iter_mut().zip(group.iter()) {
                let plain = job.buf.get(offset..offset + BLOCK).unwrap_or_default();
                if let Ok(plain) = <[u8; BLOCK]>::try_from(plain) {
                    let chained = u128::from_ne_bytes((*block).into()) ^ u128::from_ne_bytes(plain);
                    *block = chained.to_ne_bytes().into();
                }
            }
            cipher.encrypt_blocks(blocks.get_mut(..n).unwrap_or_default());
            for (block, job) in blocks.iter().zip(group.iter_mut()) {
                if let Some(out) = job.buf.get_mut(offset..offset + BLOCK) {
                    out.copy_from_slice(block);
                }
            }
        }
        // The longer jobs' remainders, each chained from its last block.
        let mut rest: [CbcJob<'_>; CBC_LANES] = Default::default();
        let mut m = 0;
        for (block, job) in blocks.iter().zip(group.iter_mut()) {
            let tail = job.buf.get_mut(shortest..).unwrap_or_default();
            if let (false, Some(slot)) = (tail.is_empty(), rest.get_mut(m)) {
                *slot = CbcJob {
                    iv: block.as_slice(),
                    buf: tail,
                };
                m += 1;
            }
        }
        encrypt_lanes(cipher, rest.get_mut(..m).unwrap_or_default());
    }
}

/// CBC-encrypts `buf` with a copy of the key schedule (the copy is wiped when dropped).
fn encrypt_with<C>(cipher: &C, iv: &[u8], buf: &mut [u8]) -> Result<(), ()>
where
    C: BlockEncrypt + BlockCipher + Clone,
{
    let enc = cbc::Encryptor::<C>::inner_iv_slice_init(cipher.clone(), iv).map_err(|_| ())?;
    let len = buf.len();
    enc.encrypt_padded_mut::<NoPadding>(buf, len)
        .map(|_| ())
        .map_err(|_| ())
}

/// CBC-decrypts `buf` with a copy of the key schedule (the copy is wiped when dropped).
fn decrypt_with<C>(cipher: &C, iv: &[u8], buf: &mut [u8]) -> Result<(), ()>
where
    C: BlockDecrypt + BlockCipher + Clone,
{
    let dec = cbc::Decryptor::<C>::inner_iv_slice_init(cipher.clone(), iv).map_err(|_| ())?;
    dec.decrypt_padded_mut::<NoPadding>(buf)
        .map(|_| ())
        .map_err(|_| ())
}

/// The DES weak and semi-weak keys (FIPS 74 section 3.6, referenced by RFC 2405 section 5),
/// with parity bits cleared.
const DES_WEAK_KEYS: [[u8; 8]; 16] = [
    // The four weak keys: encryption and decryption are the same permutation.
    [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
    [0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe],
    [0xe0, 0xe0, 0xe0, 0xe0, 0xf0, 0xf0, 0xf0, 0xf0],
    [0x1e, 0x1e, 0x1e, 0x1e, 0x0e, 0x0e, 0x0e, 0x0e],
    // The six pairs of semi-weak keys: one key of a pair decrypts what the other encrypts.
    [0x00, 0xfe, 0x00, 0xfe, 0x00, 0xfe, 0x00, 0xfe],
    [0xfe, 0x00, 0xfe, 0x00, 0xfe, 0x00, 0xfe, 0x00],
    [0x1e, 0xe0, 0x1e, 0xe0, 0x0e, 0xf0, 0x0e, 0xf0],
    [0xe0, 0x1e, 0xe0, 0x1e, 0xf0, 0x0e, 0xf0, 0x0e],
    [0x00, 0xe0, 0x00, 0xe0, 0x00, 0xf0, 0x00, 0xf0],
    [0xe0, 0x00, 0xe0, 0x00, 0xf0, 0x00, 0xf0, 0x00],
    [0x1e, 0xfe, 0x1e, 0xfe, 0x0e, 0xfe, 0x0e, 0xfe],
    [0xfe, 0x1e, 0xfe, 0x1e, 0xfe, 0x0e, 0xfe, 0x0e],
    [0x00, 0x1e, 0x00, 0x1e, 0x00, 0x0e, 0x00, 0x0e],
    [0x1e, 0x00, 0x1e, 0x00, 0x0e, 0x00, 0x0e, 0x00],
    [0xe0, 0xfe, 0xe0, 0xfe, 0xf0, 0xfe, 0xf0, 0xfe],
    [0xfe, 0xe0, 0xfe, 0xe0, 0xfe, 0xf0, 0xfe, 0xf0],
];

/// Whether two 8-byte DES keys are equal once parity bits (the low bit of each byte) are
/// ignored. Keys are secret, so this does not stop at the first difference.
fn des_key_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= (x ^ y) & 0xfe;
    }
    a.len() == b.len() && diff == 0
}

/// Whether one 8-byte DES key is weak or semi-weak.
fn is_weak_des_key(key: &[u8]) -> bool {
    DES_WEAK_KEYS
        .iter()
        .fold(false, |found, weak| found | des_key_eq(key, weak))
}

/// RFC 2405 section 5: weak and semi-weak DES keys must not be used.
fn check_des_key(alg: EncryptionAlgorithm, key: &[u8]) -> Result<(), CryptoError> {
    if is_weak_des_key(key) {
        return Err(CryptoError::WeakKey {
            algorithm: alg,
            reason: "weak or semi-weak DES key",
        });
    }
    Ok(())
}

/// RFC 2451 section 2.3 and RFC 2409 Appendix B: each 3DES sub-key must be usable, and
/// the three must differ pairwise, or the cipher collapses to (two-key) single DES.
fn check_triple_des_key(alg: EncryptionAlgorithm, key: &[u8]) -> Result<(), CryptoError> {
    let (k1, rest) = key.split_at(key.len().min(8));
    let (k2, k3) = rest.split_at(rest.len().min(8));
    if is_weak_des_key(k1) | is_weak_des_key(k2) | is_weak_des_key(k3) {
        return Err(CryptoError::WeakKey {
            algorithm: alg,
            reason: "a 3DES sub-key is a weak or semi-weak DES key",
        });
    }
    if des_key_eq(k1, k2) | des_key_eq(k2, k3) | des_key_eq(k1, k3) {
        return Err(CryptoError::WeakKey {
            algorithm: alg,
            reason: "3DES sub-keys are not pairwise distinct",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_wrong_key_length() {
        for alg in EncryptionAlgorithm::ALL {
            let key = vec![0x5a; alg.key_len() + 1];
            assert_eq!(
                Cipher::new(alg, &key).map(|_| ()),
                Err(CryptoError::InvalidKeyLength {
                    algorithm: alg,
                    expected: alg.key_len(),
                    actual: alg.key_len() + 1
                })
            );
        }
    }

    #[test]
    fn rejects_weak_and_semi_weak_des_keys_with_any_parity() {
        for weak in DES_WEAK_KEYS {
            // As listed (parity cleared) and with odd parity set on every byte.
            let mut odd = weak;
            for b in &mut odd {
                if b.count_ones() % 2 == 0 {
                    *b |= 1;
                }
            }
            for key in [weak, odd] {
                assert!(matches!(
                    Cipher::new(EncryptionAlgorithm::DesCbc, &key),
                    Err(CryptoError::WeakKey { .. })
                ));
            }
        }
        // FIPS 74 spelling of two of them, with parity.
        for key in [
            [0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01],
            [0x1f, 0xe0, 0x1f, 0xe0, 0x0e, 0xf1, 0x0e, 0xf1],
        ] {
            assert!(Cipher::new(EncryptionAlgorithm::DesCbc, &key).is_err());
        }
        assert!(Cipher::new(
            EncryptionAlgorithm::DesCbc,
            b"\x01\x23\x45\x67\x89\xab\xcd\xef"
        )
        .is_ok());
    }

    #[test]
    fn rejects_triple_des_key_with_repeated_sub_keys() {
        let a = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef];
        let b = [0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01];
        let c = [0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23];
        let cat = |x: [u8; 8], y: [u8; 8], z: [u8; 8]| [x, y, z].concat();
        let alg = EncryptionAlgorithm::TripleDesCbc;
        assert!(Cipher::new(alg, &cat(a, b, c)).is_ok());
        for key in [cat(a, a, c), cat(a, b, b), cat(a, b, a)] {
            assert!(matches!(
                Cipher::new(alg, &key),
                Err(CryptoError::WeakKey { .. })
            ));
        }
        // Differs only in parity bits: still the same DES key.
        let mut a_parity = a;
        a_parity[0] ^= 1;
        assert!(Cipher::new(alg, &cat(a, a_parity, c)).is_err());
        assert!(Cipher::new(alg, &cat(a, b, [0xfe; 8])).is_err());
    }

    #[test]
    fn rejects_bad_iv_and_unaligned_buffer() {
        let cipher = Cipher::new(EncryptionAlgorithm::AesCbc128, &[7; 16]).unwrap();
        let mut buf = [0u8; 32];
        assert!(matches!(
            cipher.encrypt_cbc(&[0; 8], &mut buf),
            Err(CryptoError::InvalidIvLength {
                expected: 16,
                actual: 8,
                ..
            })
        ));
        assert!(matches!(
            cipher.decrypt_cbc(&[0; 16], &mut buf[..20]),
            Err(CryptoError::NotBlockAligned { len: 20, .. })
        ));
        // An empty buffer is a whole number of blocks.
        assert!(cipher.encrypt_cbc(&[0; 16], &mut []).is_ok());
        assert!(cipher.decrypt_cbc(&[0; 16], &mut []).is_ok());
    }

    #[test]
    fn key_schedules_wipe_themselves_on_drop() {
        // Fails to compile if the `zeroize` features of `aes` or `des` are lost.
        fn wipes<T: zeroize::ZeroizeOnDrop>() {}
        wipes::<Des>();
        wipes::<TdesEde3>();
        wipes::<Aes128>();
        wipes::<Aes192>();
        wipes::<Aes256>();
        wipes::<crate::hash::HmacKey>();
        wipes::<crate::SecretBytes>();
    }

    #[test]
    fn debug_prints_no_key_bytes() {
        let cipher = Cipher::new(EncryptionAlgorithm::AesCbc128, &[0xab; 16]).unwrap();
        let text = format!("{cipher:?}");
        assert_eq!(text, "Cipher { algorithm: AesCbc128, .. }");
    }
}
