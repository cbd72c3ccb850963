#!/bin/sh
# Verification time of a cached image, offline: from its verification record vs from its stored bundle, each with
# the embedded trust root and with a trust root refreshed through TUF and cached (re-checked offline on every start).
# Usage: bench/verify_record.sh [RUNS]   (fixtures: $THV_SANDBOX_FIXTURES or ../shared/fixtures)
# The embedded root is older than 30 days, so every gate using it prints the age warning a user would see; those
# lines are counted and left out of the output, everything else on stderr is shown.
set -eu
cd "$(dirname "$0")/.."
fixtures="${THV_SANDBOX_FIXTURES:-$(pwd)/../shared/fixtures}/sigstore"
cargo build -q --release -p thv-sandbox-e2e --example verify_bench
bin="${CARGO_TARGET_DIR:-$(pwd)/target}/release/examples/verify_bench"
err=$(mktemp)
trap 'rm -f "$err"' EXIT
status=0
"$bin" "$fixtures" "${1:-50}" 2>"$err" || status=$?
warned=$(grep -c 'trust root for .* days old' "$err" || true)
grep -v 'trust root for .* days old' "$err" >&2 || true
echo "(stderr: $warned age warnings of the embedded root, one per gate using it, not shown)" >&2
exit "$status"
