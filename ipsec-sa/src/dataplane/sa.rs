//! One ESP SA in one direction: the ESP transform of RFC 4303 on a caller's buffer.
//!
//! The packet layout (RFC 4303 section 2, CBC ciphers with an explicit IV as in
//! RFC 2405 section 3.1, RFC 2451 section 2.2 and RFC 3602 section 3):
//!
//! ```text
//! | SPI (4) | sequence (4) | IV (block) | payload | padding | pad len | next hdr | ICV |
//!                                       |<------------- encrypted ------------>|
//! |<----------------- covered by the ICV (RFC 4303 section 3.3.2.1) ---------->|
//! ```
//!
//! [`OutboundSa::seal`] builds this around a payload already sitting in the caller's
//! buffer with enough room before it (header and IV) and after it (trailer and ICV);
//! [`InboundSa::open`] checks and decrypts a received packet in place. Neither allocates,
//! reads a clock, or draws randomness of its own: the IV comes from the caller's RNG.

use core::ops::Range;

use ipsec_crypto::{
    CbcJob, Cipher, CryptoError, EncryptionAlgorithm, Integrity, IntegrityAlgorithm, CBC_LANES,
};
use ipsec_proto::esp::{self, EspHeader, Trailer};
use rand_core::CryptoRngCore;

use crate::child::EspSaKeys;

use super::drop::DropError;
use super::replay::{ReplayWindow, WindowSizeError};

/// The largest IV (AES block) of any supported cipher.
const MAX_IV_LEN: usize = 16;

/// Why an SA could not be built from negotiated keys.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SaKeyError {
    /// A key was rejected by the cipher or integrity algorithm (length, weak DES key).
    #[error("SA {spi:#010x}: {error}")]
    Key {
        /// The SPI of the SA.
        spi: u32,
        /// What the crypto layer said.
        error: CryptoError,
    },
    /// The anti-replay window size is out of bounds.
    #[error(transparent)]
    WindowSize(#[from] WindowSizeError),
}

/// Packets and bytes through one SA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SaCounters {
    /// Packets sealed (outbound) or accepted (inbound).
    pub packets: u64,
    /// Inner (plaintext IP packet) bytes of those packets: what kilobyte lifetimes count.
    pub bytes: u64,
}

impl SaCounters {
    fn add(&mut self, bytes: usize) {
        self.packets = self.packets.saturating_add(1);
        self.bytes = self
            .bytes
            .saturating_add(u64::try_from(bytes).unwrap_or(u64::MAX));
    }
}

/// Size arithmetic of ESP with one cipher and one integrity algorithm.
///
/// The most ESP adds to an inner packet is `headroom() + max_tailroom()`; on the wire add
/// the outer IP header (20 or 40) and, for ESP in UDP, 8 more. For the supported
/// algorithms (see the `overhead_per_algorithm` test):
///
/// | cipher | integrity | header+IV | max pad+2 | ICV | max total |
/// |---|---|---|---|---|---|
/// | DES, 3DES | HMAC-MD5-96, HMAC-SHA1-96 | 16 | 9 | 12 | 37 |
/// | AES-CBC | HMAC-MD5-96, HMAC-SHA1-96 | 24 | 17 | 12 | 53 |
/// | AES-CBC | HMAC-SHA2-256-128 | 24 | 17 | 16 | 57 |
/// | AES-CBC | HMAC-SHA2-384-192 | 24 | 17 | 24 | 65 |
/// | AES-CBC | HMAC-SHA2-512-256 | 24 | 17 | 32 | 73 |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EspOverhead {
    /// Cipher block length (= IV length); the encrypted part is a multiple of it.
    pub block_len: usize,
    /// ICV length.
    pub icv_len: usize,
}

impl EspOverhead {
    /// The overhead of `encryption` with `integrity`.
    pub const fn new(encryption: EncryptionAlgorithm, integrity: IntegrityAlgorithm) -> Self {
        Self {
            block_len: encryption.block_len(),
            icv_len: integrity.icv_len(),
        }
    }

