//! Attribute classes and values of phase-1 (Oakley, RFC 2409 Appendix A) and phase-2
//! (IPsec DOI, RFC 2407 section 4.5) transforms, and the transform identifiers.
//!
//! The numbering of the two attribute spaces overlaps (class 4 is Group Description in
//! phase 1 but Encapsulation Mode in phase 2), so each space has its own module. Values
//! are plain integers: [`super::Attribute::attribute_type`] and
//! [`super::AttributeValue::Basic`] hold any value, so unknown ones round-trip, and
//! policy compares them against these constants.

/// Phase-1 transform attributes and values (RFC 2409 Appendix A).
pub mod oakley {
    /// Transform identifier KEY_IKE, the only one for protocol ISAKMP (RFC 2407 section 4.4.2).
    pub const KEY_IKE: u8 = 1;

    /// Attribute class: Encryption Algorithm (basic).
    pub const ENCRYPTION_ALGORITHM: u16 = 1;
    /// Attribute class: Hash Algorithm (basic).
    pub const HASH_ALGORITHM: u16 = 2;
    /// Attribute class: Authentication Method (basic).
    pub const AUTHENTICATION_METHOD: u16 = 3;
    /// Attribute class: Group Description (basic).
    pub const GROUP_DESCRIPTION: u16 = 4;
    /// Attribute class: Group Type (basic).
    pub const GROUP_TYPE: u16 = 5;
    /// Attribute class: Group Prime/Irreducible Polynomial (variable).
    pub const GROUP_PRIME: u16 = 6;
    /// Attribute class: Group Generator One (variable).
    pub const GROUP_GENERATOR_ONE: u16 = 7;
    /// Attribute class: Group Generator Two (variable).
    pub const GROUP_GENERATOR_TWO: u16 = 8;
    /// Attribute class: Group Curve A (variable).
    pub const GROUP_CURVE_A: u16 = 9;
    /// Attribute class: Group Curve B (variable).
    pub const GROUP_CURVE_B: u16 = 10;
    /// Attribute class: Life Type (basic).
    pub const LIFE_TYPE: u16 = 11;
    /// Attribute class: Life Duration (variable; may be sent basic when it fits 16 bits).
    pub const LIFE_DURATION: u16 = 12;
    /// Attribute class: PRF (basic).
    pub const PRF: u16 = 13;
    /// Attribute class: Key Length in bits (basic).
    pub const KEY_LENGTH: u16 = 14;
    /// Attribute class: Field Size (basic).
    pub const FIELD_SIZE: u16 = 15;
    /// Attribute class: Group Order (variable).
    pub const GROUP_ORDER: u16 = 16;

    /// Encryption algorithm: DES-CBC.
    pub const DES_CBC: u16 = 1;
    /// Encryption algorithm: IDEA-CBC.
    pub const IDEA_CBC: u16 = 2;
    /// Encryption algorithm: Blowfish-CBC.
    pub const BLOWFISH_CBC: u16 = 3;
    /// Encryption algorithm: RC5-R16-B64-CBC.
    pub const RC5_R16_B64_CBC: u16 = 4;
    /// Encryption algorithm: 3DES-CBC.
    pub const TRIPLE_DES_CBC: u16 = 5;
    /// Encryption algorithm: CAST-CBC.
    pub const CAST_CBC: u16 = 6;
    /// Encryption algorithm: AES-CBC (RFC 3602 section 5.1), with KEY_LENGTH.
    pub const AES_CBC: u16 = 7;

    /// Hash algorithm: MD5.
    pub const MD5: u16 = 1;
    /// Hash algorithm: SHA-1.
    pub const SHA: u16 = 2;
    /// Hash algorithm: Tiger.
    pub const TIGER: u16 = 3;
    /// Hash algorithm: SHA2-256 (RFC 4868 / IANA).
    pub const SHA2_256: u16 = 4;
    /// Hash algorithm: SHA2-384.
    pub const SHA2_384: u16 = 5;
    /// Hash algorithm: SHA2-512.
    pub const SHA2_512: u16 = 6;

    /// Authentication method: pre-shared key.
    pub const PRE_SHARED_KEY: u16 = 1;
    /// Authentication method: DSS signatures.
    pub const DSS_SIGNATURES: u16 = 2;
    /// Authentication method: RSA signatures.
    pub const RSA_SIGNATURES: u16 = 3;
    /// Authentication method: encryption with RSA.
    pub const RSA_ENCRYPTION: u16 = 4;
    /// Authentication method: revised encryption with RSA.
    pub const RSA_REVISED_ENCRYPTION: u16 = 5;
    /// Authentication method: XAUTH initiator with pre-shared key (draft-ietf-ipsec-isakmp-xauth).
    pub const XAUTH_INIT_PRE_SHARED: u16 = 65001;

