//! Open code points of ISAKMP and the IPsec DOI.

code_point! {
    /// Payload type: the value of a Next Payload field (RFC 2408 section 3.1, with
    /// NAT-D / NAT-OA from RFC 3947 section 3.2 and 5.2 and their draft numbers 130 and
    /// 131 still sent by some peers).
    pub struct PayloadType(pub u8);
    /// No next payload: ends the chain.
    NONE = 0 => "NONE";
    /// Security Association (RFC 2408 section 3.4).
    SA = 1 => "SA";
    /// Proposal (RFC 2408 section 3.5); only inside an SA payload.
    PROPOSAL = 2 => "PROPOSAL";
    /// Transform (RFC 2408 section 3.6); only inside a Proposal payload.
    TRANSFORM = 3 => "TRANSFORM";
    /// Key Exchange (RFC 2408 section 3.7).
    KEY_EXCHANGE = 4 => "KE";
    /// Identification (RFC 2408 section 3.8, RFC 2407 section 4.6.2).
    IDENTIFICATION = 5 => "ID";
    /// Certificate (RFC 2408 section 3.9).
    CERTIFICATE = 6 => "CERT";
    /// Certificate Request (RFC 2408 section 3.10).
    CERTIFICATE_REQUEST = 7 => "CR";
    /// Hash (RFC 2408 section 3.11).
    HASH = 8 => "HASH";
    /// Signature (RFC 2408 section 3.12).
    SIGNATURE = 9 => "SIG";
    /// Nonce (RFC 2408 section 3.13).
    NONCE = 10 => "NONCE";
    /// Notification (RFC 2408 section 3.14).
    NOTIFICATION = 11 => "N";
    /// Delete (RFC 2408 section 3.15).
    DELETE = 12 => "D";
    /// Vendor ID (RFC 2408 section 3.16).
    VENDOR_ID = 13 => "VID";
    /// NAT Discovery (RFC 3947 section 3.2).
    NAT_D = 20 => "NAT-D";
    /// NAT Original Address (RFC 3947 section 5.2).
    NAT_OA = 21 => "NAT-OA";
    /// NAT-D under its pre-RFC draft number (draft-ietf-ipsec-nat-t-ike-02/03).
    NAT_D_DRAFT = 130 => "NAT-D-DRAFT";
    /// NAT-OA under its pre-RFC draft number.
    NAT_OA_DRAFT = 131 => "NAT-OA-DRAFT";
}

code_point! {
    /// Exchange type (RFC 2408 section 3.1 and 4, RFC 2409 section 5 and 9.1).
    pub struct ExchangeType(pub u8);
    /// Base exchange (RFC 2408 section 4.4).
    BASE = 1 => "Base";
    /// Identity Protection, i.e. Main Mode (RFC 2408 section 4.5, RFC 2409 section 5).
    IDENTITY_PROTECTION = 2 => "Identity Protection";
    /// Authentication Only (RFC 2408 section 4.6).
    AUTHENTICATION_ONLY = 3 => "Authentication Only";
    /// Aggressive Mode (RFC 2408 section 4.7, RFC 2409 section 5).
    AGGRESSIVE = 4 => "Aggressive";
    /// Informational (RFC 2408 section 4.8).
    INFORMATIONAL = 5 => "Informational";
    /// Transaction, i.e. Mode Config (draft-ietf-ipsec-isakmp-mode-cfg).
    TRANSACTION = 6 => "Transaction";
    /// Quick Mode (RFC 2409 section 5.5).
    QUICK_MODE = 32 => "Quick Mode";
    /// New Group Mode (RFC 2409 section 5.6).
    NEW_GROUP_MODE = 33 => "New Group Mode";
}

code_point! {
    /// Protocol identifier of a proposal, notification or delete (RFC 2407 section 4.4.1).
    pub struct ProtocolId(pub u8);
    /// ISAKMP itself (phase 1).
    ISAKMP = 1 => "ISAKMP";
    /// Authentication Header.
    IPSEC_AH = 2 => "IPSEC_AH";
    /// Encapsulating Security Payload.
    IPSEC_ESP = 3 => "IPSEC_ESP";
    /// IP compression.
    IPCOMP = 4 => "IPCOMP";
}

