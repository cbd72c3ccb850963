#!/bin/sh
# Verification time of a cached image, offline: from its verification record vs from its stored bundle.
# Usage: bench/verify_record.sh [RUNS]   (fixtures: $THV_SANDBOX_FIXTURES or ../shared/fixtures)
set -eu
cd "$(dirname "$0")/.."
fixtures="${THV_SANDBOX_FIXTURES:-$(pwd)/../shared/fixtures}/sigstore"
exec cargo run -q --release -p thv-sandbox-runtime --example verify_bench -- "$fixtures" "${1:-50}"
