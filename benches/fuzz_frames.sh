#!/usr/bin/env bash
# Fuzz the wire-protocol receive path (frame decoder -> message decode -> Arrow IPC decode)
# with libFuzzer for a bounded time. Not part of `make test`.
#
#   benches/fuzz_frames.sh [SECONDS]        (default 60)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). cargo-fuzz passes nightly -Z flags;
# on a stable toolchain RUSTC_BOOTSTRAP=1 lets it (set below). AddressSanitizer is on (the
# cargo-fuzz default). Crashes land in fuzz/artifacts/frame_decoder/; the corpus grows in
# fuzz/corpus/frame_decoder/ (both ignored by git). Exit status: 0 when no crash was found.
set -euo pipefail
secs="${1:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"
export RUSTC_BOOTSTRAP=1
target_dir="${CARGO_TARGET_DIR:-$root/target}/fuzz"
mkdir -p corpus/frame_decoder
# Seed the corpus with valid frames, each behind the target's knob byte: a Ping, a Hello, and
# Push frames with real Arrow IPC (plain, lz4, zstd) from fuzz/seeds/ (made with
# laminar_core::net; the knob 0x5f feeds 16-byte chunks with a 2 KiB payload limit).
cp seeds/* corpus/frame_decoder/
printf '\x00\x03\x04\x02\x00\x08\x00\x00\x00\x2a\x00\x00\x00\x00\x00\x00\x00' > corpus/frame_decoder/seed-ping
printf '\x07\x01\x04\x01\x00\x0b\x00\x00\x00LMNR\x01\x00\x03\x00tok' > corpus/frame_decoder/seed-hello
cargo fuzz run --target-dir "$target_dir" -O frame_decoder corpus/frame_decoder -- \
    -max_total_time="$secs" -max_len=4096 -rss_limit_mb=2048
