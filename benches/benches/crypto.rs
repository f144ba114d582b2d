//! Per-algorithm throughput on 1400-byte buffers (CBC encryption, ESP integrity) and the
//! cost of one Diffie-Hellman key pair plus shared secret for groups 2, 14 and 16.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::panic,
    reason = "benchmark binary: criterion's macros generate undocumented items, and a failed \
              setup step should stop the run with its message"
)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ipsec_crypto::{
    Cipher, DhGroup, DhPrivateKey, EncryptionAlgorithm, Integrity, IntegrityAlgorithm,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::hint::black_box;

const LEN: usize = 1400;

fn bench_ciphers(c: &mut Criterion) {
    let mut group = c.benchmark_group("cbc_encrypt_1400");
    group.throughput(Throughput::Bytes(LEN as u64));
    for alg in EncryptionAlgorithm::ALL {
        // Distinct bytes per position so DES keys are not weak.
        let key = ipsec_benches::key_bytes(alg.key_len(), 0);
        let cipher = Cipher::new(alg, &key).unwrap();
        let iv = vec![0x5a; alg.block_len()];
        // 1400 rounded down to whole blocks, as ESP pads before encrypting.
        let mut buf = vec![0u8; LEN - LEN % alg.block_len()];
        group.bench_function(format!("{alg:?}"), |b| {
            b.iter(|| {
                cipher
                    .encrypt_cbc(black_box(&iv), black_box(&mut buf))
                    .unwrap()
            })
        });
    }
    group.finish();
}

fn bench_integrity(c: &mut Criterion) {
    let mut group = c.benchmark_group("integrity_1400");
    group.throughput(Throughput::Bytes(LEN as u64));
    let data = vec![0xa5u8; LEN];
    for alg in IntegrityAlgorithm::ALL {
        let key = vec![0x0b; alg.key_len()];
        let mac = Integrity::new(alg, &key).unwrap();
        let mut icv = [0u8; 32];
        group.bench_function(format!("{alg:?}"), |b| {
            b.iter(|| mac.compute(&[black_box(&data)], &mut icv).unwrap())
        });
    }
    group.finish();
}

fn bench_dh(c: &mut Criterion) {
    let mut group = c.benchmark_group("dh_keypair_and_shared_secret");
    group.sample_size(10);
    for dh in [DhGroup::Modp1024, DhGroup::Modp2048, DhGroup::Modp4096] {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let peer = DhPrivateKey::generate(dh, &mut rng).public_key();
        group.bench_function(format!("group{}", dh.id()), |b| {
            b.iter(|| {
                let key = DhPrivateKey::generate(dh, &mut rng);
                let public = key.public_key();
                let shared = key.shared_secret(black_box(&peer)).unwrap();
                black_box((public, shared))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_ciphers, bench_integrity, bench_dh);
criterion_main!(benches);
