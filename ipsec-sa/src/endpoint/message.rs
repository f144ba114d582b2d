//! Building and opening ISAKMP messages: headers, the HASH-first chains of Quick Mode and
//! Informational exchanges, and CBC encryption with the IV chains of RFC 2409 Appendix B.

use std::collections::HashMap;

use ipsec_crypto::ikev1::{self, Phase1Keys};
use ipsec_crypto::{Cipher, CryptoError, EncryptionAlgorithm, HashAlgorithm, SecretBytes};
use ipsec_proto::isakmp::{
    encode_payloads, parse_payloads, ExchangeType, Flags, Header, Payload, PayloadType, RawPayload,
};
use ipsec_proto::DecodeError;

/// ISAKMP version 1.0 (RFC 2408 section 3.1: major 1, minor 0).
pub(crate) const VERSION: u8 = 0x10;

/// Exchange type codes (RFC 2408 section 3.1, RFC 2409 section 5.5).
pub(crate) mod exchange {
    pub(crate) const MAIN: u8 = 2;
    pub(crate) const AGGRESSIVE: u8 = 4;
    pub(crate) const INFORMATIONAL: u8 = 5;
    pub(crate) const QUICK: u8 = 32;
}

/// Payload type codes (RFC 2408 section 3.1, RFC 3947 section 3.2).
pub(crate) mod payload {
    pub(crate) const NONE: u8 = 0;
}

/// An unencrypted message: header and payload chain.
pub(crate) fn plain(
    cky_i: [u8; 8],
    cky_r: [u8; 8],
    exchange: u8,
    message_id: u32,
    payloads: &[Payload],
) -> Vec<u8> {
    let mut chain = Vec::new();
    let first = encode_payloads(payloads, &mut chain);
    let mut out = Vec::with_capacity(Header::LEN + chain.len());
    header(
        cky_i,
        cky_r,
        first,
        exchange,
        Flags(0),
        message_id,
        chain.len(),
    )
    .encode(&mut out);
    out.extend_from_slice(&chain);
    out
}

fn header(
    cky_i: [u8; 8],
    cky_r: [u8; 8],
    first: PayloadType,
    exchange: u8,
    flags: Flags,
    message_id: u32,
    body_len: usize,
) -> Header {
    Header {
        initiator_cookie: cky_i,
        responder_cookie: cky_r,
        next_payload: first,
        version: VERSION,
        exchange_type: ExchangeType(exchange),
        flags,
        message_id,
        length: u32::try_from(Header::LEN + body_len).unwrap_or(u32::MAX),
    }
}

/// The payloads after a HASH payload, and the chain with the HASH in front (RFC 2409
/// section 5.5: HASH must be first in Quick Mode and Informational messages).
pub(crate) struct HashedChain {
    /// The encoded payloads that follow HASH (the hash input).
    pub(crate) rest: Vec<u8>,
    rest_first: PayloadType,
}

impl HashedChain {
    /// Encodes `payloads`, the part that follows HASH.
    pub(crate) fn new(payloads: &[Payload]) -> Self {
        let mut rest = Vec::new();
        let rest_first = if payloads.is_empty() {
            PayloadType(payload::NONE)
        } else {
            encode_payloads(payloads, &mut rest)
        };
        Self { rest, rest_first }
    }

    /// The full chain: a HASH payload carrying `hash`, then the rest.
    pub(crate) fn with_hash(&self, hash: &[u8]) -> Vec<u8> {
        let len = u16::try_from(4 + hash.len()).unwrap_or(u16::MAX);
        let mut chain = Vec::with_capacity(4 + hash.len() + self.rest.len());
        chain.push(self.rest_first.0);
        chain.push(0);
        chain.extend_from_slice(&len.to_be_bytes());
        chain.extend_from_slice(hash);
        chain.extend_from_slice(&self.rest);
        chain
    }
}

/// The bytes of a decrypted chain that follow its first payload (the HASH), up to the end
/// of the last payload: padding excluded (RFC 2409 section 5.5 hashes "the entire message
/// after the HASH payload").
pub(crate) fn after_first<'a>(plaintext: &'a [u8], payloads: &[RawPayload<'_>]) -> &'a [u8] {
    let (Some(first), Some(last)) = (payloads.first(), payloads.last()) else {
        return &[];
    };
    let start = first.raw.len();
    let end = last.offset.saturating_add(last.raw.len());
    plaintext.get(start..end).unwrap_or(&[])
}

/// Cipher state of an ISAKMP SA: the phase-1 key and every IV chain (RFC 2409 Appendix B).
pub(crate) struct IsakmpKeys {
    /// Negotiated hash; the PRF is HMAC with it.
    pub(crate) prf: HashAlgorithm,
    /// SKEYID, needed for HASH_I/HASH_R.
    pub(crate) skeyid: SecretBytes,
    /// SKEYID_d, the seed of every KEYMAT.
    pub(crate) skeyid_d: SecretBytes,
    /// SKEYID_a, the key of every phase-2 HASH.
    pub(crate) skeyid_a: SecretBytes,
    cipher: Cipher,
    /// Ka, kept only for [`super::Endpoint::phase1_encryption_key`] (a debugging aid).
    pub(crate) encryption_key: SecretBytes,
    /// IV for the next phase-1 message; after phase 1, the last phase-1 CBC block.
    phase1_iv: Vec<u8>,
    /// IV for the next message of each running phase-2 exchange, by message ID.
    phase2_ivs: HashMap<u32, Vec<u8>>,
}

impl core::fmt::Debug for IsakmpKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IsakmpKeys")
            .field("prf", &self.prf)
            .finish_non_exhaustive()
    }
}

