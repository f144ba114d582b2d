//! Every ISAKMP message and ESP packet of the captured strongSwan/libreswan exchanges in
//! `shared/fixtures` (see its README.md), parsed with this crate and compared with the
//! values recorded independently in each `session.json`.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions: a failing fixture must stop the test"
)]

use std::path::{Path, PathBuf};

use ipsec_proto::esp::{parse_trailer, EspHeader};
use ipsec_proto::isakmp::{
    chain_len, encode_message, encode_payloads, parse_payloads, AttributeValue, Message, Payload,
    PayloadType, Proposal, RawPayload,
};
use ipsec_proto::natt::{classify, Udp4500};
use serde_json::Value;

/// `<workspace>/../shared/fixtures`; in CI a copy of `shared/` sits beside the clone.
fn fixtures_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures");
    assert!(
        dir.is_dir(),
        "fixture directory {} is missing: the fixture tests need shared/fixtures beside the repository",
        dir.display()
    );
    dir
}

fn scenarios() -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(fixtures_dir())
        .expect("read fixtures dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("session.json").is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    out.sort();
    assert!(
        out.len() >= 8,
        "expected at least 8 fixture scenarios, found {}",
        out.len()
    );
    out
}

fn session(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("session.json")).expect("read session.json");
    serde_json::from_str(&text).expect("parse session.json")
}

/// A JSON number or a decimal string (some fields are stored as strings).
fn num(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().expect("unsigned number"),
        Value::String(s) => s.parse().unwrap_or_else(|_| panic!("not a number: {s}")),
        other => panic!("not a number: {other}"),
    }
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

/// One UDP datagram on port 500 or 4500 from a capture.
struct Datagram {
    frame: u64,
    src_port: u16,
    dst_port: u16,
    payload: Vec<u8>,
}

fn read_capture(path: &Path) -> Vec<Datagram> {
    let file = std::fs::File::open(path).expect("open pcap");
    let mut reader = pcap_file::pcap::PcapReader::new(file).expect("pcap header");
    let mut out = Vec::new();
    let mut frame = 0;
    while let Some(packet) = reader.next_packet() {
        let packet = packet.expect("pcap record");
        frame += 1;
        let sliced = etherparse::SlicedPacket::from_ethernet(&packet.data).expect("ethernet frame");
        let Some(etherparse::TransportSlice::Udp(udp)) = sliced.transport else {
            panic!("frame {frame} of {} is not UDP", path.display());
        };
        out.push(Datagram {
            frame,
            src_port: udp.source_port(),
            dst_port: udp.destination_port(),
            payload: udp.payload().to_vec(),
        });
    }
    out
}

/// Name of a payload as session.json writes it: `N(<type>)` for notifications.
fn payload_name(raw: &RawPayload<'_>) -> String {
    match raw.decode().expect("decode payload") {
        Payload::Notification(n) => format!("N({})", n.notify_type),
        _ => raw.payload_type.to_string(),
    }
}

enum Kind<'a> {
    Ike { message: &'a [u8], marker: bool },
    Keepalive,
    Esp(&'a [u8]),
}

fn classify_datagram(d: &Datagram) -> Kind<'_> {
    if d.src_port == 500 || d.dst_port == 500 {
        return Kind::Ike {
            message: &d.payload,
            marker: false,
        };
    }
    assert!(d.src_port == 4500 || d.dst_port == 4500 || d.dst_port > 1023);
    match classify(&d.payload).expect("classify udp 4500") {
        Udp4500::Ike(m) => Kind::Ike {
            message: m,
            marker: true,
        },
        Udp4500::Keepalive => Kind::Keepalive,
        Udp4500::Esp(p) => Kind::Esp(p),
    }
}

