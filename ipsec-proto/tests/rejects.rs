//! Strict rejection: one test (at least) per `DecodeError` variant, each built from a
//! valid encoding with one field broken, asserting the exact error and offset.

use ipsec_proto::esp::{parse_trailer, EspHeader};
use ipsec_proto::isakmp::{
    attr, encode_message, encode_payloads, parse_payloads, parse_payloads_exact, Attribute,
    AttributeValue, ExchangeType, Flags, Header, Message, NotifyType, Payload, PayloadType,
    Proposal, ProtocolId, SaPayload, Transform, DOI_IPSEC, MAX_PAYLOADS, SIT_IDENTITY_ONLY,
};
use ipsec_proto::natt::classify;
use ipsec_proto::{DecodeError, Part};

fn header() -> Header {
    Header {
        initiator_cookie: [1; 8],
        responder_cookie: [0; 8],
        next_payload: PayloadType::NONE,
        version: 0x10,
        exchange_type: ExchangeType::IDENTITY_PROTECTION,
        flags: Flags(0),
        message_id: 0,
        length: 0,
    }
}

/// A phase-1 SA payload like strongSwan's: one proposal, one transform, AES-128/SHA1/
/// group 14/PSK, lifetime as a 4-byte variable attribute.
fn sa() -> SaPayload {
    SaPayload {
        doi: DOI_IPSEC,
        situation: SIT_IDENTITY_ONLY,
        proposals: vec![Proposal {
            number: 1,
            protocol_id: ProtocolId::ISAKMP,
            spi: vec![],
            transforms: vec![Transform {
                number: 1,
                transform_id: attr::oakley::KEY_IKE,
                attributes: vec![
                    Attribute::basic(attr::oakley::ENCRYPTION_ALGORITHM, attr::oakley::AES_CBC),
                    Attribute::basic(attr::oakley::KEY_LENGTH, 128),
                    Attribute::basic(attr::oakley::HASH_ALGORITHM, attr::oakley::SHA),
                    Attribute {
                        attribute_type: attr::oakley::LIFE_DURATION,
                        value: AttributeValue::Variable(vec![0, 1, 0x51, 0x80]),
                    },
                ],
            }],
        }],
    }
}

/// Encoded SA payload with generic header. Layout: 0 generic header, 4 DOI,
/// 8 situation, 12 proposal header, 16 proposal fields, 20 transform header,
/// 24 transform fields, 28 attributes (4 x TV 4 bytes minus last: 28, 32, 36, then TLV
/// at 40 with its value at 44..48).
fn sa_bytes() -> Vec<u8> {
    let mut out = Vec::new();
    encode_payloads(&[Payload::Sa(sa())], &mut out);
    assert_eq!(out.len(), 48);
    out
}

fn decode_sa(bytes: &[u8]) -> Result<Payload, DecodeError> {
    let raws = parse_payloads_exact(PayloadType::SA, bytes)?;
    assert_eq!(raws.len(), 1);
    raws[0].decode()
}

#[test]
fn accepts_the_reference_sa() {
    assert_eq!(decode_sa(&sa_bytes()), Ok(Payload::Sa(sa())));
}

#[test]
fn rejects_truncated_header() {
    let mut msg = Vec::new();
    encode_message(&header(), &[], &mut msg);
    assert_eq!(
        Message::parse(&msg[..27]),
        Err(DecodeError::Truncated {
            part: Part::IsakmpHeader,
            offset: 24,
            needed: 4,
            available: 3
        })
    );
}

#[test]
fn rejects_truncated_payload_body() {
    // A Notification needs 8 fixed bytes; give it 6.
    let chain = [0, 0, 0, 10, 0, 0, 0, 1, 3, 0];
    assert_eq!(
        parse_payloads_exact(PayloadType::NOTIFICATION, &chain).unwrap()[0].decode(),
        Err(DecodeError::Truncated {
            part: Part::Payload {
                payload_type: PayloadType::NOTIFICATION,
                index: 0
            },
            offset: 10,
            needed: 2,
            available: 0
        })
    );
}

#[test]
fn rejects_message_length_beyond_datagram() {
    let mut msg = Vec::new();
    encode_message(&header(), &[Payload::VendorId(vec![1, 2, 3, 4])], &mut msg);
    assert_eq!(
        Message::parse(&msg[..msg.len() - 1]),
        Err(DecodeError::MessageLengthMismatch {
            declared: 36,
            datagram: 35
        })
    );
}

