//! Code points: registry values and names from the RFCs, unknown values kept.

use ipsec_proto::isakmp::{
    attr, ExchangeType, Flags, Header, IdType, NotifyType, PayloadType, ProtocolId,
};

#[test]
fn payload_types_have_rfc_2408_and_3947_numbers() {
    let expected = [
        (PayloadType::SA, 1, "SA"),
        (PayloadType::KEY_EXCHANGE, 4, "KE"),
        (PayloadType::IDENTIFICATION, 5, "ID"),
        (PayloadType::HASH, 8, "HASH"),
        (PayloadType::NONCE, 10, "NONCE"),
        (PayloadType::NOTIFICATION, 11, "N"),
        (PayloadType::DELETE, 12, "D"),
        (PayloadType::VENDOR_ID, 13, "VID"),
        (PayloadType::NAT_D, 20, "NAT-D"),
        (PayloadType::NAT_OA, 21, "NAT-OA"),
        (PayloadType::NAT_D_DRAFT, 130, "NAT-D-DRAFT"),
        (PayloadType::NAT_OA_DRAFT, 131, "NAT-OA-DRAFT"),
    ];
    for (t, value, name) in expected {
        assert_eq!(t.0, value);
        assert_eq!(t.name(), Some(name));
        assert_eq!(PayloadType::from(value), t);
        assert_eq!(u8::from(t), value);
    }
    assert_eq!(PayloadType(200).name(), None);
    assert_eq!(PayloadType(200).to_string(), "200");
}

#[test]
fn notify_types_cover_errors_status_and_dpd() {
    assert_eq!(NotifyType::NO_PROPOSAL_CHOSEN.0, 14);
    assert_eq!(NotifyType::PAYLOAD_MALFORMED.0, 16);
    assert_eq!(NotifyType::UNEQUAL_PAYLOAD_LENGTHS.0, 30);
    assert_eq!(NotifyType::RESPONDER_LIFETIME.0, 24576);
    assert_eq!(NotifyType::INITIAL_CONTACT.0, 24578);
    assert_eq!(NotifyType::R_U_THERE.0, 36136);
    assert_eq!(NotifyType::R_U_THERE_ACK.0, 36137);
    assert!(NotifyType::INVALID_SPI.is_error());
    assert!(!NotifyType::INITIAL_CONTACT.is_error());
    // Every error code 1..=30 of RFC 2408 section 3.14.1 has a name.
    for code in 1..=30 {
        assert!(NotifyType(code).name().is_some(), "notify {code}");
    }
}

#[test]
fn exchange_protocol_and_id_types() {
    assert_eq!(ExchangeType::IDENTITY_PROTECTION.0, 2);
    assert_eq!(ExchangeType::AGGRESSIVE.0, 4);
    assert_eq!(ExchangeType::INFORMATIONAL.0, 5);
    assert_eq!(ExchangeType::QUICK_MODE.0, 32);
    assert_eq!(ProtocolId::IPSEC_ESP.0, 3);
    assert_eq!(IdType::IPV4_ADDR_SUBNET.0, 4);
    assert_eq!(IdType::KEY_ID.0, 11);
    assert_eq!(attr::ipsec::UDP_TUNNEL, 3);
    assert_eq!(attr::ipsec::UDP_TUNNEL_DRAFT, 61443);
    assert_eq!(attr::ipsec::ESP_AES, 12);
    assert_eq!(attr::oakley::AES_CBC, 7);
    assert_eq!(attr::oakley::LIFE_DURATION, 12);
    assert_eq!(attr::group::MODP_2048, 14);
}

#[test]
fn flags_keep_unknown_bits() {
    let f = Flags(0x81);
    assert!(f.contains(Flags::ENCRYPTION));
    assert!(!f.contains(Flags::COMMIT));
    assert_eq!(f.with(Flags::COMMIT), Flags(0x83));
}

#[test]
fn header_versions_and_encryption_flag() {
    let mut raw = [0u8; 28];
    raw[17] = 0x10;
    raw[19] = 0x01;
    let h = Header::parse(&raw).unwrap();
    assert_eq!((h.major_version(), h.minor_version()), (1, 0));
    assert!(h.is_encrypted());
}
