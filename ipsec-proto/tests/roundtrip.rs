//! Property tests: everything encoded parses back to the same value, and everything
//! that parses re-encodes to the same bytes.

use ipsec_proto::esp::{pad_len, parse_trailer, EspHeader, Trailer};
use ipsec_proto::isakmp::{
    chain_len, encode_message, encode_payloads, parse_payloads, parse_payloads_exact, Attribute,
    AttributeValue, DeletePayload, ExchangeType, Flags, Header, IdPayload, IdType, Message,
    NotifyPayload, NotifyType, Payload, PayloadType, Proposal, ProtocolId, SaPayload, Transform,
    DOI_IPSEC,
};
use ipsec_proto::natt::{classify, Udp4500};
use proptest::prelude::*;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn attribute() -> impl Strategy<Value = Attribute> {
    let value = prop_oneof![
        any::<u16>().prop_map(AttributeValue::Basic),
        bytes(24).prop_map(AttributeValue::Variable),
    ];
    (0u16..0x8000, value).prop_map(|(attribute_type, value)| Attribute {
        attribute_type,
        value,
    })
}

fn transform() -> impl Strategy<Value = Transform> {
    (
        any::<u8>(),
        any::<u8>(),
        prop::collection::vec(attribute(), 0..6),
    )
        .prop_map(|(number, transform_id, attributes)| Transform {
            number,
            transform_id,
            attributes,
        })
}

fn proposal() -> impl Strategy<Value = Proposal> {
    (
        any::<u8>(),
        any::<u8>(),
        bytes(17),
        prop::collection::vec(transform(), 0..4),
    )
        .prop_map(|(number, protocol, spi, transforms)| Proposal {
            number,
            protocol_id: ProtocolId(protocol),
            spi,
            transforms,
        })
}

fn sa() -> impl Strategy<Value = SaPayload> {
    let doi_situation = prop_oneof![
        (Just(DOI_IPSEC), 0u32..2),
        (any::<u32>(), any::<u32>())
            .prop_filter("ipsec situations are checked", |(d, _)| *d != DOI_IPSEC),
    ];
    (doi_situation, prop::collection::vec(proposal(), 1..4)).prop_map(
        |((doi, situation), proposals)| SaPayload {
            doi,
            situation,
            proposals,
        },
    )
}

fn unknown_type() -> impl Strategy<Value = PayloadType> {
    any::<u8>()
        .prop_filter("types this crate decodes", |t| {
            !matches!(t, 0 | 1 | 4..=13 | 20 | 21 | 130 | 131)
        })
        .prop_map(PayloadType)
}

fn delete() -> impl Strategy<Value = DeletePayload> {
    (any::<u32>(), any::<u8>(), 0u8..17, 0usize..5).prop_flat_map(
        |(doi, protocol, spi_size, count)| {
            prop::collection::vec(
                prop::collection::vec(any::<u8>(), usize::from(spi_size)),
                count,
            )
            .prop_map(move |spis| DeletePayload {
                doi,
                protocol_id: ProtocolId(protocol),
                spi_size,
                spis,
            })
        },
    )
}

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        sa().prop_map(Payload::Sa),
        bytes(300).prop_map(Payload::KeyExchange),
        (any::<u8>(), any::<u8>(), any::<u16>(), bytes(40)).prop_map(
            |(t, protocol, port, data)| {
                Payload::Identification(IdPayload {
                    id_type: IdType(t),
                    protocol,
                    port,
                    data,
                })
            }
        ),
        (any::<u8>(), bytes(64))
            .prop_map(|(encoding, data)| Payload::Certificate { encoding, data }),
        (any::<u8>(), bytes(64)).prop_map(|(cert_type, authority)| {
            Payload::CertificateRequest {
                cert_type,
                authority,
            }
        }),
        bytes(64).prop_map(Payload::Hash),
        bytes(64).prop_map(Payload::Signature),
        bytes(64).prop_map(Payload::Nonce),
        (
            any::<u32>(),
            any::<u8>(),
            any::<u16>(),
            bytes(17),
            bytes(16)
        )
            .prop_map(|(doi, protocol, notify, spi, data)| Payload::Notification(
                NotifyPayload {
                    doi,
                    protocol_id: ProtocolId(protocol),
                    notify_type: NotifyType(notify),
                    spi,
                    data,
                }
            )),
        delete().prop_map(Payload::Delete),
        bytes(32).prop_map(Payload::VendorId),
        (
            prop_oneof![Just(PayloadType::NAT_D), Just(PayloadType::NAT_D_DRAFT)],
            bytes(64)
        )
            .prop_map(|(payload_type, hash)| Payload::NatD { payload_type, hash }),
        (
            prop_oneof![Just(PayloadType::NAT_OA), Just(PayloadType::NAT_OA_DRAFT)],
            any::<u8>(),
            bytes(17)
        )
            .prop_map(|(payload_type, t, address)| Payload::NatOa {
                payload_type,
                id_type: IdType(t),
                address,
            }),
        (unknown_type(), bytes(40))
            .prop_map(|(payload_type, body)| Payload::Unknown { payload_type, body }),
    ]
}

