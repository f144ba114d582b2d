//! ESP material for the benchmarks: a sender and a receiver [`DataPlane`] sharing one pair
//! of SAs ([`Bench`]), and the bare cipher + MAC work on the same bytes ([`Bare`]).

use ipsec_crypto::{Cipher, CryptoError, EncryptionAlgorithm, Integrity, IntegrityAlgorithm};
use ipsec_sa::dataplane::{
    DataPlane, DataPlaneConfig, Outbound, Policy, PolicyAction, MAX_HEADROOM, MAX_TAILROOM,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::{esp_encrypted_len, esp_pairs, ipv4_udp_packet, key_bytes};

/// Why a benchmark could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A selector could not be built.
    #[error("selector: {0}")]
    Selector(#[from] ipsec_sa::selector::SelectorError),
    /// The data plane refused the pair.
    #[error("install: {0}")]
    Install(#[from] ipsec_sa::dataplane::InstallError),
    /// A key was refused.
    #[error("crypto: {0}")]
    Crypto(#[from] CryptoError),
    /// The check round trip did not give the inner packet back.
    #[error("round trip failed: {0}")]
    RoundTrip(String),
}

/// Sender A and receiver B of one tunnel, with an inner packet of a fixed size.
pub struct Bench {
    a: DataPlane,
    b: DataPlane,
    rng: ChaCha20Rng,
    inner: Vec<u8>,
    buf: Vec<u8>,
}

fn plane(pair: &ipsec_sa::child::ChildSaPair) -> Result<DataPlane, SetupError> {
    let mut dp = DataPlane::new(DataPlaneConfig::default());
    dp.add_policy(Policy {
        local: pair.local_ts,
        remote: pair.remote_ts,
        action: PolicyAction::Protect,
        priority: 1,
    });
    dp.install(pair)?;
    Ok(dp)
}

impl Bench {
    /// Both data planes for `suite` and an IPv4/UDP inner packet of `size` bytes; checks
    /// one round trip.
    pub fn new(
        suite: (EncryptionAlgorithm, IntegrityAlgorithm),
        size: usize,
    ) -> Result<Self, SetupError> {
        let (pa, pb) = esp_pairs(suite)?;
        let inner = ipv4_udp_packet(size);
        let mut bench = Self {
            a: plane(&pa)?,
            b: plane(&pb)?,
            rng: ChaCha20Rng::seed_from_u64(11),
            buf: vec![0; MAX_HEADROOM + inner.len() + MAX_TAILROOM],
            inner,
        };
        let mut packet = bench.fresh_packet();
        let got = bench.decapsulate(&mut packet);
        if got != bench.inner.len() {
            return Err(SetupError::RoundTrip(format!(
                "{size}-byte packet came back as {got} bytes"
            )));
        }
        Ok(bench)
    }

    /// Puts the inner packet in the buffer and encapsulates it in place; returns the ESP
    /// packet's length (0 if the data plane refused it).
    pub fn encapsulate(&mut self) -> usize {
        let range = MAX_HEADROOM..MAX_HEADROOM + self.inner.len();
        if let Some(dst) = self.buf.get_mut(range.clone()) {
            dst.copy_from_slice(&self.inner);
        }
        match self.a.encapsulate(&mut self.buf, range, &mut self.rng) {
            Ok(Outbound::Protected(t)) => t.packet.len(),
            _ => 0,
        }
    }

    /// Puts the inner packet in each of `batch`'s buffers and seals them all with one
    /// `encapsulate_batch`; returns how many were protected.
    pub fn encapsulate_batch(&mut self, batch: &mut Batch) -> usize {
        for (buf, range) in batch.packets.iter_mut() {
            if let Some(dst) = buf.get_mut(range.clone()) {
                dst.copy_from_slice(&self.inner);
            }
        }
        self.a
            .encapsulate_batch(&mut batch.packets, &mut self.rng, &mut batch.results);
        batch
            .results
            .iter()
            .filter(|r| matches!(r, Ok(Outbound::Protected(_))))
            .count()
    }

    /// Buffers for [`Bench::encapsulate_batch`] of `count` packets of this bench's size.
    pub fn batch(&self, count: usize) -> Batch {
        let range = MAX_HEADROOM..MAX_HEADROOM + self.inner.len();
        Batch {
            packets: (0..count)
                .map(|_| (vec![0; self.buf.len()], range.clone()))
                .collect(),
            results: Vec::with_capacity(count),
        }
    }

    /// A newly encapsulated ESP packet (next sequence number), copied out.
    pub fn fresh_packet(&mut self) -> Vec<u8> {
        let range = MAX_HEADROOM..MAX_HEADROOM + self.inner.len();
        if let Some(dst) = self.buf.get_mut(range.clone()) {
            dst.copy_from_slice(&self.inner);
        }
        match self.a.encapsulate(&mut self.buf, range, &mut self.rng) {
            Ok(Outbound::Protected(t)) => self.buf.get(t.packet).unwrap_or_default().to_vec(),
            _ => Vec::new(),
        }
    }

    /// Decapsulates `packet` in place at B; returns the inner packet's length (0 if dropped).
    pub fn decapsulate(&mut self, packet: &mut [u8]) -> usize {
        self.b.decapsulate(packet).map_or(0, |i| i.inner.len())
    }
}

/// Buffers and results of one [`Bench::encapsulate_batch`], allocated once.
pub struct Batch {
    packets: Vec<(Vec<u8>, std::ops::Range<usize>)>,
    results: Vec<Result<Outbound, ipsec_sa::dataplane::DropError>>,
}

/// The cipher and MAC work ESP does for one packet, without the data plane: CBC over the
/// padded payload and the ICV over SPI, sequence number, IV and ciphertext.
pub struct Bare {
    cipher: Cipher,
    mac: Integrity,
    inner: Vec<u8>,
    /// SPI, sequence number, IV, ciphertext.
    packet: Vec<u8>,
    iv_len: usize,
    encrypted_len: usize,
    icv: [u8; 32],
}

impl Bare {
    /// Keys for `suite` and an inner packet of `size` bytes.
    pub fn new(
        suite: (EncryptionAlgorithm, IntegrityAlgorithm),
        size: usize,
    ) -> Result<Self, SetupError> {
        let inner = ipv4_udp_packet(size);
        let iv_len = suite.0.block_len();
        let encrypted_len = esp_encrypted_len(inner.len(), suite.0.block_len());
        Ok(Self {
            cipher: Cipher::new(suite.0, &key_bytes(suite.0.key_len(), 1))?,
            mac: Integrity::new(suite.1, &key_bytes(suite.1.key_len(), 2))?,
            packet: vec![0x5a; 8 + iv_len + encrypted_len],
            inner,
            iv_len,
            encrypted_len,
            icv: [0; 32],
        })
    }

    /// Copies the inner packet in, encrypts it with its padding, computes the ICV; returns
    /// the ICV's first byte (so the work cannot be optimised away).
    pub fn encrypt_and_mac(&mut self) -> u8 {
        let (head, body) = self.packet.split_at_mut(8 + self.iv_len);
        if let Some(dst) = body.get_mut(..self.inner.len()) {
            dst.copy_from_slice(&self.inner);
        }
        let iv = head.get(8..).unwrap_or_default();
        if self.cipher.encrypt_cbc(iv, body).is_err() {
            return 0;
        }
        if self.mac.compute(&[&self.packet], &mut self.icv).is_err() {
            return 0;
        }
        self.icv[0]
    }

    /// Checks the ICV (constant time) and decrypts in place, as a receiver does; returns
    /// whether the ICV matched (after the first call it does not: the bytes were decrypted
    /// in place, which costs the same).
    pub fn verify_and_decrypt(&mut self) -> bool {
        let icv_len = self.mac.icv_len();
        let ok = self
            .mac
            .verify(&[&self.packet], self.icv.get(..icv_len).unwrap_or_default());
        let (head, body) = self.packet.split_at_mut(8 + self.iv_len);
        let iv = head.get(8..).unwrap_or_default();
        ok && self.cipher.decrypt_cbc(iv, body).is_ok() && body.len() == self.encrypted_len
    }
}
