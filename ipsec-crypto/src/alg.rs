//! Algorithm identifiers shared by IKE and ESP, with the sizes each one implies.
//!
//! These are our own names, independent of the wire code points (which live in
//! `ipsec-proto`); mapping between the two is done by the protocol layer.

/// A CBC block cipher for IKE (phase 1 and 2 messages) and ESP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EncryptionAlgorithm {
    /// Single DES in CBC mode (RFC 2405). Weak: 56-bit key.
    DesCbc,
    /// Triple DES (EDE3) in CBC mode (RFC 2451). Weak: 64-bit block.
    TripleDesCbc,
    /// AES-128 in CBC mode (RFC 3602).
    AesCbc128,
    /// AES-192 in CBC mode (RFC 3602).
    AesCbc192,
    /// AES-256 in CBC mode (RFC 3602).
    AesCbc256,
}

impl core::fmt::Display for EncryptionAlgorithm {
    /// The usual name (as in RFC 3602 and strongSwan's logs): `AES-128-CBC`, `3DES-CBC`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::DesCbc => "DES-CBC",
            Self::TripleDesCbc => "3DES-CBC",
            Self::AesCbc128 => "AES-128-CBC",
            Self::AesCbc192 => "AES-192-CBC",
            Self::AesCbc256 => "AES-256-CBC",
        })
    }
}

impl EncryptionAlgorithm {
    /// Every supported cipher, strongest last.
    pub const ALL: [Self; 5] = [
        Self::DesCbc,
        Self::TripleDesCbc,
        Self::AesCbc128,
        Self::AesCbc192,
        Self::AesCbc256,
    ];

    /// Key length in bytes.
    pub const fn key_len(self) -> usize {
        match self {
            Self::DesCbc => 8,
            Self::TripleDesCbc => 24,
            Self::AesCbc128 => 16,
            Self::AesCbc192 => 24,
            Self::AesCbc256 => 32,
        }
    }

    /// Block length in bytes, which is also the IV length for CBC.
    pub const fn block_len(self) -> usize {
        match self {
            Self::DesCbc | Self::TripleDesCbc => 8,
            Self::AesCbc128 | Self::AesCbc192 | Self::AesCbc256 => 16,
        }
    }

    /// Whether a careful operator should be told this choice is weak.
    pub const fn is_weak(self) -> bool {
        matches!(self, Self::DesCbc | Self::TripleDesCbc)
    }

    /// Why this choice is weak, for a log line; `None` when it is not
    /// (agrees with [`EncryptionAlgorithm::is_weak`]).
    pub const fn weakness(self) -> Option<&'static str> {
        match self {
            Self::DesCbc => Some("single DES has a 56-bit key that can be searched exhaustively (RFC 8221 section 5 forbids it for ESP)"),
            Self::TripleDesCbc => Some("3DES has a 64-bit block, so CBC leaks plaintext after about 2^32 blocks under one key (Sweet32); RFC 8221 section 5 advises against it"),
            Self::AesCbc128 | Self::AesCbc192 | Self::AesCbc256 => None,
        }
    }
}

/// A hash function, used bare (IVs) and as HMAC (the IKEv1 PRF).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    /// MD5 (RFC 1321). Weak.
    Md5,
    /// SHA-1.
    Sha1,
    /// SHA2-256.
    Sha256,
    /// SHA2-384.
    Sha384,
    /// SHA2-512.
    Sha512,
}

impl core::fmt::Display for HashAlgorithm {
    /// The usual name: `MD5`, `SHA1`, `SHA2-256`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Md5 => "MD5",
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA2-256",
            Self::Sha384 => "SHA2-384",
            Self::Sha512 => "SHA2-512",
        })
    }
}

impl HashAlgorithm {
    /// Every supported hash.
    pub const ALL: [Self; 5] = [
        Self::Md5,
        Self::Sha1,
        Self::Sha256,
        Self::Sha384,
        Self::Sha512,
    ];