/// Checks one ISAKMP message against its `messages[]` record; returns its decoded
/// payloads (decrypted ones from `plaintext_hex`).
fn check_message(scenario: &str, wire: &[u8], marker: bool, record: &Value) -> Vec<Payload> {
    let frame = num(&record["frame"]);
    let ctx = format!("{scenario} frame {frame}");
    assert_eq!(wire, bytes(&record["isakmp_hex"]), "{ctx}: isakmp bytes");
    assert_eq!(
        marker,
        record["non_esp_marker"].as_bool().unwrap(),
        "{ctx}: marker"
    );

    let message = Message::parse(wire).unwrap_or_else(|e| panic!("{ctx}: {e}"));
    let h = &message.header;
    assert_eq!(
        u64::from(h.exchange_type.0),
        num(&record["exchange_type"]),
        "{ctx}"
    );
    assert_eq!(u64::from(h.message_id), num(&record["message_id"]), "{ctx}");
    assert_eq!(u64::from(h.flags.0), num(&record["flags"]), "{ctx}");
    assert_eq!(u64::from(h.length), num(&record["length"]), "{ctx}");
    assert_eq!(
        h.is_encrypted(),
        record["encrypted"].as_bool().unwrap(),
        "{ctx}"
    );
    assert_eq!(
        h.initiator_cookie.to_vec(),
        bytes(&record["icookie"]),
        "{ctx}"
    );
    assert_eq!(
        h.responder_cookie.to_vec(),
        bytes(&record["rcookie"]),
        "{ctx}"
    );
    assert_eq!(h.version, 0x10, "{ctx}: version");

    let plaintext = if h.is_encrypted() {
        bytes(&record["plaintext_hex"])
    } else {
        Vec::new()
    };
    let raws = if h.is_encrypted() {
        assert_eq!(
            plaintext.len(),
            message.body.len(),
            "{ctx}: plaintext length"
        );
        let raws =
            parse_payloads(h.next_payload, &plaintext).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        assert_eq!(
            chain_len(&raws) as u64,
            num(&record["payload_chain_length"]),
            "{ctx}: chain length"
        );
        assert_eq!(
            plaintext[chain_len(&raws)..].to_vec(),
            bytes(&record["padding_hex"]),
            "{ctx}: padding"
        );
        raws
    } else {
        message.payloads().unwrap_or_else(|e| panic!("{ctx}: {e}"))
    };

    let names: Vec<String> = raws.iter().map(payload_name).collect();
    let expected: Vec<String> = record["payloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, expected, "{ctx}: payload names");

    let decoded: Vec<Payload> = raws
        .iter()
        .map(|r| r.decode().unwrap_or_else(|e| panic!("{ctx}: {e}")))
        .collect();

    // Re-encoding gives back the exact bytes: the whole message in clear, the chain
    // (without padding) when encrypted.
    let mut out = Vec::new();
    if h.is_encrypted() {
        let first = encode_payloads(&decoded, &mut out);
        assert_eq!(first, h.next_payload, "{ctx}: first payload type");
        assert_eq!(
            out,
            plaintext[..chain_len(&raws)],
            "{ctx}: re-encoded chain"
        );
    } else {
        encode_message(h, &decoded, &mut out);
        assert_eq!(out, wire, "{ctx}: re-encoded message");
    }
    decoded
}

/// Compares decoded proposals with the parsed form in session.json.
fn check_proposals(ctx: &str, proposals: &[Proposal], expected: &Value) {
    let expected = expected.as_array().expect("proposal list");
    assert_eq!(proposals.len(), expected.len(), "{ctx}: proposal count");
    for (p, e) in proposals.iter().zip(expected) {
        assert_eq!(u64::from(p.number), num(&e["number"]), "{ctx}");
        assert_eq!(u64::from(p.protocol_id.0), num(&e["protocol_id"]), "{ctx}");
        assert_eq!(p.spi, bytes(&e["spi"]), "{ctx}: spi");
        let transforms = e["transforms"].as_array().unwrap();
        assert_eq!(
            p.transforms.len(),
            transforms.len(),
            "{ctx}: transform count"
        );
        for (t, et) in p.transforms.iter().zip(transforms) {
            assert_eq!(u64::from(t.number), num(&et["number"]), "{ctx}");
            assert_eq!(u64::from(t.transform_id), num(&et["transform_id"]), "{ctx}");
            let attrs = et["attributes"].as_array().unwrap();
            assert_eq!(t.attributes.len(), attrs.len(), "{ctx}: attribute count");
            for (a, ea) in t.attributes.iter().zip(attrs) {
                assert_eq!(u64::from(a.attribute_type), num(&ea["type"]), "{ctx}");
                let format = match a.value {
                    AttributeValue::Basic(_) => "TV",
                    AttributeValue::Variable(_) => "TLV",
                };
                assert_eq!(
                    format,
                    ea["format"].as_str().unwrap(),
                    "{ctx}: attribute format"
                );
                assert_eq!(
                    a.value.as_u64(),
                    Some(num(&ea["value"])),
                    "{ctx}: attribute value"
                );
                let value_bytes = match &a.value {
                    AttributeValue::Basic(v) => v.to_be_bytes().to_vec(),
                    AttributeValue::Variable(b) => b.clone(),
                };
                assert_eq!(
                    value_bytes,
                    bytes(&ea["value_hex"]),
                    "{ctx}: attribute bytes"
                );
            }
        }
    }
}

fn first_of<'a, T>(payloads: &'a [Payload], pick: impl Fn(&'a Payload) -> Option<T>) -> T {
    payloads.iter().find_map(pick).expect("payload present")
}

#[test]
fn every_captured_datagram_parses_and_matches_session_json() {
    let mut total_messages = 0;
    let mut total_esp = 0;
    for (scenario, dir) in scenarios() {
        let s = session(&dir);
        let records = s["messages"].as_array().unwrap();
        let esp_records = s["esp_packets"].as_array().cloned().unwrap_or_default();

        for capture in s["captures"].as_array().unwrap() {
            let file = capture["file"].as_str().unwrap();
            let frame_key = if file == "capture.pcap" {
                "frame"
            } else {
                "frame_outside"
            };
            let datagrams = read_capture(&dir.join(file));
            assert_eq!(
                datagrams.len() as u64,
                num(&capture["frames"]),
                "{scenario} {file}: frames"
            );

            let mut seen_messages = 0;
            let mut seen_esp = 0;
            for d in &datagrams {
                match classify_datagram(d) {
                    Kind::Ike { message, marker } => {
                        let record = records
                            .iter()
                            .find(|r| num(&r[frame_key]) == d.frame)
                            .unwrap_or_else(|| {
                                panic!("{scenario} {file}: frame {} not in messages[]", d.frame)
                            });
                        check_message(&scenario, message, marker, record);
                        seen_messages += 1;
                    }
                    Kind::Keepalive => assert_eq!(d.payload, [0xff]),
                    Kind::Esp(packet) => {
                        let record = esp_records
                            .iter()
                            .find(|r| num(&r[frame_key]) == d.frame)
                            .unwrap_or_else(|| {
                                panic!("{scenario}: esp frame {} not in esp_packets[]", d.frame)
                            });
                        assert_eq!(packet, bytes(&record["esp_hex"]));
                        let header = EspHeader::parse(packet).unwrap();
                        assert_eq!(header.spi.to_be_bytes().to_vec(), bytes(&record["spi"]));
                        assert_eq!(u64::from(header.sequence_number), num(&record["seq"]));
                        assert_eq!(header.to_bytes(), packet[..8]);
                        seen_esp += 1;
                    }
                }
            }
            assert_eq!(
                seen_messages,
                records.len(),
                "{scenario} {file}: isakmp messages"
            );
            assert_eq!(
                seen_esp,
                esp_records.len(),
                "{scenario} {file}: esp packets"
            );
            total_messages += seen_messages;
            total_esp += seen_esp;
        }
    }
    // 95 messages and 56 ESP packets in capture.pcap, plus the NAT scenario's outside copy.
    assert_eq!(total_messages, 95 + 11);
    assert_eq!(total_esp, 56 + 8);
}

#[test]
fn phase1_offers_keys_nonces_and_ids_match_session_json() {
    for (scenario, dir) in scenarios() {
        let s = session(&dir);
        let p1 = &s["phase1"];
        let records = s["messages"].as_array().unwrap();
        let decoded: Vec<(String, Vec<Payload>)> = records
            .iter()
            .map(|r| {
                let wire = bytes(&r["isakmp_hex"]);
                let dir = r["direction"].as_str().unwrap().to_owned();
                (
                    dir,
                    check_message(&scenario, &wire, r["non_esp_marker"].as_bool().unwrap(), r),
                )
            })
            .collect();

        // First message of the initiator carries SAi: compare with offered_proposals
        // and with sai_b byte for byte.
        let (_, first) = &decoded[0];
        let sa = first_of(first, |p| match p {
            Payload::Sa(sa) => Some(sa),
            _ => None,
        });
        assert_eq!(sa.doi, 1, "{scenario}");
        assert_eq!(sa.situation, 1, "{scenario}");
        check_proposals(&scenario, &sa.proposals, &p1["offered_proposals"]);
        assert_eq!(
            Payload::Sa(sa.clone()).body_bytes(),
            bytes(&p1["sai_b"]),
            "{scenario}: SAi_b"
        );

        // KE and nonce bodies of each direction.
        let find = |dir: &str, f: &dyn Fn(&Payload) -> Option<Vec<u8>>| -> Vec<u8> {
            decoded
                .iter()
                .filter(|(d, _)| d == dir)
                .find_map(|(_, ps)| ps.iter().find_map(f))
                .expect("payload in direction")
        };
        let ke = |p: &Payload| match p {
            Payload::KeyExchange(v) => Some(v.clone()),
            _ => None,
        };
        let nonce = |p: &Payload| match p {
            Payload::Nonce(v) => Some(v.clone()),
            _ => None,
        };
        let id = |p: &Payload| match p {
            Payload::Identification(id) => Some(id.to_body()),
            _ => None,
        };
        assert_eq!(
            find("initiator->responder", &ke),
            bytes(&p1["g_xi"]),
            "{scenario}: g^xi"
        );
        assert_eq!(
            find("responder->initiator", &ke),
            bytes(&p1["g_xr"]),
            "{scenario}: g^xr"
        );
        assert_eq!(
            find("initiator->responder", &nonce),
            bytes(&p1["ni_b"]),
            "{scenario}: Ni_b"
        );
        assert_eq!(
            find("responder->initiator", &nonce),
            bytes(&p1["nr_b"]),
            "{scenario}: Nr_b"
        );
        assert_eq!(
            find("initiator->responder", &id),
            bytes(&p1["idii_b"]),
            "{scenario}: IDii_b"
        );
        assert_eq!(
            find("responder->initiator", &id),
            bytes(&p1["idir_b"]),
            "{scenario}: IDir_b"
        );

        // Every NAT-D hash of phase 1 appears in the recorded order.
        let nat_d: Vec<Vec<u8>> = decoded
            .iter()
            .flat_map(|(_, ps)| ps.iter())
            .filter_map(|p| match p {
                Payload::NatD { hash, .. } => Some(hash.clone()),
                _ => None,
            })
            .collect();
        let expected: Vec<Vec<u8>> = p1["nat_d"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| bytes(&n["hash"]))
            .collect();
        assert_eq!(nat_d, expected, "{scenario}: NAT-D hashes");
    }
}

#[test]
fn quick_mode_offers_and_informationals_match_session_json() {
    let mut quick_modes = 0;
    let mut deletes = 0;
    let mut notifies = 0;
    for (scenario, dir) in scenarios() {
        let s = session(&dir);
        let records = s["messages"].as_array().unwrap();
        let by_frame = |frame: u64| -> Vec<Payload> {
            let r = records
                .iter()
                .find(|r| num(&r["frame"]) == frame)
                .expect("frame");
            check_message(
                &scenario,
                &bytes(&r["isakmp_hex"]),
                r["non_esp_marker"].as_bool().unwrap(),
                r,
            )
        };

        for qm in s["quick_modes"].as_array().cloned().unwrap_or_default() {
            let frames = qm["frames"].as_array().unwrap();
            let qm1 = by_frame(num(&frames[0]));
            assert!(
                matches!(qm1[0], Payload::Hash(_)),
                "{scenario}: QM1 starts with HASH"
            );
            let sa = first_of(&qm1, |p| match p {
                Payload::Sa(sa) => Some(sa),
                _ => None,
            });
            check_proposals(&scenario, &sa.proposals, &qm["proposals_offered"]);
            let ni = first_of(&qm1, |p| match p {
                Payload::Nonce(n) => Some(n),
                _ => None,
            });
            assert_eq!(*ni, bytes(&qm["ni_b"]), "{scenario}: QM Ni_b");
            let ids: Vec<Vec<u8>> = qm1
                .iter()
                .filter_map(|p| match p {
                    Payload::Identification(id) => Some(id.to_body()),
                    _ => None,
                })
                .collect();
            assert_eq!(
                ids,
                vec![
                    bytes(&qm["id_ci"]["body_hex"]),
                    bytes(&qm["id_cr"]["body_hex"])
                ]
            );
            quick_modes += 1;
        }

        for info in s["informationals"].as_array().cloned().unwrap_or_default() {
            let payloads = by_frame(num(&info["frame"]));
            for (got, want) in payloads
                .iter()
                .filter_map(|p| match p {
                    Payload::Delete(d) => Some(d),
                    _ => None,
                })
                .zip(info["delete"].as_array().cloned().unwrap_or_default())
            {
                assert_eq!(u64::from(got.doi), num(&want["doi"]));
                assert_eq!(u64::from(got.protocol_id.0), num(&want["protocol_id"]));
                assert_eq!(u64::from(got.spi_size), num(&want["spi_size"]));
                let spis: Vec<Vec<u8>> =
                    want["spis"].as_array().unwrap().iter().map(bytes).collect();
                assert_eq!(got.spis, spis, "{scenario}: delete spis");
                deletes += 1;
            }
            for (got, want) in payloads
                .iter()
                .filter_map(|p| match p {
                    Payload::Notification(n) => Some(n),
                    _ => None,
                })
                .zip(info["notify"].as_array().cloned().unwrap_or_default())
            {
                assert_eq!(u64::from(got.doi), num(&want["doi"]));
                assert_eq!(u64::from(got.protocol_id.0), num(&want["protocol_id"]));
                assert_eq!(u64::from(got.notify_type.0), num(&want["type"]));
                assert_eq!(got.spi, bytes(&want["spi"]), "{scenario}: notify spi");
                assert_eq!(got.data, bytes(&want["data"]), "{scenario}: notify data");
                notifies += 1;
            }
        }
    }
    assert!(quick_modes >= 7, "quick modes checked: {quick_modes}");
    assert!(deletes >= 14, "deletes checked: {deletes}");
    assert!(notifies >= 2, "notifications checked: {notifies}");
}

#[test]
fn esp_trailers_of_decrypted_packets_parse() {
    let mut checked = 0;
    for (scenario, dir) in scenarios() {
        let s = session(&dir);
        for e in s["esp_packets"].as_array().cloned().unwrap_or_default() {
            // Rebuild the decrypted payload data: inner packet, padding, pad length,
            // next header; the codec must split it back the same way.
            let inner = bytes(&e["inner_ip_hex"]);
            let padding = bytes(&e["padding"]);
            let pad_len = num(&e["pad_length"]);
            let next_header = num(&e["next_header"]);
            let mut plaintext = inner.clone();
            plaintext.extend_from_slice(&padding);
            plaintext.push(u8::try_from(pad_len).unwrap());
            plaintext.push(u8::try_from(next_header).unwrap());

            let (len, trailer) =
                parse_trailer(&plaintext).unwrap_or_else(|e| panic!("{scenario}: {e}"));
            assert_eq!(len, inner.len(), "{scenario}");
            assert_eq!(u64::from(trailer.pad_len), pad_len);
            assert_eq!(u64::from(trailer.next_header), next_header);
            let block = bytes(&e["iv"]).len();
            assert_eq!(
                u64::from(ipsec_proto::esp::pad_len(inner.len(), block)),
                pad_len,
                "{scenario}: strongSwan pads to the cipher block like we do"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 56);
}

#[test]
fn payload_type_of_encoded_chain_is_the_first_payload() {
    let chain = [Payload::Hash(vec![1; 20]), Payload::Nonce(vec![2; 16])];
    let mut out = Vec::new();
    assert_eq!(encode_payloads(&chain, &mut out), PayloadType::HASH);
    assert_eq!(out[0], PayloadType::NONCE.0);
    assert_eq!(&out[2..4], &24u16.to_be_bytes());
}