#[test]
fn rejects_datagram_longer_than_message_length() {
    let mut msg = Vec::new();
    encode_message(&header(), &[Payload::VendorId(vec![1, 2, 3, 4])], &mut msg);
    msg.push(0);
    assert_eq!(
        Message::parse(&msg),
        Err(DecodeError::MessageLengthMismatch {
            declared: 36,
            datagram: 37
        })
    );
}

#[test]
fn rejects_message_length_below_header_size() {
    let mut msg = Vec::new();
    encode_message(&header(), &[], &mut msg);
    msg[24..28].copy_from_slice(&20u32.to_be_bytes());
    assert_eq!(
        Message::parse(&msg),
        Err(DecodeError::LengthTooSmall {
            part: Part::IsakmpHeader,
            offset: 0,
            declared: 20,
            minimum: 28
        })
    );
}

#[test]
fn rejects_payload_shorter_than_generic_header() {
    let chain = [0, 0, 0, 3, 0, 0, 0, 0];
    assert_eq!(
        parse_payloads(PayloadType::HASH, &chain),
        Err(DecodeError::LengthTooSmall {
            part: Part::Payload {
                payload_type: PayloadType::HASH,
                index: 0
            },
            offset: 0,
            declared: 3,
            minimum: 4
        })
    );
}

#[test]
fn rejects_payload_length_past_end_of_chain() {
    let mut chain = Vec::new();
    encode_payloads(
        &[Payload::Hash(vec![9; 20]), Payload::Nonce(vec![7; 16])],
        &mut chain,
    );
    chain.truncate(chain.len() - 1);
    assert_eq!(
        parse_payloads(PayloadType::HASH, &chain),
        Err(DecodeError::LengthOverrun {
            part: Part::Payload {
                payload_type: PayloadType::NONCE,
                index: 1
            },
            offset: 24,
            declared: 20,
            available: 19
        })
    );
}

#[test]
fn rejects_chain_truncated_inside_generic_header() {
    let chain = [10, 0, 0, 4, 0, 0];
    assert_eq!(
        parse_payloads(PayloadType::HASH, &chain),
        Err(DecodeError::Truncated {
            part: Part::Payload {
                payload_type: PayloadType::NONCE,
                index: 1
            },
            offset: 6,
            needed: 2,
            available: 0
        })
    );
}

#[test]
fn rejects_proposal_shorter_than_its_fixed_part() {
    let mut sa = sa_bytes();
    sa[14..16].copy_from_slice(&7u16.to_be_bytes());
    assert_eq!(
        decode_sa(&sa),
        Err(DecodeError::LengthTooSmall {
            part: Part::Proposal,
            offset: 12,
            declared: 7,
            minimum: 8
        })
    );
}

#[test]
fn rejects_proposal_overrunning_sa() {
    let mut sa = sa_bytes();
    sa[14..16].copy_from_slice(&37u16.to_be_bytes());
    assert_eq!(
        decode_sa(&sa),
        Err(DecodeError::LengthOverrun {
            part: Part::Proposal,
            offset: 12,
            declared: 37,
            available: 36
        })
    );
}

#[test]
fn rejects_attribute_overrunning_transform() {
    // The TLV lifetime at 40 claims 5 value bytes; the transform has 4 left.
    let mut sa = sa_bytes();
    sa[42..44].copy_from_slice(&5u16.to_be_bytes());
    assert_eq!(
        decode_sa(&sa),
        Err(DecodeError::LengthOverrun {
            part: Part::Attribute,
            offset: 40,
            declared: 5,
            available: 4
        })
    );
}

#[test]
fn rejects_attribute_cut_in_its_header() {
    // Shrink the transform (and proposal, SA) by 2 bytes: the TLV header is cut.
    let mut sa = sa_bytes();
    sa.truncate(42);
    sa[2..4].copy_from_slice(&42u16.to_be_bytes());
    sa[14..16].copy_from_slice(&30u16.to_be_bytes());
    sa[22..24].copy_from_slice(&22u16.to_be_bytes());
    assert_eq!(
        decode_sa(&sa),
        Err(DecodeError::Truncated {
            part: Part::Attribute,
            offset: 42,
            needed: 2,
            available: 0
        })
    );
}

