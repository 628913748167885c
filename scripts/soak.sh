#!/usr/bin/env bash
# Soak test: builds the release binary, then runs scripts/soak.py against it for SECONDS
# (default 300, or $SOAK_SECONDS): a mixed load of good keep-alive and new-connection
# clients, slow clients, garbage and resets, on loopback, while workers are killed and
# stalled at random. It checks that every good request is answered, that the master's fd
# count and RSS come back to their baseline, and that no worker process is left, prints a
# summary, and exits non-zero if a check failed. Not part of CI: run it by hand.
#
#   scripts/soak.sh [SECONDS]
#
# Needs Linux, the Rust toolchain and python3 (3.11 or later, standard library only).
set -euo pipefail

# SOAK_BACKEND=epoll soaks the epoll backend (default: auto); SOAK_THREADS=2 runs stickyd with
# two dispatcher threads (default: 1).
seconds="${1:-${SOAK_SECONDS:-300}}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS]  (how long the load runs, a positive integer; default 300)" >&2
    exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

echo "soak.sh: building the release binary and examples" >&2
cargo build --release --workspace --bins --examples
target="${CARGO_TARGET_DIR:-$root/target}"

exec python3 "$root/scripts/soak.py" --seconds "$seconds" --stickyd "$target/release/stickyd" \
    --backend "${SOAK_BACKEND:-auto}" --threads "${SOAK_THREADS:-1}"