    /// Bytes before the payload: ESP header and IV.
    pub const fn headroom(&self) -> usize {
        EspHeader::LEN + self.block_len
    }

    /// The most bytes after the payload: padding (up to a block less one), pad length,
    /// next header and ICV.
    pub const fn max_tailroom(&self) -> usize {
        self.block_len - 1 + Trailer::LEN + self.icv_len
    }

    /// Padding for a payload of `payload_len` bytes (RFC 4303 section 2.4: payload,
    /// padding, pad length and next header fill whole cipher blocks; every block length
    /// here is a multiple of 4, so the 4-byte alignment rule holds too).
    pub fn pad_len(&self, payload_len: usize) -> usize {
        usize::from(esp::pad_len(payload_len, self.block_len))
    }

    /// Length of the whole ESP packet carrying `payload_len` bytes.
    pub fn esp_len(&self, payload_len: usize) -> usize {
        self.headroom() + payload_len + self.pad_len(payload_len) + Trailer::LEN + self.icv_len
    }

    /// The largest payload whose ESP packet fits in `esp_space` bytes, if any.
    pub fn max_payload(&self, esp_space: usize) -> Option<usize> {
        let encrypted_space = esp_space.checked_sub(self.headroom() + self.icv_len)?;
        let whole_blocks = encrypted_space / self.block_len.max(1) * self.block_len;
        whole_blocks.checked_sub(Trailer::LEN)
    }
}

/// Where [`OutboundSa::seal`] put the ESP packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// The ESP packet (SPI through ICV) within the caller's buffer.
    pub packet: Range<usize>,
    /// The sequence number it carries.
    pub sequence: u32,
}

/// Sending half of an ESP SA: SPI, keys and the sequence counter.
#[derive(Debug)]
pub struct OutboundSa {
    spi: u32,
    cipher: Cipher,
    integrity: Integrity,
    overhead: EspOverhead,
    /// The last sequence number sent; 0 before the first packet (RFC 4303 section 3.3.3).
    last_sequence: u32,
    counters: SaCounters,
}

impl OutboundSa {
    /// Keys the SA. Fails on a key of the wrong length or a weak DES key.
    pub fn new(keys: &EspSaKeys) -> Result<Self, SaKeyError> {
        let key_error = |error| SaKeyError::Key {
            spi: keys.spi,
            error,
        };
        let cipher =
            Cipher::new(keys.encryption, keys.encryption_key.expose()).map_err(key_error)?;
        let integrity =
            Integrity::new(keys.integrity, keys.integrity_key.expose()).map_err(key_error)?;
        Ok(Self {
            spi: keys.spi,
            overhead: EspOverhead::new(keys.encryption, keys.integrity),
            cipher,
            integrity,
            last_sequence: 0,
            counters: SaCounters::default(),
        })
    }

    /// The SPI this SA puts in its headers.
    pub fn spi(&self) -> u32 {
        self.spi
    }

    /// Size arithmetic for this SA's algorithms.
    pub fn overhead(&self) -> EspOverhead {
        self.overhead
    }

    /// The last sequence number used (0 if none yet).
    pub fn last_sequence(&self) -> u32 {
        self.last_sequence
    }

    /// Packets and bytes sealed.
    pub fn counters(&self) -> SaCounters {
        self.counters
    }

    /// Jumps the sequence counter, to test behaviour near exhaustion.
    #[cfg(test)]
    pub(crate) fn set_last_sequence(&mut self, sequence: u32) {
        self.last_sequence = sequence;
    }