#[test]
fn rejects_bytes_after_last_proposal() {
    // SA payload grows by 4 zero bytes after the only proposal.
    let mut sa = sa_bytes();
    sa.extend_from_slice(&[0; 4]);
    sa[2..4].copy_from_slice(&52u16.to_be_bytes());
    assert_eq!(
        decode_sa(&sa),
        Err(DecodeError::TrailingBytes {
            part: Part::Proposal,
            offset: 48,
            extra: 4
        })
    );
}

#[test]
fn rejects_bytes_after_clear_text_chain() {
    let mut chain = Vec::new();
    encode_payloads(&[Payload::Hash(vec![9; 20])], &mut chain);
    chain.extend_from_slice(&[0; 4]);
    assert_eq!(
        parse_payloads_exact(PayloadType::HASH, &chain),
        Err(DecodeError::TrailingBytes {
            part: Part::Padding,
            offset: 24,
            extra: 4
        })
    );
    assert!(parse_payloads(PayloadType::HASH, &chain).is_ok());
}

#[test]
fn rejects_delete_with_bytes_beyond_its_spis() {
    let chain = [
        0, 0, 0, 17, 0, 0, 0, 1, 3, 4, 0, 1, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
    ];
    assert_eq!(
        parse_payloads_exact(PayloadType::DELETE, &chain).unwrap()[0].decode(),
        Err(DecodeError::TrailingBytes {
            part: Part::Payload {
                payload_type: PayloadType::DELETE,
                index: 0
            },
            offset: 16,
            extra: 1
        })
    );
}

#[test]
fn rejects_delete_with_fewer_spis_than_counted() {
    let chain = [0, 0, 0, 16, 0, 0, 0, 1, 3, 4, 0, 2, 0xaa, 0xbb, 0xcc, 0xdd];
    assert_eq!(
        parse_payloads_exact(PayloadType::DELETE, &chain).unwrap()[0].decode(),
        Err(DecodeError::Truncated {
            part: Part::Payload {
                payload_type: PayloadType::DELETE,
                index: 0
            },
            offset: 16,
            needed: 4,
            available: 0
        })
    );
}

#[test]
fn rejects_non_zero_padding() {
    let mut chain = Vec::new();
    encode_payloads(&[Payload::Hash(vec![9; 20])], &mut chain);
    chain.extend_from_slice(&[0, 0, 1, 0, 0, 0, 0, 0]);
    assert_eq!(
        parse_payloads(PayloadType::HASH, &chain),
        Err(DecodeError::BadPadding { offset: 26 })
    );
}

#[test]
fn rejects_padding_whose_last_byte_is_not_its_length() {
    let mut chain = Vec::new();
    encode_payloads(&[Payload::Hash(vec![9; 20])], &mut chain);
    chain.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 7]);
    assert_eq!(
        parse_payloads(PayloadType::HASH, &chain),
        Err(DecodeError::BadPadding { offset: 31 })
    );
    // The same padding with its own length (8) in the last byte is accepted.
    *chain.last_mut().unwrap() = 8;
    assert_eq!(parse_payloads(PayloadType::HASH, &chain).unwrap().len(), 1);
}

#[test]
fn rejects_too_many_payloads() {
    let vids = vec![Payload::VendorId(vec![]); MAX_PAYLOADS + 1];
    let mut chain = Vec::new();
    encode_payloads(&vids, &mut chain);
    assert_eq!(
        parse_payloads(PayloadType::VENDOR_ID, &chain),
        Err(DecodeError::TooManyPayloads {
            limit: MAX_PAYLOADS
        })
    );
    chain.clear();
    encode_payloads(&vids[..MAX_PAYLOADS], &mut chain);
    assert_eq!(
        parse_payloads(PayloadType::VENDOR_ID, &chain)
            .unwrap()
            .len(),
        MAX_PAYLOADS
    );
}

#[test]
fn rejects_non_zero_reserved_in_generic_header() {
    let chain = [0, 1, 0, 4];
    assert_eq!(
        parse_payloads(PayloadType::HASH, &chain),
        Err(DecodeError::ReservedNotZero {
            part: Part::Payload {
                payload_type: PayloadType::HASH,
                index: 0
            },
            offset: 1
        })
    );
}