    /// Digest length in bytes.
    pub const fn output_len(self) -> usize {
        match self {
            Self::Md5 => 16,
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// Whether a careful operator should be told this choice is weak.
    pub const fn is_weak(self) -> bool {
        matches!(self, Self::Md5)
    }

    /// Why this choice is weak, for a log line; `None` when it is not
    /// (agrees with [`HashAlgorithm::is_weak`]).
    pub const fn weakness(self) -> Option<&'static str> {
        match self {
            Self::Md5 => Some("MD5 has practical collisions; HMAC-MD5 is not known broken but has no security margin left (RFC 6151)"),
            Self::Sha1 | Self::Sha256 | Self::Sha384 | Self::Sha512 => None,
        }
    }
}

/// An ESP integrity algorithm: HMAC with a truncated output (the ICV).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IntegrityAlgorithm {
    /// HMAC-MD5-96 (RFC 2403). Weak.
    HmacMd5_96,
    /// HMAC-SHA1-96 (RFC 2404).
    HmacSha1_96,
    /// HMAC-SHA2-256-128 (RFC 4868).
    HmacSha256_128,
    /// HMAC-SHA2-384-192 (RFC 4868).
    HmacSha384_192,
    /// HMAC-SHA2-512-256 (RFC 4868).
    HmacSha512_256,
}

impl core::fmt::Display for IntegrityAlgorithm {
    /// The RFC name: `HMAC-SHA1-96` (RFC 2404), `HMAC-SHA2-256-128` (RFC 4868).
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::HmacMd5_96 => "HMAC-MD5-96",
            Self::HmacSha1_96 => "HMAC-SHA1-96",
            Self::HmacSha256_128 => "HMAC-SHA2-256-128",
            Self::HmacSha384_192 => "HMAC-SHA2-384-192",
            Self::HmacSha512_256 => "HMAC-SHA2-512-256",
        })
    }
}

impl IntegrityAlgorithm {
    /// Every supported integrity algorithm.
    pub const ALL: [Self; 5] = [
        Self::HmacMd5_96,
        Self::HmacSha1_96,
        Self::HmacSha256_128,
        Self::HmacSha384_192,
        Self::HmacSha512_256,
    ];

    /// The hash inside the HMAC.
    pub const fn hash(self) -> HashAlgorithm {
        match self {
            Self::HmacMd5_96 => HashAlgorithm::Md5,
            Self::HmacSha1_96 => HashAlgorithm::Sha1,
            Self::HmacSha256_128 => HashAlgorithm::Sha256,
            Self::HmacSha384_192 => HashAlgorithm::Sha384,
            Self::HmacSha512_256 => HashAlgorithm::Sha512,
        }
    }

    /// Key length in bytes: the hash's output length (RFC 2403, 2404, 4868 section 2.1.1).
    pub const fn key_len(self) -> usize {
        self.hash().output_len()
    }

    /// Length of the truncated ICV in bytes.
    pub const fn icv_len(self) -> usize {
        match self {
            Self::HmacMd5_96 | Self::HmacSha1_96 => 12,
            Self::HmacSha256_128 => 16,
            Self::HmacSha384_192 => 24,
            Self::HmacSha512_256 => 32,
        }
    }

    /// Whether a careful operator should be told this choice is weak.
    pub const fn is_weak(self) -> bool {
        matches!(self, Self::HmacMd5_96)
    }

    /// Why this choice is weak, for a log line; `None` when it is not
    /// (agrees with [`IntegrityAlgorithm::is_weak`]).
    pub const fn weakness(self) -> Option<&'static str> {
        match self {
            Self::HmacMd5_96 => Some(
                "HMAC-MD5-96 is built on MD5 (RFC 6151); RFC 8221 section 6 forbids it for ESP",
            ),
            Self::HmacSha1_96
            | Self::HmacSha256_128
            | Self::HmacSha384_192
            | Self::HmacSha512_256 => None,
        }
    }
}

/// A Diffie-Hellman MODP group, by its IKE group number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DhGroup {
    /// Group 1, 768-bit MODP (RFC 2409 section 6.1). Weak.
    Modp768,
    /// Group 2, 1024-bit MODP (RFC 2409 section 6.2). Weak.
    Modp1024,
    /// Group 5, 1536-bit MODP (RFC 3526 section 2).
    Modp1536,
    /// Group 14, 2048-bit MODP (RFC 3526 section 3).
    Modp2048,
    /// Group 15, 3072-bit MODP (RFC 3526 section 4).
    Modp3072,
    /// Group 16, 4096-bit MODP (RFC 3526 section 5).
    Modp4096,
    /// Group 17, 6144-bit MODP (RFC 3526 section 6).
    Modp6144,
    /// Group 18, 8192-bit MODP (RFC 3526 section 7).
    Modp8192,
    /// Group 22, 1024-bit MODP with 160-bit prime-order subgroup (RFC 5114 section 2.1).
    Modp1024S160,
    /// Group 23, 2048-bit MODP with 224-bit prime-order subgroup (RFC 5114 section 2.2).
    Modp2048S224,
    /// Group 24, 2048-bit MODP with 256-bit prime-order subgroup (RFC 5114 section 2.3).
    Modp2048S256,
}

