#!/usr/bin/env bash
# Runs end-to-end tests inside a real cgroup v2 + systemd host: the test VM of tests/vm/build-image.sh (Debian 12,
# booted with qemu-system-x86_64 under software emulation, TCG: no KVM needed), as an unprivileged user with lingering
# and a login session (its own systemd manager and D-Bus, as on most users' machines; this machine is a cgroup v1
# hybrid).
#
#   tests/vm/run.sh [TEST...] [-- ARG...]     (as root: the image build needs debootstrap)
#
# TEST: names of tests/tests/*.rs (default: $THV_VM_TESTS, else sandbox lifecycle hardening limits limits_v2), each
# optionally with a name filter of its own after a colon (`cli:doctor`: only cli.rs's tests whose names contain
# "doctor"); ARG: passed to every test binary (a name filter, --exact, …). Builds thv-sandbox, the probes and the test binaries, builds the
# VM image if its recipe changed (cached in $THV_E2E_VM, default /var/cache/thv-vm), copies the binaries onto a
# second virtio disk (an ext4 image made with `mkfs.ext4 -d` from a staging directory), boots the VM, which runs
# them as user `thv` and writes the results to that disk, then reads the results back (debugfs: no mount) and
# ends with the cargo-test-style `N passed, N failed` line. Exit status: 0 only when every test passed; non-zero
# on a failure, a boot that does not come up within $THV_VM_BOOT_TIMEOUT seconds (default 300) or a run longer
# than $THV_VM_TIMEOUT seconds (default 2400), with the console log shown. Exit status 3 is that last case, no
# results at all: once a run under TCG stalled with both virtual CPUs busy and nothing more on the console (1 of ~10
# runs of the same tests, not seen again); the guest's watchdog lines (run-inside.sh) show what ran.
# Other knobs: THV_VM_SMP (2), THV_VM_MEMORY (2048 MiB), THV_VM_TEST_THREADS (2); THV_VM_BENCH=N also runs
# bench/limits_start.py --runs N in the VM after the tests (as the same user; with the debug build's binaries, the
# ones built here, not a release build: its output says so), shown after the console; THV_VM_BENCH_BASELINE=BIN
# adds a second thv-sandbox binary to it (the default limits, interleaved with the others: an A/B of a change).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

tests=() args=()
while [ $# -gt 0 ]; do
  case $1 in
    --) shift; args=("$@"); break ;;
    *) tests+=("$1"); shift ;;
  esac