    /// Builds an ESP packet in place around `buf[payload]`.
    ///
    /// Needs `payload.start >= overhead().headroom()` and
    /// `buf.len() - payload.end >= overhead().max_tailroom()`. Takes the next sequence
    /// number; after 2^32 - 1 it refuses with [`DropError::SequenceExhausted`], since
    /// without extended sequence numbers the counter must never wrap (RFC 4303 section
    /// 3.3.3) and the SA has to be replaced. The IV is drawn fresh from `rng` for every
    /// packet, as CBC needs an unpredictable IV (RFC 3602 section 3). `next_header` is 4
    /// for an IPv4 payload and 41 for IPv6 (tunnel mode).
    ///
    /// On error the payload bytes and the sequence counter are unchanged (bytes around the
    /// payload may have been written). The one exception is an internal error after the
    /// packet was framed, which the length checks made here rule out.
    pub fn seal<R: CryptoRngCore + ?Sized>(
        &mut self,
        buf: &mut [u8],
        payload: Range<usize>,
        next_header: u8,
        rng: &mut R,
    ) -> Result<Sealed, DropError> {
        let framed = self.frame(buf, payload, next_header, rng)?;
        self.protect_many(&mut [(buf, &framed)])?;
        Ok(framed.sealed())
    }

    /// The first half of [`OutboundSa::seal`]: header, fresh IV, padding and trailer are
    /// written around the payload and the sequence number and counters move on, but
    /// nothing is encrypted yet. The packet must go through [`OutboundSa::protect_many`]
    /// before anything else sees it; only the data plane calls this, so that packets of
    /// one SA can be encrypted side by side.
    pub(crate) fn frame<R: CryptoRngCore + ?Sized>(
        &mut self,
        buf: &mut [u8],
        payload: Range<usize>,
        next_header: u8,
        rng: &mut R,
    ) -> Result<Framed, DropError> {
        let Some(sequence) = self.last_sequence.checked_add(1) else {
            return Err(DropError::SequenceExhausted { spi: self.spi });
        };
        let o = self.overhead;
        let payload_len = payload.end.saturating_sub(payload.start);
        let pad_len = o.pad_len(payload_len);
        let too_small = DropError::BufferTooSmall {
            headroom: o.headroom(),
            tailroom: pad_len + Trailer::LEN + o.icv_len,
        };
        let Some(start) = payload.start.checked_sub(o.headroom()) else {
            return Err(too_small);
        };
        let Some(end) = payload.end.checked_add(pad_len + Trailer::LEN + o.icv_len) else {
            return Err(too_small);
        };
        let encrypted_end = end - o.icv_len;
        if payload.start > payload.end || end > buf.len() {
            return Err(too_small);
        }
        let Some(packet) = buf.get_mut(start..end) else {
            return Err(too_small);
        };

        // Local offsets within the packet.
        let iv_end = o.headroom();
        let encrypted_len = encrypted_end - payload.start;
        let icv_at = iv_end + encrypted_len;

        // Trailer: padding 1, 2, 3, ..., pad length, next header (RFC 4303 section 2.4).
        let trailer = Trailer {
            pad_len: u8::try_from(pad_len).unwrap_or(0),
            next_header,
        };
        let trailer_area = packet
            .get_mut(iv_end + payload_len..icv_at)
            .ok_or(too_small)?;
        trailer.encode(trailer_area).map_err(|_| too_small)?;

        // Header and a fresh IV.
        let header = EspHeader {
            spi: self.spi,
            sequence_number: sequence,
        };
        let head = packet.get_mut(..iv_end).ok_or(too_small)?;
        head.get_mut(..EspHeader::LEN)
            .ok_or(too_small)?
            .copy_from_slice(&header.to_bytes());
        rng.fill_bytes(head.get_mut(EspHeader::LEN..).ok_or(too_small)?);

        self.last_sequence = sequence;
        self.counters.add(payload_len);
        Ok(Framed {
            packet: start..end,
            encrypted: start + iv_end..encrypted_end,
            sequence,
        })
    }

