#!/usr/bin/env bash
# Fuzz smoke run: builds every cargo-fuzz target in fuzz/ and runs each one briefly from
# its committed seeds (about a minute for all of them), failing on any crash, leak,
# timeout or out-of-memory report. Long runs and how to reproduce a finding: fuzz/README.md.
#
# Usage: scripts/fuzz-smoke.sh [seconds per target, default 7]
#   FUZZ_SMOKE_TARGETS="a b" limits the run to those targets.
#
# Needs the stable toolchain (RUSTC_BOOTSTRAP=1 lets it take the sanitizer flags cargo-fuzz
# passes) and cargo-fuzz, which is installed here when missing.
set -euo pipefail

seconds="${1:-7}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

targets="${FUZZ_SMOKE_TARGETS:-$(cargo fuzz list)}"
echo "fuzz-smoke: building $(echo $targets | wc -w) targets"
cargo fuzz build

# A scratch corpus per run: the committed seeds are the input, nothing is written back.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

failed=()
for t in $targets; do
    mkdir -p "$scratch/$t" "$scratch/artifacts/$t"
    seeds=()
    [ -d "seeds/$t" ] && seeds=("seeds/$t")
    log="$scratch/$t.log"
    # One process (no -jobs): its exit status is the verdict (non-zero on any finding).
    if cargo fuzz run "$t" "$scratch/$t" "${seeds[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$scratch/artifacts/$t/" >"$log" 2>&1; then
        runs="$(grep -o 'Done [0-9]* runs' "$log" | tail -1 || true)"
        echo "fuzz-smoke: $t ok (${runs:-no summary})"
    else
        echo "fuzz-smoke: $t FAILED; last lines of its log:"
        tail -n 40 "$log"
        if compgen -G "$scratch/artifacts/$t/*" >/dev/null; then
            mkdir -p "artifacts/$t"
            cp "$scratch/artifacts/$t/"* "artifacts/$t/"
            echo "fuzz-smoke: reproducer(s) copied to fuzz/artifacts/$t/"
        fi
        failed+=("$t")
    fi
done

if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzz-smoke: FAILED: ${failed[*]}"
    exit 1
fi
echo "fuzz-smoke: all targets ran ${seconds}s without a finding"
