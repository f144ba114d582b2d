//! A whole UDP datagram: classified as port 4500 would, parsed as an ISAKMP message,
//! its body walked as a payload chain (as if already decrypted when the E flag is
//! set), every payload decoded, and everything that was accepted re-encoded and
//! compared byte for byte.

#![no_main]

use ipsec_proto::esp::parse_trailer;
use ipsec_proto::isakmp::{chain_len, encode_message, encode_payloads, parse_payloads, Message};
use ipsec_proto::natt::{classify, Udp4500};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Port 4500 demultiplexing and the ESP trailer check must not panic either.
    if let Ok(Udp4500::Ike(inner)) = classify(data) {
        let _ = Message::parse(inner);
    }
    let _ = parse_trailer(data);

    let Ok(message) = Message::parse(data) else {
        return;
    };
    assert_eq!(message.body.len() + 28, data.len());

    if message.header.is_encrypted() {
        // Treat the body as decrypted plaintext: padding is allowed after the chain.
        let Ok(raws) = parse_payloads(message.header.next_payload, message.body) else {
            return;
        };
        let Ok(decoded) = raws
            .iter()
            .map(|r| r.decode())
            .collect::<Result<Vec<_>, _>>()
        else {
            return;
        };
        let mut out = Vec::new();
        encode_payloads(&decoded, &mut out);
        assert_eq!(out, message.body[..chain_len(&raws)]);
    } else {
        let Ok(raws) = message.payloads() else {
            return;
        };
        let Ok(decoded) = raws
            .iter()
            .map(|r| r.decode())
            .collect::<Result<Vec<_>, _>>()
        else {
            return;
        };
        let mut out = Vec::new();
        encode_message(&message.header, &decoded, &mut out);
        assert_eq!(out, data);
    }
});