done
[ ${#tests[@]} -gt 0 ] || read -r -a tests <<<"${THV_VM_TESTS:-sandbox lifecycle hardening limits limits_v2}"
vm=${THV_E2E_VM:-/var/cache/thv-vm}
boot_timeout=${THV_VM_BOOT_TIMEOUT:-300}
run_timeout=${THV_VM_TIMEOUT:-2400}
t0=$(date +%s)
for tool in qemu-system-x86_64 mkfs.ext4 debugfs objcopy; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found (apt-get install qemu-system-x86 e2fsprogs binutils)" >&2; exit 1; }
done

echo "== VM image ($vm)"
"$here/build-image.sh" "$vm"
t_image=$(date +%s)

echo "== build: thv-sandbox, sandbox-probe, http-probe, tests ${tests[*]}"
cargo build --locked --quiet -p thv-sandbox --bin thv-sandbox
cargo build --locked --quiet -p thv-sandbox-e2e --bin sandbox-probe --bin http-probe
[ -z "${THV_VM_BENCH:-}" ] || cargo build --locked --quiet -p thv-sandbox-e2e --bin make-probe-image
test_flags=(); for t in "${tests[@]}"; do test_flags+=(--test "${t%%:*}"); done
executables=$(cargo test --locked -p thv-sandbox-e2e "${test_flags[@]}" --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["kind"]==["test"]:
        print(m["target"]["name"], m["executable"])')
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
t_build=$(date +%s)

work=$(mktemp -d /var/tmp/thv-vm-run.XXXXXX)
qemu_pid=
cleanup() {
  [ -z "$qemu_pid" ] || kill "$qemu_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== payload"
# Without debug info: the test binaries are a few hundred MB each with it (panics still name the test).
payload=$work/payload
mkdir -p "$payload/bin" "$payload/tests" "$payload/results"
for b in thv-sandbox sandbox-probe http-probe; do
  objcopy --strip-debug "$target_dir/debug/$b" "$payload/bin/$b"
done
for spec in "${tests[@]}"; do
  t=${spec%%:*} filter=; [ "$t" = "$spec" ] || filter=${spec#*:}
  exe=$(awk -v t="$t" '$1 == t { print $2 }' <<<"$executables")
  [ -n "$exe" ] || { echo "error: no test binary for tests/tests/$t.rs" >&2; exit 1; }
  objcopy --strip-debug "$exe" "$payload/tests/$t"
  echo "$t $filter" >>"$payload/tests.list"
done
if [ -n "${THV_VM_BENCH:-}" ]; then
  # The script takes its binaries from $CARGO_TARGET_DIR/release.
  mkdir -p "$payload/bench/target/release"
  for b in thv-sandbox make-probe-image; do
    objcopy --strip-debug "$target_dir/debug/$b" "$payload/bench/target/release/$b"
  done
  if [ -n "${THV_VM_BENCH_BASELINE:-}" ]; then
    mkdir -p "$payload/bench/baseline"
    objcopy --strip-debug "$THV_VM_BENCH_BASELINE" "$payload/bench/baseline/thv-sandbox"
  fi
  cp bench/limits_start.py "$payload/bench/"
  echo "$THV_VM_BENCH" >"$payload/bench/runs"
fi
echo "${args[*]}" >"$payload/test-args"
echo "${THV_VM_TEST_THREADS:-2}" >"$payload/test-threads"
install -m 0755 "$here/payload/run-inside.sh" "$here/payload/run-as-user.sh" "$payload/"
chmod -R a+rX "$payload"
# Room for the results beside the binaries.
size_mb=$(( $(du -sm "$payload" | cut -f1) + 256 ))
truncate -s "${size_mb}M" "$work/payload.img"
mkfs.ext4 -q -F -L thv-payload -d "$payload" "$work/payload.img"
rm -rf "$payload"

echo "== boot (qemu-system-x86_64, TCG, ${THV_VM_SMP:-2} CPUs, ${THV_VM_MEMORY:-2048} MiB; console below)"
console=$work/console.log
: >"$console"
t_boot=$(date +%s)
# The root image is opened with snapshot=on: the run's writes go to a temporary file, the cached image stays
# as built. No network device: the guest has loopback only.
qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp "${THV_VM_SMP:-2}" -m "${THV_VM_MEMORY:-2048}" \
  -nographic -no-reboot -nic none \
  -kernel "$vm/vmlinuz" -initrd "$vm/initrd.img" \
  -append "root=/dev/vda rw console=ttyS0 quiet panic=-1 systemd.show_status=auto" \
  -drive "file=$vm/root.img,format=raw,if=virtio,snapshot=on" \
  -drive "file=$work/payload.img,format=raw,if=virtio" \
  </dev/null >"$console" 2>&1 &
qemu_pid=$!
tail -n +1 --pid="$qemu_pid" -f "$console" &
tail_pid=$!
up=
status=0
while kill -0 "$qemu_pid" 2>/dev/null; do
  now=$(date +%s)
  if [ -z "$up" ]; then
    if grep -q 'THV-VM: multi-user after' "$console"; then
      up=$now
    elif [ $(( now - t_boot )) -ge "$boot_timeout" ]; then
      echo "error: the VM did not come up within $boot_timeout s" >&2; status=1; break
    fi
  fi
  if [ $(( now - t_boot )) -ge "$run_timeout" ]; then
    echo "error: the VM run took longer than $run_timeout s" >&2; status=1; break
  fi
  sleep 1
done
if kill -0 "$qemu_pid" 2>/dev/null; then
  kill "$qemu_pid"; wait "$qemu_pid" 2>/dev/null || true
else
  wait "$qemu_pid" || { echo "error: qemu exited with status $?" >&2; status=1; }
fi
qemu_pid=
wait "$tail_pid" 2>/dev/null || true
t_end=$(date +%s)

result() { debugfs -R "cat /results/$1" "$work/payload.img" 2>/dev/null; }
summary=$(result summary)
rc=$(result rc)
stalled=
if [ -z "$up" ] || [ -z "$summary" ]; then
  echo "error: no results from the VM (boot did not come up or the run did not finish); the console log:" >&2
  tail -n 80 "$console" >&2
  status=1 stalled=1
fi
[ "$rc" = 0 ] || status=1
if [ -n "${THV_VM_BENCH:-}" ]; then
  echo "== bench/limits_start.py in the VM (debug build)"
  result bench.log || echo "(no bench output)"
fi
echo "== VM timings: image ${vm} $(( t_image - t0 )) s, build $(( t_build - t_image )) s, boot to multi-user $(( ${up:-$t_end} - t_boot )) s, tests $(( t_end - ${up:-$t_end} )) s, total $(( t_end - t0 )) s"
[ -n "$summary" ] || summary="0 passed, 1 failed"
case $summary in *" 0 failed") ;; *) status=1 ;; esac
echo "$summary"
# 3: nothing came back (see the header), which a second boot may get past; any other failure is 1.
[ -z "$stalled" ] || exit 3
exit "$status"