    /// Life type: seconds.
    pub const LIFE_SECONDS: u16 = 1;
    /// Life type: kilobytes.
    pub const LIFE_KILOBYTES: u16 = 2;

    /// Group type: MODP.
    pub const GROUP_TYPE_MODP: u16 = 1;
}

/// Phase-2 transform attributes, values and transform identifiers (RFC 2407 sections
/// 4.4.4 and 4.5, RFC 3947 section 5.1 for the UDP encapsulation modes).
pub mod ipsec {
    /// Attribute class: SA Life Type (basic).
    pub const SA_LIFE_TYPE: u16 = 1;
    /// Attribute class: SA Life Duration (variable; may be sent basic).
    pub const SA_LIFE_DURATION: u16 = 2;
    /// Attribute class: Group Description, the PFS group (basic).
    pub const GROUP_DESCRIPTION: u16 = 3;
    /// Attribute class: Encapsulation Mode (basic).
    pub const ENCAPSULATION_MODE: u16 = 4;
    /// Attribute class: Authentication Algorithm (basic).
    pub const AUTHENTICATION_ALGORITHM: u16 = 5;
    /// Attribute class: Key Length in bits (basic).
    pub const KEY_LENGTH: u16 = 6;
    /// Attribute class: Key Rounds (basic).
    pub const KEY_ROUNDS: u16 = 7;
    /// Attribute class: Compress Dictionary Size (basic).
    pub const COMPRESS_DICTIONARY_SIZE: u16 = 8;
    /// Attribute class: Compress Private Algorithm (variable).
    pub const COMPRESS_PRIVATE_ALGORITHM: u16 = 9;

    /// SA life type: seconds.
    pub const LIFE_SECONDS: u16 = 1;
    /// SA life type: kilobytes.
    pub const LIFE_KILOBYTES: u16 = 2;

    /// Encapsulation mode: tunnel.
    pub const TUNNEL: u16 = 1;
    /// Encapsulation mode: transport.
    pub const TRANSPORT: u16 = 2;
    /// Encapsulation mode: UDP-encapsulated tunnel (RFC 3947 section 5.1).
    pub const UDP_TUNNEL: u16 = 3;
    /// Encapsulation mode: UDP-encapsulated transport (RFC 3947 section 5.1).
    pub const UDP_TRANSPORT: u16 = 4;
    /// Encapsulation mode: UDP-encapsulated tunnel, pre-RFC draft number.
    pub const UDP_TUNNEL_DRAFT: u16 = 61443;
    /// Encapsulation mode: UDP-encapsulated transport, pre-RFC draft number.
    pub const UDP_TRANSPORT_DRAFT: u16 = 61444;

    /// Authentication algorithm: HMAC-MD5 (RFC 2407 section 4.5).
    pub const HMAC_MD5: u16 = 1;
    /// Authentication algorithm: HMAC-SHA-1.
    pub const HMAC_SHA: u16 = 2;
    /// Authentication algorithm: DES-MAC.
    pub const DES_MAC: u16 = 3;
    /// Authentication algorithm: KPDK.
    pub const KPDK: u16 = 4;
    /// Authentication algorithm: HMAC-SHA2-256 (RFC 4868).
    pub const HMAC_SHA2_256: u16 = 5;
    /// Authentication algorithm: HMAC-SHA2-384 (RFC 4868).
    pub const HMAC_SHA2_384: u16 = 6;
    /// Authentication algorithm: HMAC-SHA2-512 (RFC 4868).
    pub const HMAC_SHA2_512: u16 = 7;

    /// ESP transform identifier: DES-CBC (RFC 2407 section 4.4.4).
    pub const ESP_DES: u8 = 2;
    /// ESP transform identifier: 3DES-CBC.
    pub const ESP_3DES: u8 = 3;
    /// ESP transform identifier: NULL encryption.
    pub const ESP_NULL: u8 = 11;
    /// ESP transform identifier: AES-CBC (RFC 3602 section 5.1), with KEY_LENGTH.
    pub const ESP_AES: u8 = 12;
}

/// Diffie-Hellman group numbers used in GROUP_DESCRIPTION of both phases (RFC 2409
/// section 6, RFC 3526).
pub mod group {
    /// 768-bit MODP (RFC 2409 section 6.1).
    pub const MODP_768: u16 = 1;
    /// 1024-bit MODP (RFC 2409 section 6.2).
    pub const MODP_1024: u16 = 2;
    /// 1536-bit MODP (RFC 3526 section 2).
    pub const MODP_1536: u16 = 5;
    /// 2048-bit MODP (RFC 3526 section 3).
    pub const MODP_2048: u16 = 14;
    /// 3072-bit MODP (RFC 3526 section 4).
    pub const MODP_3072: u16 = 15;
    /// 4096-bit MODP (RFC 3526 section 5).
    pub const MODP_4096: u16 = 16;
}
