#!/usr/bin/env bash
# Runs every test: formatting, lints, unit, property and fixture tests, the interop tests
# against a real strongSwan (and libreswan) in network namespaces, and a one-minute fuzz
# smoke run. Run as root: the interop tests create namespaces and start daemons.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Tests that need root, namespaces and strongSwan are #[ignore]d in a plain `cargo test`;
# here they run too.
cargo test --workspace -- --include-ignored
# Every cargo-fuzz target, briefly, from its committed seeds (fuzz/README.md).
./scripts/fuzz-smoke.sh
