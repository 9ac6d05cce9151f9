#!/usr/bin/env bash
# Fuzz smoke test of the variable engine: runs each cargo-fuzz target for a short while
# (FUZZ_SECONDS, default 15) and fails on the first crash, panic, timeout or out-of-memory.
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
#
#   scripts/fuzz-smoke.sh              # every target, 15 s each
#   FUZZ_SECONDS=60 scripts/fuzz-smoke.sh vars_render
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-15}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(vars_parse vars_render)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
status=0
for target in "${targets[@]}"; do
    corpus="fuzz/corpus/$target"
    mkdir -p "$corpus"
    echo "fuzz-smoke: $target for ${seconds}s"
    # -timeout: one input taking longer than 10 s is a hang; -rss_limit_mb: a memory blow-up.
    if ! cargo fuzz run "$target" "$corpus" fuzz/seeds -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -dict=fuzz/vars.dict -print_final_stats=1; then
        echo "fuzz-smoke: $target FAILED; the input is under fuzz/artifacts/$target/" >&2
        status=1
    fi
done
if [ "$status" -eq 0 ]; then
    echo "fuzz-smoke: ${#targets[@]} passed, 0 failed"
fi
exit "$status"