code_point! {
    /// Identification type (RFC 2407 section 4.6.2.1).
    pub struct IdType(pub u8);
    /// A single IPv4 address, 4 bytes.
    IPV4_ADDR = 1 => "ID_IPV4_ADDR";
    /// A fully qualified domain name, no terminator.
    FQDN = 2 => "ID_FQDN";
    /// A user@domain string, no terminator.
    USER_FQDN = 3 => "ID_USER_FQDN";
    /// IPv4 address and mask, 8 bytes.
    IPV4_ADDR_SUBNET = 4 => "ID_IPV4_ADDR_SUBNET";
    /// A single IPv6 address, 16 bytes.
    IPV6_ADDR = 5 => "ID_IPV6_ADDR";
    /// IPv6 address and mask, 32 bytes.
    IPV6_ADDR_SUBNET = 6 => "ID_IPV6_ADDR_SUBNET";
    /// First and last IPv4 address of a range, 8 bytes.
    IPV4_ADDR_RANGE = 7 => "ID_IPV4_ADDR_RANGE";
    /// First and last IPv6 address of a range, 32 bytes.
    IPV6_ADDR_RANGE = 8 => "ID_IPV6_ADDR_RANGE";
    /// A DER-encoded X.500 distinguished name.
    DER_ASN1_DN = 9 => "ID_DER_ASN1_DN";
    /// A DER-encoded X.500 general name.
    DER_ASN1_GN = 10 => "ID_DER_ASN1_GN";
    /// An opaque key identifier.
    KEY_ID = 11 => "ID_KEY_ID";
}

code_point! {
    /// Notify message type (RFC 2408 section 3.14.1, RFC 2407 section 4.6.3, RFC 3706
    /// section 5).
    pub struct NotifyType(pub u16);
    /// RFC 2408 3.14.1.
    INVALID_PAYLOAD_TYPE = 1 => "INVALID-PAYLOAD-TYPE";
    /// RFC 2408 3.14.1.
    DOI_NOT_SUPPORTED = 2 => "DOI-NOT-SUPPORTED";
    /// RFC 2408 3.14.1.
    SITUATION_NOT_SUPPORTED = 3 => "SITUATION-NOT-SUPPORTED";
    /// RFC 2408 3.14.1.
    INVALID_COOKIE = 4 => "INVALID-COOKIE";
    /// RFC 2408 3.14.1.
    INVALID_MAJOR_VERSION = 5 => "INVALID-MAJOR-VERSION";
    /// RFC 2408 3.14.1.
    INVALID_MINOR_VERSION = 6 => "INVALID-MINOR-VERSION";
    /// RFC 2408 3.14.1.
    INVALID_EXCHANGE_TYPE = 7 => "INVALID-EXCHANGE-TYPE";
    /// RFC 2408 3.14.1.
    INVALID_FLAGS = 8 => "INVALID-FLAGS";
    /// RFC 2408 3.14.1.
    INVALID_MESSAGE_ID = 9 => "INVALID-MESSAGE-ID";
    /// RFC 2408 3.14.1.
    INVALID_PROTOCOL_ID = 10 => "INVALID-PROTOCOL-ID";
    /// RFC 2408 3.14.1.
    INVALID_SPI = 11 => "INVALID-SPI";
    /// RFC 2408 3.14.1.
    INVALID_TRANSFORM_ID = 12 => "INVALID-TRANSFORM-ID";
    /// RFC 2408 3.14.1.
    ATTRIBUTES_NOT_SUPPORTED = 13 => "ATTRIBUTES-NOT-SUPPORTED";
    /// RFC 2408 3.14.1.
    NO_PROPOSAL_CHOSEN = 14 => "NO-PROPOSAL-CHOSEN";
    /// RFC 2408 3.14.1.
    BAD_PROPOSAL_SYNTAX = 15 => "BAD-PROPOSAL-SYNTAX";
    /// RFC 2408 3.14.1.
    PAYLOAD_MALFORMED = 16 => "PAYLOAD-MALFORMED";
    /// RFC 2408 3.14.1.
    INVALID_KEY_INFORMATION = 17 => "INVALID-KEY-INFORMATION";
    /// RFC 2408 3.14.1.
    INVALID_ID_INFORMATION = 18 => "INVALID-ID-INFORMATION";
    /// RFC 2408 3.14.1.
    INVALID_CERT_ENCODING = 19 => "INVALID-CERT-ENCODING";
    /// RFC 2408 3.14.1.
    INVALID_CERTIFICATE = 20 => "INVALID-CERTIFICATE";
    /// RFC 2408 3.14.1.
    CERT_TYPE_UNSUPPORTED = 21 => "CERT-TYPE-UNSUPPORTED";
    /// RFC 2408 3.14.1.
    INVALID_CERT_AUTHORITY = 22 => "INVALID-CERT-AUTHORITY";
    /// RFC 2408 3.14.1.
    INVALID_HASH_INFORMATION = 23 => "INVALID-HASH-INFORMATION";
    /// RFC 2408 3.14.1.
    AUTHENTICATION_FAILED = 24 => "AUTHENTICATION-FAILED";
    /// RFC 2408 3.14.1.
    INVALID_SIGNATURE = 25 => "INVALID-SIGNATURE";
    /// RFC 2408 3.14.1.
    ADDRESS_NOTIFICATION = 26 => "ADDRESS-NOTIFICATION";
    /// RFC 2408 3.14.1.
    NOTIFY_SA_LIFETIME = 27 => "NOTIFY-SA-LIFETIME";
    /// RFC 2408 3.14.1.
    CERTIFICATE_UNAVAILABLE = 28 => "CERTIFICATE-UNAVAILABLE";
    /// RFC 2408 3.14.1.
    UNSUPPORTED_EXCHANGE_TYPE = 29 => "UNSUPPORTED-EXCHANGE-TYPE";
    /// RFC 2408 3.14.1.
    UNEQUAL_PAYLOAD_LENGTHS = 30 => "UNEQUAL-PAYLOAD-LENGTHS";
    /// Status: connected (RFC 2408 3.14.1).
    CONNECTED = 16384 => "CONNECTED";
    /// Responder lifetime (RFC 2407 section 4.6.3.1).
    RESPONDER_LIFETIME = 24576 => "RESPONDER-LIFETIME";
    /// Replay status (RFC 2407 section 4.6.3.2).
    REPLAY_STATUS = 24577 => "REPLAY-STATUS";
    /// Initial contact (RFC 2407 section 4.6.3.3).
    INITIAL_CONTACT = 24578 => "INITIAL-CONTACT";
    /// Dead peer detection request (RFC 3706 section 5).
    R_U_THERE = 36136 => "R-U-THERE";
    /// Dead peer detection reply (RFC 3706 section 5).
    R_U_THERE_ACK = 36137 => "R-U-THERE-ACK";
}

