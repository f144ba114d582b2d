//! ESP encapsulate and decapsulate through `ipsec_sa::dataplane` for 64, 512 and 1400-byte
//! inner packets and three suites, each beside the bare cipher + MAC work on the same bytes
//! (`ipsec_crypto::Cipher` + `Integrity`), measured in the same run. Target:
//! encapsulate at 1400 bytes <= 1.10 x bare cipher + MAC.
//!
//! The fast path allocates nothing in steady state: `ipsec-sa/tests/dataplane_alloc.rs`
//! proves it with a counting allocator, so it is not measured again here.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::panic,
    reason = "benchmark binary: criterion's macros generate undocumented items, and a failed \
              setup step should stop the run with its message"
)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ipsec_benches::esp::{Bare, Bench};
use ipsec_benches::{suite_name, ESP_SUITES};

const SIZES: [usize; 3] = [64, 512, 1400];

fn bench_esp(c: &mut Criterion) {
    for suite in ESP_SUITES {
        let mut group = c.benchmark_group(format!("esp_{}", suite_name(suite)));
        if suite.0 == ipsec_crypto::EncryptionAlgorithm::TripleDesCbc {
            group.sample_size(20);
        }
        for size in SIZES {
            group.throughput(Throughput::Bytes(size as u64));
            let mut bench = Bench::new(suite, size).unwrap();
            let mut bare = Bare::new(suite, size).unwrap();

            group.bench_function(format!("bare_encrypt_mac/{size}"), |b| {
                b.iter(|| black_box(bare.encrypt_and_mac()))
            });
            group.bench_function(format!("encapsulate/{size}"), |b| {
                b.iter(|| black_box(bench.encapsulate()))
            });
            group.bench_function(format!("bare_verify_decrypt/{size}"), |b| {
                b.iter(|| black_box(bare.verify_and_decrypt()))
            });
            group.bench_function(format!("decapsulate/{size}"), |b| {
                // Each packet is used once (anti-replay); making it is not timed.
                let bench = std::cell::RefCell::new(&mut bench);
                b.iter_batched_ref(
                    || bench.borrow_mut().fresh_packet(),
                    |p| black_box(bench.borrow_mut().decapsulate(p)),
                    BatchSize::SmallInput,
                )
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_esp);
criterion_main!(benches);