#[test]
fn rejects_non_zero_reserved_in_transform() {
    let mut sa = sa_bytes();
    sa[27] = 1;
    assert_eq!(
        decode_sa(&sa),
        Err(DecodeError::ReservedNotZero {
            part: Part::Transform,
            offset: 26
        })
    );
}

#[test]
fn rejects_non_zero_reserved_in_nat_oa() {
    let chain = [0, 0, 0, 12, 1, 0, 5, 0, 192, 0, 2, 1];
    assert_eq!(
        parse_payloads(PayloadType::NAT_OA, &chain).unwrap()[0].decode(),
        Err(DecodeError::ReservedNotZero {
            part: Part::Payload {
                payload_type: PayloadType::NAT_OA,
                index: 0
            },
            offset: 5
        })
    );
}

#[test]
fn rejects_transform_where_proposal_expected() {
    let mut sa = sa_bytes();
    sa[12] = PayloadType::TRANSFORM.0;
    assert_eq!(
        decode_sa(&sa),
        Err(DecodeError::UnexpectedPayload {
            part: Part::Proposal,
            offset: 12,
            found: PayloadType::TRANSFORM
        })
    );
}

#[test]
fn rejects_transform_chain_claiming_a_missing_successor() {
    let mut sa = sa_bytes();
    sa[20] = PayloadType::TRANSFORM.0;
    assert_eq!(
        decode_sa(&sa),
        Err(DecodeError::Truncated {
            part: Part::Transform,
            offset: 48,
            needed: 1,
            available: 0
        })
    );
}

#[test]
fn rejects_transform_count_mismatch() {
    let mut sa = sa_bytes();
    sa[19] = 2;
    assert_eq!(
        decode_sa(&sa),
        Err(DecodeError::TransformCountMismatch {
            offset: 12,
            declared: 2,
            found: 1
        })
    );
}

#[test]
fn rejects_secrecy_situation() {
    let mut sa = sa_bytes();
    sa[11] = 3;
    assert_eq!(
        decode_sa(&sa),
        Err(DecodeError::UnsupportedSituation {
            offset: 0,
            situation: 3
        })
    );
}

#[test]
fn rejects_esp_padding_not_in_sequence() {
    let plaintext = [0x45, 0, 1, 2, 4, 3, 4];
    assert_eq!(
        parse_trailer(&plaintext),
        Err(DecodeError::BadEspPadding { offset: 4 })
    );
}

#[test]
fn rejects_esp_pad_length_beyond_data() {
    let plaintext = [1, 2, 3, 4];
    assert_eq!(
        parse_trailer(&plaintext),
        Err(DecodeError::BadEspPadding { offset: 2 })
    );
}

#[test]
fn rejects_esp_trailer_of_one_byte() {
    assert_eq!(
        parse_trailer(&[4]),
        Err(DecodeError::Truncated {
            part: Part::EspTrailer,
            offset: 0,
            needed: 2,
            available: 1
        })
    );
}

#[test]
fn rejects_short_esp_header() {
    assert_eq!(
        EspHeader::parse(&[0, 0, 1, 0, 0, 0, 0]),
        Err(DecodeError::Truncated {
            part: Part::EspHeader,
            offset: 4,
            needed: 4,
            available: 3
        })
    );
}

#[test]
fn rejects_udp_4500_payload_too_short_for_esp() {
    assert_eq!(
        classify(&[1, 2, 3]),
        Err(DecodeError::Truncated {
            part: Part::UdpEncapsulation,
            offset: 0,
            needed: 8,
            available: 3
        })
    );
    assert!(classify(&[]).is_err());
}

#[test]
fn decode_errors_map_to_rfc_2408_notify_types() {
    let cases = [
        (
            DecodeError::MessageLengthMismatch {
                declared: 1,
                datagram: 2,
            },
            NotifyType::UNEQUAL_PAYLOAD_LENGTHS,
        ),
        (
            DecodeError::TransformCountMismatch {
                offset: 0,
                declared: 2,
                found: 1,
            },
            NotifyType::BAD_PROPOSAL_SYNTAX,
        ),
        (
            DecodeError::LengthOverrun {
                part: Part::Attribute,
                offset: 0,
                declared: 5,
                available: 4,
            },
            NotifyType::BAD_PROPOSAL_SYNTAX,
        ),
        (
            DecodeError::UnsupportedSituation {
                offset: 0,
                situation: 2,
            },
            NotifyType::SITUATION_NOT_SUPPORTED,
        ),
        (
            DecodeError::BadPadding { offset: 3 },
            NotifyType::PAYLOAD_MALFORMED,
        ),
    ];
    for (error, notify) in cases {
        assert_eq!(NotifyType::from(error), notify, "{error}");
    }
}

