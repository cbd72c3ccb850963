#!/bin/bash
# In the test VM, as `thv` in its login session: runs each test binary of tests.list with the variables .ci/run
# gives the CI users plus THV_E2E_EXPECT_CGROUP=v2-systemd (the limits must be enforced through a transient
# systemd scope here: those tests fail rather than skip), and writes results/summary, the cargo-test-style line.
set -u
p=/mnt/payload
export CI=true THV_SANDBOX_BIN=$p/bin/thv-sandbox SANDBOX_PROBE_BIN=$p/bin/sandbox-probe \
  HTTP_PROBE_BIN=$p/bin/http-probe THV_E2E_EXPECT_MODE=subids THV_E2E_EXPECT_CGROUP=v2-systemd
: "${XDG_RUNTIME_DIR:=/run/user/$(id -u)}"
: "${DBUS_SESSION_BUS_ADDRESS:=unix:path=$XDG_RUNTIME_DIR/bus}"
export XDG_RUNTIME_DIR DBUS_SESSION_BUS_ADDRESS
echo "THV-VM: as $(id -un) ($(id -u)), cgroup $(sed -n 's/^0:://p' /proc/self/cgroup), bus $DBUS_SESSION_BUS_ADDRESS"
cd "$HOME"
read -r -a args <"$p/test-args"
threads=$(cat "$p/test-threads")
passed=0 failed=0 broken=""
while read -r name filter; do
  [ -n "$name" ] || continue
  # Not for this host: lifecycle's delegated-cgroup test needs a cgroup delegated to the user itself (as .ci/run
  # gives its users); a login session's scope is root's, and the scope route is what limits and limits_v2 test.
  extra=(); [ "$name" = lifecycle ] && extra=(--skip with_a_delegated_cgroup_the_sandbox_gets_its_own_and_it_goes_away)
  [ -z "$filter" ] || extra+=("$filter")
  echo "THV-VM: ---- $name ${args[*]} ${extra[*]}"
  start=$(date +%s)
  timeout --kill-after=30s 20m "$p/tests/$name" --test-threads="$threads" "${args[@]}" "${extra[@]}" </dev/null 2>&1 | tee "$p/results/$name.log"
  rc=${PIPESTATUS[0]}
  echo "THV-VM: ---- $name: exit $rc after $(( $(date +%s) - start )) s"
  line=$(grep -E '^test result: ' "$p/results/$name.log" | tail -n 1)
  if [ -n "$line" ]; then
    passed=$(( passed + $(sed -E 's/.* ([0-9]+) passed.*/\1/' <<<"$line") ))
    failed=$(( failed + $(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line") ))
  fi
  # A binary that crashed, timed out or failed without a result line still counts as a failure.
  if [ "$rc" != 0 ] && { [ -z "$line" ] || grep -q ' 0 failed' <<<"$line"; }; then
    failed=$(( failed + 1 )); broken="$broken $name(exit $rc)"
  fi
done <"$p/tests.list"
if [ -f "$p/bench/runs" ]; then
  echo "THV-VM: ---- bench/limits_start.py --runs $(cat "$p/bench/runs") (debug build)"
  baseline=(); [ ! -x "$p/bench/baseline/thv-sandbox" ] || baseline=(--baseline "$p/bench/baseline/thv-sandbox")
  CARGO_TARGET_DIR=$p/bench/target timeout 15m python3 "$p/bench/limits_start.py" --no-build \
    --runs "$(cat "$p/bench/runs")" "${baseline[@]}" </dev/null 2>&1 | tee "$p/results/bench.log"
fi
[ -z "$broken" ] || echo "THV-VM: binaries that failed without a failing test:$broken" | tee "$p/results/broken"
echo "$passed passed, $failed failed" | tee "$p/results/summary"
