#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer on the stable toolchain and runs each for a bounded time.
#   fuzz/run.sh [SECONDS_PER_TARGET [TARGET...]]      (default: 10 s, every target in src/bin/)
# New inputs go to a scratch directory (the committed seeds in corpus/ stay as they are); a crash leaves its
# input in $FUZZ_OUT (default target/fuzz-out/<target>/) and makes the script exit 1 after the other targets ran.
# All flags are stable: SanitizerCoverage through LLVM passes, debug assertions (and so overflow checks) on. No
# AddressSanitizer: that needs -Zsanitizer, which stable rustc refuses (vendor-notes.md, "Fuzzing").
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
secs=${1:-10}
[ $# -gt 0 ] && shift
if [ $# -gt 0 ]; then targets=("$@"); else targets=($(ls src/bin | sed 's/\.rs$//')); fi
triple=$(rustc -vV | sed -n 's/^host: //p')
target_dir=${CARGO_TARGET_DIR:-$here/../target}
out=${FUZZ_OUT:-$target_dir/fuzz-out}
export CARGO_INCREMENTAL=0
# Exactly the flags (and order) of `cargo fuzz build --sanitizer none` (cargo-fuzz 0.13), so the two share one build.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cllvm-args=-simplifycfg-branch-fold-threshold=0 \
-Cllvm-args=-sanitizer-coverage-stack-depth -Cdebug-assertions -Ccodegen-units=1"
# FUZZ_QUICK_BUILD=1 (CI): a cheaper build for the short CI run — optimisation level 1 and parallel code generation
# instead of one codegen unit. Fewer executions per second, a build several times faster; not shared with cargo fuzz.
if [ -n "${FUZZ_QUICK_BUILD:-}" ]; then
  RUSTFLAGS=${RUSTFLAGS% -Ccodegen-units=1}
  export CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
fi
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
cargo build --locked --release --target "$triple" --target-dir "$target_dir" "${bins[@]}"
failed=()
for t in "${targets[@]}"; do
  mkdir -p "$out/$t/new"
  echo "== fuzz $t for ${secs}s"
  # -close_fd_mask=2: the code's own stderr notes are noise here; libFuzzer still reports on its own stream.
  seeds=(); [ -d "corpus/$t" ] && seeds=("corpus/$t")
  if ! "$target_dir/$triple/release/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
      -close_fd_mask=2 -print_final_stats=1 -artifact_prefix="$out/$t/" "$out/$t/new" "${seeds[@]}" \
      2> "$out/$t/log"; then
    failed+=("$t")
    tail -40 "$out/$t/log" >&2
  fi
  grep -E '^stat::number_of_executed_units|^stat::new_units_added|^#[0-9]+.*DONE' "$out/$t/log" || true
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz targets that crashed: ${failed[*]} (inputs in $out/<target>/)" >&2
  exit 1
fi