impl IsakmpKeys {
    /// Keys after the key exchange; the first IV is H(g^xi | g^xr) (RFC 2409 Appendix B).
    pub(crate) fn new(
        prf: HashAlgorithm,
        encryption: EncryptionAlgorithm,
        keys: Phase1Keys,
        g_xi: &[u8],
        g_xr: &[u8],
    ) -> Result<Self, CryptoError> {
        let cipher = Cipher::new(encryption, keys.encryption_key.expose())?;
        let phase1_iv = ikev1::phase1_iv(prf, g_xi, g_xr, encryption.block_len());
        Ok(Self {
            prf,
            skeyid: keys.skeyid,
            skeyid_d: keys.skeyid_d,
            skeyid_a: keys.skeyid_a,
            cipher,
            encryption_key: keys.encryption_key,
            phase1_iv,
            phase2_ivs: HashMap::new(),
        })
    }

    fn block_len(&self) -> usize {
        self.cipher.algorithm().block_len()
    }

    /// The IV for the next message with `message_id`: the phase-1 chain for 0, else the
    /// exchange's own chain, started from hash(last phase-1 block | M-ID).
    fn iv(&self, message_id: u32) -> Vec<u8> {
        if message_id == 0 {
            return self.phase1_iv.clone();
        }
        match self.phase2_ivs.get(&message_id) {
            Some(iv) => iv.clone(),
            None => ikev1::phase2_iv(self.prf, &self.phase1_iv, message_id, self.block_len()),
        }
    }

    /// The IV the next message of `message_id` would use.
    #[cfg(test)]
    pub(crate) fn iv_for_test(&self, message_id: u32) -> Vec<u8> {
        self.iv(message_id)
    }

    /// Records the IV for the next message of `message_id`.
    pub(crate) fn commit_iv(&mut self, message_id: u32, iv: Vec<u8>) {
        if message_id == 0 {
            self.phase1_iv = iv;
        } else {
            self.phase2_ivs.insert(message_id, iv);
        }
    }

    /// Forgets a finished phase-2 exchange's IV chain.
    pub(crate) fn forget(&mut self, message_id: u32) {
        self.phase2_ivs.remove(&message_id);
    }

    /// Builds an encrypted message (zero padding to the block size) and advances the IV
    /// chain of `message_id` unless `one_shot` (Informational exchanges have no next message).
    #[expect(clippy::too_many_arguments, reason = "the header fields, each named")]
    pub(crate) fn seal(
        &mut self,
        cky_i: [u8; 8],
        cky_r: [u8; 8],
        exchange: u8,
        message_id: u32,
        first: PayloadType,
        chain: &[u8],
        one_shot: bool,
    ) -> Result<Vec<u8>, CryptoError> {
        let bs = self.block_len();
        let padded = chain.len().div_ceil(bs).max(1) * bs;
        let mut body = chain.to_vec();
        body.resize(padded, 0);
        let iv = self.iv(message_id);
        self.cipher.encrypt_cbc(&iv, &mut body)?;

        let last = body.get(padded - bs..).unwrap_or_default().to_vec();
        if !one_shot {
            self.commit_iv(message_id, last);
        }
        let mut out = Vec::with_capacity(Header::LEN + padded);
        header(cky_i, cky_r, first, exchange, Flags(1), message_id, padded).encode(&mut out);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decrypts a message body; returns the plaintext and the IV that follows it, which
    /// the caller commits once the message proved authentic.
    pub(crate) fn open(
        &self,
        message_id: u32,
        body: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
        let bs = self.block_len();
        let iv = self.iv(message_id);
        let mut plain = body.to_vec();
        self.cipher.decrypt_cbc(&iv, &mut plain)?;
        let next = body
            .len()
            .checked_sub(bs)
            .and_then(|s| body.get(s..))
            .unwrap_or_default()
            .to_vec();
        Ok((plain, next))
    }
}

/// Parses a (decrypted) payload chain, tolerating trailing zero padding.
pub(crate) fn payloads(
    first: PayloadType,
    chain: &[u8],
) -> Result<Vec<RawPayload<'_>>, DecodeError> {
    parse_payloads(first, chain)
}