#[test]
fn error_messages_name_part_and_offset() {
    let e = DecodeError::LengthOverrun {
        part: Part::Payload {
            payload_type: PayloadType::NONCE,
            index: 1,
        },
        offset: 24,
        declared: 20,
        available: 19,
    };
    assert_eq!(
        e.to_string(),
        "NONCE payload #1 at offset 24 declares length 20 but only 19 bytes remain"
    );
    assert_eq!(
        format!("{:?}", PayloadType(99)),
        "PayloadType(99)",
        "unknown code points print their number"
    );
    assert_eq!(format!("{:?}", NotifyType::R_U_THERE), "R-U-THERE(36136)");
    assert_eq!(
        format!("{:?}", Flags::ENCRYPTION.with(Flags::COMMIT)),
        "Flags(0x03 E C)"
    );
}

#[test]
fn reports_payload_longer_than_its_length_field() {
    let mut out = Vec::new();
    let result = ipsec_proto::isakmp::try_encode_payloads(
        &[Payload::KeyExchange(vec![0; 65_532])],
        &mut out,
    );
    assert_eq!(
        result,
        Err(ipsec_proto::EncodeError::TooLong {
            part: Part::Payload {
                payload_type: PayloadType::KEY_EXCHANGE,
                index: 0
            },
            length: 65_536
        })
    );
    // One byte less fits exactly.
    out.clear();
    let fits = ipsec_proto::isakmp::try_encode_payloads(
        &[Payload::KeyExchange(vec![0; 65_531])],
        &mut out,
    );
    assert_eq!(fits, Ok(PayloadType::KEY_EXCHANGE));
    assert_eq!(&out[2..4], &[0xff, 0xff]);
}

#[test]
fn reports_inconsistent_counts_and_spi_sizes() {
    use ipsec_proto::isakmp::{DeletePayload, NotifyPayload};
    use ipsec_proto::EncodeError;

    let delete = Payload::Delete(DeletePayload {
        doi: DOI_IPSEC,
        protocol_id: ProtocolId::IPSEC_ESP,
        spi_size: 4,
        spis: vec![vec![1, 2, 3, 4], vec![5, 6, 7]],
    });
    assert_eq!(
        delete.try_encode_body(&mut Vec::new()),
        Err(EncodeError::SpiSizeMismatch {
            expected: 4,
            found: 3
        })
    );

    let notify = Payload::Notification(NotifyPayload {
        doi: DOI_IPSEC,
        protocol_id: ProtocolId::ISAKMP,
        notify_type: NotifyType::R_U_THERE,
        spi: vec![0; 256],
        data: vec![],
    });
    assert_eq!(
        notify.try_encode_body(&mut Vec::new()),
        Err(EncodeError::TooLong {
            part: Part::Spi,
            length: 256
        })
    );

    let mut sa = sa();
    let t = sa.proposals[0].transforms[0].clone();
    sa.proposals[0].transforms = vec![t; 256];
    assert_eq!(
        Payload::Sa(sa).try_encode_body(&mut Vec::new()),
        Err(EncodeError::TooMany {
            part: Part::Transform,
            count: 256,
            limit: 255
        })
    );
}

#[test]
fn reports_esp_buffers_too_short() {
    use ipsec_proto::esp::Trailer;
    use ipsec_proto::EncodeError;

    let header = EspHeader {
        spi: 0x0102_0304,
        sequence_number: 1,
    };
    assert_eq!(
        header.encode(&mut [0; 7]),
        Err(EncodeError::BufferTooShort {
            part: Part::EspHeader,
            needed: 8,
            available: 7
        })
    );
    let trailer = Trailer {
        pad_len: 3,
        next_header: 4,
    };
    assert_eq!(
        trailer.encode(&mut [0; 4]),
        Err(EncodeError::BufferTooShort {
            part: Part::EspTrailer,
            needed: 5,
            available: 4
        })
    );
    let mut buf = [0; 5];
    trailer.encode(&mut buf).unwrap();
    assert_eq!(buf, [1, 2, 3, 3, 4]);
}
