#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60) and exits non-zero on
# the first crash. Not part of CI: run it by hand after touching a parser.
#
#   scripts/fuzz.sh [SECONDS]
#
# The fuzz crate lives outside the workspace and builds with libFuzzer and sanitizer flags
# that need a nightly compiler; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
# Each run starts from the committed seeds in fuzz/corpus/<target>/ and writes what it
# discovers to fuzz/target/corpus/<target>/ (ignored by git), so the seeds stay small.
# A crash leaves its input in fuzz/artifacts/<target>/; reproduce it with
#   (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target> artifacts/<target>/<file>)
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS]  (seconds per target, a positive integer)" >&2
    exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
targets=(keys proxy sni wire node_ipc request_end)
for target in "${targets[@]}"; do
    found="target/corpus/$target"
    mkdir -p "$found" "corpus/$target"
    echo "fuzz.sh: $target for ${seconds}s" >&2
    if ! cargo fuzz run "$target" "$found" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1; then
        echo "fuzz.sh: $target failed; the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
done
echo "fuzz.sh: ${#targets[@]} targets, ${seconds}s each, no crash" >&2