fn header() -> impl Strategy<Value = Header> {
    (
        any::<[u8; 8]>(),
        any::<[u8; 8]>(),
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        any::<u32>(),
    )
        .prop_map(|(ci, cr, version, exchange, flags, message_id)| Header {
            initiator_cookie: ci,
            responder_cookie: cr,
            next_payload: PayloadType::NONE,
            version,
            exchange_type: ExchangeType(exchange),
            flags: Flags(flags),
            message_id,
            length: 0,
        })
}

#[expect(
    clippy::unwrap_used,
    reason = "test helper: a failing decode fails the property"
)]
fn decode_all(chain: &[u8], first: PayloadType, padded: bool) -> Vec<Payload> {
    let raws = if padded {
        parse_payloads(first, chain)
    } else {
        parse_payloads_exact(first, chain)
    }
    .unwrap();
    raws.iter().map(|r| r.decode().unwrap()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_payload_round_trips(p in payload()) {
        let mut out = Vec::new();
        let first = encode_payloads(std::slice::from_ref(&p), &mut out);
        prop_assert_eq!(first, p.payload_type());
        prop_assert_eq!(decode_all(&out, first, false), vec![p]);
    }

    #[test]
    fn chains_round_trip(chain in prop::collection::vec(payload(), 0..8)) {
        let mut out = Vec::new();
        let first = encode_payloads(&chain, &mut out);
        prop_assert_eq!(decode_all(&out, first, false), chain);
    }

    #[test]
    fn padded_chains_round_trip(chain in prop::collection::vec(payload(), 1..6), pad in 0usize..17, counted in any::<bool>()) {
        let mut out = Vec::new();
        let first = encode_payloads(&chain, &mut out);
        let end = out.len();
        out.resize(end + pad, 0);
        if counted && pad > 0 {
            *out.last_mut().unwrap() = u8::try_from(pad).unwrap();
        }
        let raws = parse_payloads(first, &out).unwrap();
        prop_assert_eq!(chain_len(&raws), end);
        prop_assert_eq!(decode_all(&out, first, true), chain);
        prop_assert_eq!(parse_payloads_exact(first, &out).is_ok(), pad == 0);
    }

    #[test]
    fn messages_round_trip(h in header(), chain in prop::collection::vec(payload(), 0..6)) {
        let mut out = Vec::new();
        encode_message(&h, &chain, &mut out);
        let message = Message::parse(&out).unwrap();
        prop_assert_eq!(usize::try_from(message.header.length).unwrap(), out.len());
        prop_assert_eq!(message.header.next_payload, chain.first().map_or(PayloadType::NONE, Payload::payload_type));
        let expected = Header { next_payload: message.header.next_payload, length: message.header.length, ..h };
        prop_assert_eq!(message.header, expected);
        let decoded: Vec<Payload> = message.payloads().unwrap().iter().map(|r| r.decode().unwrap()).collect();
        prop_assert_eq!(decoded, chain);
    }

    #[test]
    fn headers_round_trip(raw in any::<[u8; 28]>()) {
        let h = Header::parse(&raw).unwrap();
        let mut out = Vec::new();
        h.encode(&mut out);
        prop_assert_eq!(out, raw.to_vec());
    }

    /// Arbitrary bytes never panic, and whatever is accepted re-encodes identically.
    #[test]
    fn accepted_chains_reencode_identically(first in any::<u8>(), chain in bytes(400)) {
        if let Ok(raws) = parse_payloads(PayloadType(first), &chain) {
            let decoded: Result<Vec<Payload>, _> = raws.iter().map(|r| r.decode()).collect();
            if let Ok(decoded) = decoded {
                let mut out = Vec::new();
                let written_first = encode_payloads(&decoded, &mut out);
                prop_assert_eq!(&out[..], &chain[..chain_len(&raws)]);
                if !decoded.is_empty() {
                    prop_assert_eq!(written_first, PayloadType(first));
                }
            }
        }
    }

    /// Mutating one byte of a valid SA payload never panics, and an accepted mutant
    /// re-encodes identically.
    #[test]
    fn mutated_sa_payloads_are_rejected_or_exact(s in sa(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut out = Vec::new();
        let first = encode_payloads(&[Payload::Sa(s)], &mut out);
        let i = at.index(out.len());
        out[i] = byte;
        if let Ok(raws) = parse_payloads_exact(first, &out) {
            if let Ok(decoded) = raws.iter().map(|r| r.decode()).collect::<Result<Vec<_>, _>>() {
                let mut again = Vec::new();
                encode_payloads(&decoded, &mut again);
                prop_assert_eq!(again, out);
            }
        }
    }

    #[test]
    fn esp_trailer_round_trips(len in 0usize..300, block in prop_oneof![Just(4usize), Just(8), Just(16)], next_header in any::<u8>()) {
        let pad = pad_len(len, block);
        prop_assert_eq!((len + usize::from(pad) + 2) % block, 0);
        let mut plaintext = vec![0xab; len + usize::from(pad) + 2];
        Trailer { pad_len: pad, next_header }.encode(&mut plaintext[len..]).unwrap();
        let (payload_len, trailer) = parse_trailer(&plaintext).unwrap();
        prop_assert_eq!(payload_len, len);
        prop_assert_eq!(trailer, Trailer { pad_len: pad, next_header });
    }

    #[test]
    fn esp_headers_round_trip(spi in any::<u32>(), seq in any::<u32>()) {
        let h = EspHeader { spi, sequence_number: seq };
        let mut buf = [0u8; 12];
        h.encode(&mut buf).unwrap();
        prop_assert_eq!(EspHeader::parse(&buf).unwrap(), h);
    }

    #[test]
    fn classify_never_panics_and_strips_only_the_marker(data in bytes(64)) {
        match classify(&data) {
            Ok(Udp4500::Ike(ike)) => prop_assert_eq!(ike, &data[4..]),
            Ok(Udp4500::Esp(esp)) => {
                prop_assert_eq!(esp, &data[..]);
                prop_assert!(data.len() >= 8 && data[..4] != [0; 4]);
            }
            Ok(Udp4500::Keepalive) => prop_assert_eq!(data, vec![0xff]),
            Err(_) => prop_assert!(data.len() < 8 && data != [0xff] && !data.starts_with(&[0; 4])),
        }
    }

    #[test]
    fn arbitrary_trailers_never_panic(data in bytes(64)) {
        if let Ok((len, trailer)) = parse_trailer(&data) {
            prop_assert_eq!(len + usize::from(trailer.pad_len) + 2, data.len());
        }
    }

    #[test]
    fn arbitrary_datagrams_never_panic(data in bytes(200)) {
        if let Ok(m) = Message::parse(&data) {
            prop_assert_eq!(m.body.len() + Header::LEN, data.len());
            if let Ok(raws) = m.payloads() {
                for r in raws {
                    let _ = r.decode();
                }
            }
        }
    }
}

#[test]
fn attribute_number_picks_the_short_form() {
    assert_eq!(
        Attribute::number(12, 3960).value,
        AttributeValue::Basic(3960)
    );
    assert_eq!(
        Attribute::number(12, 86_400).value,
        AttributeValue::Variable(vec![0, 1, 0x51, 0x80])
    );
    assert_eq!(
        Attribute::number(2, 1 << 40).value,
        AttributeValue::Variable(vec![0, 0, 1, 0, 0, 0, 0, 0])
    );
    assert_eq!(Attribute::number(12, 86_400).value.as_u64(), Some(86_400));
    assert_eq!(AttributeValue::Variable(vec![1; 9]).as_u64(), None);
}
