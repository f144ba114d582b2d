//! A payload chain on its own: the first byte is the type of the first payload, the
//! rest is the chain (with optional padding). Accepted chains must re-encode exactly,
//! and decoding each payload must either fail cleanly or round-trip.

#![no_main]

use ipsec_proto::isakmp::{
    chain_len, encode_payloads, parse_payloads, parse_payloads_exact, PayloadType,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, chain)) = data.split_first() else {
        return;
    };
    let first = PayloadType(first);

    let exact = parse_payloads_exact(first, chain);
    let Ok(raws) = parse_payloads(first, chain) else {
        assert!(exact.is_err());
        return;
    };
    assert_eq!(exact.is_ok(), chain_len(&raws) == chain.len());

    let mut decoded = Vec::new();
    for raw in &raws {
        assert_eq!(raw.raw.len(), raw.body.len() + 4);
        if let Ok(payload) = raw.decode() {
            // Each payload alone re-encodes to its own raw bytes, apart from the
            // next-payload byte, which depends on its successor.
            let mut out = Vec::new();
            encode_payloads(std::slice::from_ref(&payload), &mut out);
            assert_eq!(out[1..], raw.raw[1..]);
            decoded.push(payload);
        }
    }
    if decoded.len() == raws.len() {
        let mut out = Vec::new();
        let written = encode_payloads(&decoded, &mut out);
        assert_eq!(out, chain[..chain_len(&raws)]);
        if !decoded.is_empty() {
            assert_eq!(written, first);
        }
    }
});
