//! Parsing and writing a real Main Mode message (strongSwan's MM1: SA offer and five
//! vendor IDs), against a plain copy of the same bytes measured in the same run.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::panic,
    reason = "benchmark binary: criterion's macros generate undocumented items, and a failed \
              setup step should stop the run with its message"
)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ipsec_proto::isakmp::{encode_message, Message, Payload};
use std::hint::black_box;

fn main_mode_message() -> Vec<u8> {
    let path = ipsec_benches::fixtures_dir().join("mm-aes128-sha1-modp2048-pfs/session.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let session: serde_json::Value = serde_json::from_str(&text).unwrap();
    let hex = session["messages"][0]["isakmp_hex"].as_str().unwrap();
    hex::decode(hex).unwrap()
}

fn bench_codec(c: &mut Criterion) {
    let bytes = main_mode_message();
    let mut group = c.benchmark_group("isakmp_main_mode_1");
    group.throughput(Throughput::Bytes(bytes.len() as u64));

    group.bench_function("baseline_copy", |b| {
        b.iter(|| black_box(black_box(&bytes).to_vec()))
    });

    group.bench_function("parse_and_decode", |b| {
        b.iter(|| {
            let message = Message::parse(black_box(&bytes)).unwrap();
            let decoded: Vec<Payload> = message
                .payloads()
                .unwrap()
                .iter()
                .map(|p| p.decode().unwrap())
                .collect();
            black_box(decoded)
        })
    });

    let message = Message::parse(&bytes).unwrap();
    let header = message.header;
    let payloads: Vec<Payload> = message
        .payloads()
        .unwrap()
        .iter()
        .map(|p| p.decode().unwrap())
        .collect();
    group.bench_function("write", |b| {
        b.iter_batched(
            || Vec::with_capacity(bytes.len()),
            |mut out| {
                encode_message(black_box(&header), black_box(&payloads), &mut out);
                black_box(out)
            },
            BatchSize::SmallInput,
        )
    });
    let mut out = Vec::new();
    encode_message(&header, &payloads, &mut out);
    assert_eq!(out, bytes, "the benchmark must write the message it parsed");
    group.finish();
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