    /// The second half of [`OutboundSa::seal`] for packets this SA framed: encrypts each
    /// one's payload and trailer (several packets side by side, see
    /// [`Cipher::encrypt_cbc_many`]), then writes its ICV over SPI, sequence number, IV
    /// and ciphertext (RFC 4303 section 3.3.2.1).
    pub(crate) fn protect_many(
        &self,
        packets: &mut [(&mut [u8], &Framed)],
    ) -> Result<(), DropError> {
        let misframed = || internal(self.spi, "framed packet does not fit its buffer");
        // A group of lanes at a time, the jobs on the stack.
        for group in packets.chunks_mut(CBC_LANES) {
            let mut jobs: [CbcJob<'_>; CBC_LANES] = Default::default();
            let mut n = 0;
            for ((buf, f), job) in group.iter_mut().zip(jobs.iter_mut()) {
                // The buffer must still be the one this SA framed: a caller handing a
                // different one would otherwise get an "encrypted" packet that is not.
                let framed_header = EspHeader {
                    spi: self.spi,
                    sequence_number: f.sequence,
                }
                .to_bytes();
                if buf.get(f.packet.start..f.packet.start + EspHeader::LEN)
                    != Some(&framed_header[..])
                {
                    return Err(internal(self.spi, "buffer is not the one framed"));
                }
                let (head, rest) = buf
                    .get_mut(..f.encrypted.end)
                    .and_then(|b| b.split_at_mut_checked(f.encrypted.start))
                    .ok_or_else(misframed)?;
                let iv = head
                    .get(f.packet.start + EspHeader::LEN..)
                    .ok_or_else(misframed)?;
                *job = CbcJob { iv, buf: rest };
                n += 1;
            }
            self.cipher
                .encrypt_cbc_many(jobs.get_mut(..n).unwrap_or_default())
                .map_err(|_| internal(self.spi, "cipher refused an aligned buffer"))?;
            for (buf, f) in group.iter_mut() {
                let covered_len = f.encrypted.end.saturating_sub(f.packet.start);
                let (covered, icv) = buf
                    .get_mut(f.packet.clone())
                    .and_then(|b| b.split_at_mut_checked(covered_len))
                    .ok_or_else(misframed)?;
                self.integrity
                    .compute(&[covered], icv)
                    .map_err(|_| internal(self.spi, "ICV does not fit"))?;
            }
        }
        Ok(())
    }
}

/// A packet [`OutboundSa::frame`] prepared and [`OutboundSa::protect_many`] has still to
/// encrypt and authenticate. Offsets are into the caller's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Framed {
    /// The whole ESP packet.
    pub(crate) packet: Range<usize>,
    /// Payload, padding and trailer: what CBC encrypts.
    pub(crate) encrypted: Range<usize>,
    /// Its sequence number.
    pub(crate) sequence: u32,
}

impl Framed {
    /// What `seal` reports once the packet is protected.
    pub(crate) fn sealed(&self) -> Sealed {
        Sealed {
            packet: self.packet.clone(),
            sequence: self.sequence,
        }
    }
}

/// What [`InboundSa::open`] found in a packet that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The decrypted payload (the inner packet, plus any TFC padding) in the buffer.
    pub payload: Range<usize>,
    /// The next-header byte of the trailer.
    pub next_header: u8,
    /// The packet's sequence number.
    pub sequence: u32,
}

/// Receiving half of an ESP SA: SPI, keys and the anti-replay window.
#[derive(Debug)]
pub struct InboundSa {
    spi: u32,
    cipher: Cipher,
    integrity: Integrity,
    overhead: EspOverhead,
    window: ReplayWindow,
    counters: SaCounters,
}

impl InboundSa {
    /// Keys the SA with an anti-replay window of `window_size` packets.
    pub fn new(keys: &EspSaKeys, window_size: u32) -> Result<Self, SaKeyError> {
        let key_error = |error| SaKeyError::Key {
            spi: keys.spi,
            error,
        };
        let cipher =
            Cipher::new(keys.encryption, keys.encryption_key.expose()).map_err(key_error)?;
        let integrity =
            Integrity::new(keys.integrity, keys.integrity_key.expose()).map_err(key_error)?;
        Ok(Self {
            spi: keys.spi,
            overhead: EspOverhead::new(keys.encryption, keys.integrity),
            cipher,
            integrity,
            window: ReplayWindow::new(window_size)?,
            counters: SaCounters::default(),
        })
    }

