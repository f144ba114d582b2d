//! The figures of `benches/README.md` in one run: paired, interleaved ratios for the
//! handshake against its DH work and for ESP against bare cipher + MAC, plus per-algorithm
//! throughput on 1400-byte buffers. Prints Markdown tables.
//!
//! `cargo bench -p ipsec-benches --bench report` (about two minutes); `-- quick` for fewer
//! rounds. The criterion benches (`handshake`, `esp`, `crypto`) give confidence intervals
//! for the same operations; this binary is for ratios on a shared machine.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    reason = "benchmark binary: a failed setup step should stop the run with its message"
)]

use std::hint::black_box;

use ipsec_benches::esp::{Bare, Bench};
use ipsec_benches::handshake::{dh_work, pair, run};
use ipsec_benches::paired::{format_ns, machine_line, measure, Paired};
use ipsec_benches::{key_bytes, suite_name, ESP_SUITES};
use ipsec_crypto::{
    Cipher, DhGroup, DhPrivateKey, EncryptionAlgorithm, Integrity, IntegrityAlgorithm,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn handshakes(quick: bool) {
    println!("### Handshake (Main Mode + Quick Mode with PFS, both sides) vs its DH work\n");
    println!("| DH group | DH work (4 key pairs + 4 shared secrets) | handshake | ratio (median) | target <= 1.3 |");
    println!("|---|---|---|---|---|");
    for (g, calls) in [
        (DhGroup::Modp1024, 10),
        (DhGroup::Modp2048, 3),
        (DhGroup::Modp4096, 1),
    ] {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let peer = DhPrivateKey::generate(g, &mut rng).public_key();
        let rounds = if quick { 5 } else { 15 };
        let p = measure(
            rounds,
            calls,
            || dh_work(g, &mut rng, &peer).unwrap(),
            || {
                let (net, lt) = pair(g, 1).unwrap();
                black_box(run(net, lt).unwrap());
            },
        );
        println!(
            "| {} | {} | {} | {:.2} ({:.2}) | {} |",
            g.id(),
            format_ns(p.baseline_ns),
            format_ns(p.candidate_ns),
            p.ratio,
            p.median_ratio,
            if p.ratio <= 1.3 { "met" } else { "missed" }
        );
    }
    println!("\n{}\n", machine_line());
}

fn esp(quick: bool) {
    println!("### ESP through the data plane vs bare cipher + MAC on the same bytes\n");
    println!("| suite | inner bytes | bare enc+MAC | encapsulate | ratio (median) | bare round trip | encap+decap | ratio (median) |");
    println!("|---|---|---|---|---|---|---|---|");
    for suite in ESP_SUITES {
        let slow = suite.0 == EncryptionAlgorithm::TripleDesCbc;
        for size in [64, 512, 1400] {
            // Rounds of roughly 100-300 us: short enough that most escape preemption.
            let calls = match (slow, size) {
                (true, 1400) => 1,
                (true, 512) => 2,
                (true, _) => 10,
                (false, 1400) => 50,
                (false, 512) => 100,
                (false, _) => 300,
            };
            let rounds = if quick { 31 } else { 151 };
            let mut bench = Bench::new(suite, size).unwrap();
            let mut bare = Bare::new(suite, size).unwrap();
            let enc = measure(
                rounds,
                calls,
                || {
                    black_box(bare.encrypt_and_mac());
                },
                || assert_ne!(black_box(bench.encapsulate()), 0),
            );

            // Round trip: a receiver needs a fresh sequence number for every packet, so
            // the data plane side encapsulates (and copies) before it decapsulates; the
            // bare side does the same work in the same order.
            let mut bench = Bench::new(suite, size).unwrap();
            let mut bare = Bare::new(suite, size).unwrap();
            let trip = measure(
                rounds,
                calls,
                || {
                    black_box(bare.encrypt_and_mac());
                    black_box(bare.verify_and_decrypt());
                },
                || {
                    let mut p = bench.fresh_packet();
                    assert_eq!(bench.decapsulate(&mut p), size);
                },
            );
            println!(
                "| {} | {size} | {} | {} | {:.2} ({:.2}) | {} | {} | {:.2} ({:.2}) |",
                suite_name(suite),
                format_ns(enc.baseline_ns),
                format_ns(enc.candidate_ns),
                enc.ratio,
                enc.median_ratio,
                format_ns(trip.baseline_ns),
                format_ns(trip.candidate_ns),
                trip.ratio,
                trip.median_ratio,
            );
        }
    }
    println!("\n{}\n", machine_line());
}

/// Packets per `encapsulate_batch` in [`esp_batch`]: about a 64 KiB TCP burst at 1400 bytes.
const BATCH: usize = 32;

fn esp_batch(quick: bool) {
    println!(
        "### ESP sealing in batches of {BATCH} (AES-CBC of up to eight packets side by side) vs one at a time and vs bare cipher + MAC\n"
    );
    println!("Times per packet.\n");
    println!("| suite | inner bytes | bare enc+MAC | encapsulate | encapsulate_batch | batch / bare (median) | batch / one at a time (median) |");
    println!("|---|---|---|---|---|---|---|");
    let rounds = if quick { 31 } else { 151 };
    for suite in ESP_SUITES
        .iter()
        .copied()
        .filter(|s| s.0 != EncryptionAlgorithm::TripleDesCbc)
    {
        for size in [512, 1400] {
            let mut bench = Bench::new(suite, size).unwrap();
            let mut bare = Bare::new(suite, size).unwrap();
            let mut batch = bench.batch(BATCH);
            let per = |p: Paired| Paired {
                baseline_ns: p.baseline_ns / BATCH as f64,
                candidate_ns: p.candidate_ns / BATCH as f64,
                ..p
            };
            let vs_bare = per(measure(
                rounds,
                2,
                || {
                    for _ in 0..BATCH {
                        black_box(bare.encrypt_and_mac());
                    }
                },
                || assert_eq!(black_box(bench.encapsulate_batch(&mut batch)), BATCH),
            ));
            let mut one = Bench::new(suite, size).unwrap();
            let vs_one = per(measure(
                rounds,
                2,
                || {
                    for _ in 0..BATCH {
                        assert_ne!(black_box(one.encapsulate()), 0);
                    }
                },
                || assert_eq!(black_box(bench.encapsulate_batch(&mut batch)), BATCH),
            ));
            println!(
                "| {} | {size} | {} | {} | {} | {:.2} ({:.2}) | {:.2} ({:.2}) |",
                suite_name(suite),
                format_ns(vs_bare.baseline_ns),
                format_ns(vs_one.baseline_ns),
                format_ns(vs_bare.candidate_ns),
                vs_bare.ratio,
                vs_bare.median_ratio,
                vs_one.ratio,
                vs_one.median_ratio,
            );
        }
    }
    println!("\n{}\n", machine_line());
}

fn throughput(quick: bool) {
    const LEN: usize = 1400;
    println!("### Algorithms on 1400-byte buffers, fastest round (MB/s = 10^6 bytes per second)\n");
    println!("| algorithm | operation | time per buffer | MB/s |");
    println!("|---|---|---|---|");
    let rounds = if quick { 11 } else { 51 };
    for alg in EncryptionAlgorithm::ALL {
        let cipher = Cipher::new(alg, &key_bytes(alg.key_len(), 3)).unwrap();
        let iv = vec![0x5a; alg.block_len()];
        let mut buf = vec![0u8; LEN - LEN % alg.block_len()];
        let calls = if matches!(alg, EncryptionAlgorithm::TripleDesCbc) {
            50
        } else {
            1000
        };
        let mut decrypt_buf = buf.clone();
        let p = measure(
            rounds,
            calls,
            || cipher.encrypt_cbc(&iv, &mut buf).unwrap(),
            || cipher.decrypt_cbc(&iv, &mut decrypt_buf).unwrap(),
        );
        let mbps = |ns: f64| LEN as f64 / ns * 1e3;
        println!(
            "| {alg:?} | CBC encrypt | {} | {:.0} |",
            format_ns(p.baseline_ns),
            mbps(p.baseline_ns)
        );
        println!(
            "| {alg:?} | CBC decrypt | {} | {:.0} |",
            format_ns(p.candidate_ns),
            mbps(p.candidate_ns)
        );
    }
    let data = vec![0xa5u8; LEN];
    for alg in IntegrityAlgorithm::ALL {
        let mac = Integrity::new(alg, &key_bytes(alg.key_len(), 4)).unwrap();
        let mut icv = [0u8; 32];
        let p = measure(
            rounds,
            100,
            || mac.compute(&[&data], &mut icv).unwrap(),
            || assert!(!mac.verify(&[&data], &[0; 32][..mac.icv_len()])),
        );
        println!(
            "| {alg:?} | ICV | {} | {:.0} |",
            format_ns(p.baseline_ns),
            LEN as f64 / p.baseline_ns * 1e3
        );
    }
    println!("\n{}\n", machine_line());
    println!("### Diffie-Hellman: one key pair + one shared secret (fastest of the rounds)\n");
    println!("| group | time |");
    println!("|---|---|");
    for g in [DhGroup::Modp1024, DhGroup::Modp2048, DhGroup::Modp4096] {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let peer = DhPrivateKey::generate(g, &mut rng).public_key();
        let mut once = || {
            let key = DhPrivateKey::generate(g, &mut rng);
            black_box((key.public_key(), key.shared_secret(&peer).unwrap()));
        };
        let calls = 1;
        let mut times = Vec::new();
        for _ in 0..rounds {
            let start = std::time::Instant::now();
            for _ in 0..calls {
                once();
            }
            times.push(start.elapsed().as_secs_f64() * 1e9 / f64::from(calls));
        }
        let fastest = times.iter().copied().fold(f64::INFINITY, f64::min);
        println!("| {} | {} |", g.id(), format_ns(fastest));
    }
    println!("\n{}\n", machine_line());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; `cargo test --benches` runs us with no filter too, so
    // only run when benchmarking (as criterion's binaries do).
    if !args.iter().any(|a| a == "--bench") {
        println!("report: run with `cargo bench -p ipsec-benches --bench report`");
        return;
    }
    let quick = args.iter().any(|a| a == "quick");
    let only = |name: &str| {
        !args
            .iter()
            .any(|a| ["handshake", "esp", "crypto"].contains(&a.as_str()))
            || args.iter().any(|a| a == name)
    };
    if only("handshake") {
        handshakes(quick);
    }
    if only("esp") {
        esp(quick);
        esp_batch(quick);
    }
    if only("crypto") {
        throughput(quick);
    }
}