impl NotifyType {
    /// Types below 16384 report errors (RFC 2408 section 3.14.1).
    pub fn is_error(self) -> bool {
        self.0 < 16384
    }
}

/// The header flags (RFC 2408 section 3.1). Unknown bits are kept.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u8);

impl Flags {
    /// E: the payloads after the header are encrypted (RFC 2408 section 3.1).
    pub const ENCRYPTION: Self = Self(0x01);
    /// C: commit bit, synchronises key exchange (RFC 2408 section 3.1, RFC 2409 section 5.5).
    pub const COMMIT: Self = Self(0x02);
    /// A: authentication only, no encryption (RFC 2408 section 3.1).
    pub const AUTHENTICATION_ONLY: Self = Self(0x04);

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// These flags with the bits of `other` added.
    #[must_use]
    pub fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl core::fmt::Debug for Flags {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Flags({:#04x}", self.0)?;
        for (flag, name) in [
            (Self::ENCRYPTION, " E"),
            (Self::COMMIT, " C"),
            (Self::AUTHENTICATION_ONLY, " A"),
        ] {
            if self.contains(flag) {
                f.write_str(name)?;
            }
        }
        f.write_str(")")
    }
}

/// Domain of Interpretation of IPsec (RFC 2407 section 4.2).
pub const DOI_IPSEC: u32 = 1;
/// The only IPsec situation this codec reads (RFC 2407 section 4.6.1).
pub const SIT_IDENTITY_ONLY: u32 = 1;
/// IPsec situation bit: secrecy labels follow (RFC 2407 section 4.6.1).
pub const SIT_SECRECY: u32 = 2;
/// IPsec situation bit: integrity labels follow (RFC 2407 section 4.6.1).
pub const SIT_INTEGRITY: u32 = 4;
