#!/usr/bin/env bash
# Runs every test: formatting, lints, unit and property tests, fixture tests, and the
# interop tests against a real strongSwan in network namespaces (these need root).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Tests that need root, namespaces and strongSwan are #[ignore]d in a plain `cargo test`;
# here they run too.
cargo test --workspace -- --include-ignored