    /// The SPI this SA receives on.
    pub fn spi(&self) -> u32 {
        self.spi
    }

    /// Size arithmetic for this SA's algorithms.
    pub fn overhead(&self) -> EspOverhead {
        self.overhead
    }

    /// The anti-replay window.
    pub fn window(&self) -> &ReplayWindow {
        &self.window
    }

    /// Packets and bytes delivered (see [`count_delivered`](Self::count_delivered)).
    pub fn counters(&self) -> SaCounters {
        self.counters
    }

    /// Checks and decrypts the ESP packet that fills `packet`, in place.
    ///
    /// The order is that of RFC 4303 section 3.4: sequence number against the
    /// anti-replay window (3.4.3), ICV in constant time (3.4.4) *before* any decryption,
    /// the window updated only once the ICV verified, then decryption and the padding
    /// check (2.4). The caller has already found this SA by the packet's SPI.
    pub fn open(&mut self, packet: &mut [u8]) -> Result<Opened, DropError> {
        let o = self.overhead;
        let len = packet.len();
        let malformed = |what| DropError::MalformedEsp {
            spi: self.spi,
            len,
            what,
        };
        let header = EspHeader::parse(packet).map_err(|_| malformed("shorter than ESP header"))?;
        let sequence = header.sequence_number;

        // Structure: header, IV, at least one block, ICV; whole blocks in between.
        let Some(encrypted_len) = len.checked_sub(o.headroom() + o.icv_len) else {
            return Err(malformed("shorter than header, IV and ICV"));
        };
        if encrypted_len == 0 || encrypted_len % o.block_len != 0 {
            return Err(malformed("encrypted part is not a whole number of blocks"));
        }

        // RFC 4303 section 3.4.3: replay check first, cheap and before the MAC.
        self.window
            .check(sequence)
            .map_err(|cause| DropError::Replay {
                spi: self.spi,
                cause,
            })?;

        // RFC 4303 section 3.4.4.1: the ICV over everything before it, in constant time.
        let icv_at = len - o.icv_len;
        let (covered, icv) = packet.split_at_mut(icv_at);
        if !self.integrity.verify(&[covered], icv) {
            return Err(DropError::BadIcv {
                spi: self.spi,
                sequence,
            });
        }
        // Only an authenticated packet may move the window.
        self.window
            .record(sequence)
            .map_err(|cause| DropError::Replay {
                spi: self.spi,
                cause,
            })?;

        // Decrypt in place; the IV is copied out because it sits right before the data.
        let mut iv_copy = [0u8; MAX_IV_LEN];
        let iv = iv_copy
            .get_mut(..o.block_len)
            .ok_or(malformed("IV too long"))?;
        let (head, encrypted) = covered.split_at_mut(o.headroom());
        iv.copy_from_slice(head.get(EspHeader::LEN..).unwrap_or_default());
        self.cipher
            .decrypt_cbc(iv, encrypted)
            .map_err(|_| malformed("encrypted part is not a whole number of blocks"))?;

        // RFC 4303 section 2.4: padding must be 1, 2, 3, ... when the default is used.
        let (payload_len, trailer) =
            esp::parse_trailer(encrypted).map_err(|_| DropError::BadPadding {
                spi: self.spi,
                sequence,
            })?;
        let start = o.headroom();
        Ok(Opened {
            payload: start..start + payload_len,
            next_header: trailer.next_header,
            sequence,
        })
    }

    /// Counts a packet delivered after every check, including those [`open`](Self::open)
    /// leaves to the caller (next header, selectors).
    pub fn count_delivered(&mut self, bytes: usize) {
        self.counters.add(bytes);
    }
}

/// An internal invariant failed; reported as a malformed packet rather than a panic.
pub(crate) fn internal(spi: u32, what: &'static str) -> DropError {
    tracing::error!(spi, what, "ESP transform invariant broken");
    DropError::MalformedEsp { spi, len: 0, what }
}