impl DhGroup {
    /// Every supported group.
    pub const ALL: [Self; 11] = [
        Self::Modp768,
        Self::Modp1024,
        Self::Modp1536,
        Self::Modp2048,
        Self::Modp3072,
        Self::Modp4096,
        Self::Modp6144,
        Self::Modp8192,
        Self::Modp1024S160,
        Self::Modp2048S224,
        Self::Modp2048S256,
    ];

    /// The IANA group number ("Group Description" in IKEv1).
    pub const fn id(self) -> u16 {
        match self {
            Self::Modp768 => 1,
            Self::Modp1024 => 2,
            Self::Modp1536 => 5,
            Self::Modp2048 => 14,
            Self::Modp3072 => 15,
            Self::Modp4096 => 16,
            Self::Modp6144 => 17,
            Self::Modp8192 => 18,
            Self::Modp1024S160 => 22,
            Self::Modp2048S224 => 23,
            Self::Modp2048S256 => 24,
        }
    }

    /// The group with IANA number `id`, if we support it.
    pub fn from_id(id: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.id() == id)
    }

    /// Length of the modulus in bytes: the fixed length of public values and shared secrets.
    pub const fn modulus_len(self) -> usize {
        match self {
            Self::Modp768 => 96,
            Self::Modp1024 | Self::Modp1024S160 => 128,
            Self::Modp1536 => 192,
            Self::Modp2048 | Self::Modp2048S224 | Self::Modp2048S256 => 256,
            Self::Modp3072 => 384,
            Self::Modp4096 => 512,
            Self::Modp6144 => 768,
            Self::Modp8192 => 1024,
        }
    }

    /// Whether a careful operator should be told this choice is weak (under 1536 bits).
    pub const fn is_weak(self) -> bool {
        matches!(self, Self::Modp768 | Self::Modp1024 | Self::Modp1024S160)
    }

    /// Why this choice is weak, for a log line; `None` when it is not
    /// (agrees with [`DhGroup::is_weak`]).
    pub const fn weakness(self) -> Option<&'static str> {
        match self {
            Self::Modp768 => Some("768-bit MODP group: discrete logarithms of this size have been computed publicly"),
            Self::Modp1024 => Some("1024-bit MODP group: within reach of a well-funded attacker, and one shared prime for everyone (Logjam)"),
            Self::Modp1024S160 => Some("1024-bit MODP group with a 160-bit subgroup: about 80-bit security"),
            Self::Modp1536
            | Self::Modp2048
            | Self::Modp3072
            | Self::Modp4096
            | Self::Modp6144
            | Self::Modp8192
            | Self::Modp2048S224
            | Self::Modp2048S256 => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_round_trip() {
        for g in DhGroup::ALL {
            assert_eq!(DhGroup::from_id(g.id()), Some(g));
        }
        assert_eq!(DhGroup::from_id(3), None);
        assert_eq!(DhGroup::Modp2048.modulus_len(), 256);
    }

    #[test]
    fn weakness_reason_exactly_when_weak() {
        for a in EncryptionAlgorithm::ALL {
            assert_eq!(a.weakness().is_some(), a.is_weak(), "{a:?}");
        }
        for a in HashAlgorithm::ALL {
            assert_eq!(a.weakness().is_some(), a.is_weak(), "{a:?}");
        }
        for a in IntegrityAlgorithm::ALL {
            assert_eq!(a.weakness().is_some(), a.is_weak(), "{a:?}");
        }
        for g in DhGroup::ALL {
            assert_eq!(g.weakness().is_some(), g.is_weak(), "{g:?}");
        }
    }

    #[test]
    fn integrity_sizes_match_the_rfcs() {
        assert_eq!(IntegrityAlgorithm::HmacSha1_96.key_len(), 20);
        assert_eq!(IntegrityAlgorithm::HmacSha1_96.icv_len(), 12);
        assert_eq!(IntegrityAlgorithm::HmacSha256_128.key_len(), 32);
        assert_eq!(IntegrityAlgorithm::HmacSha512_256.icv_len(), 32);
    }
}
