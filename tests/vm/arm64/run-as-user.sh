#!/bin/bash
# In the aarch64 VM, as `thv` (uid 1000) in its login session: the installed /usr/bin/thv-sandbox's --version and
# doctor, then a real sandboxed MCP run: make-probe-image writes an arm64 OCI layout holding the cross-built
# sandbox-probe, and mcp-client.py drives `thv-sandbox run oci:LAYOUT:app` (initialize, echo, probe). Writes
# results/ (one file per step, and summary: the ok/FAIL lines).
set -u
p=/mnt/payload
r=$p/results
: "${XDG_RUNTIME_DIR:=/run/user/$(id -u)}"
: "${DBUS_SESSION_BUS_ADDRESS:=unix:path=$XDG_RUNTIME_DIR/bus}"
export XDG_RUNTIME_DIR DBUS_SESSION_BUS_ADDRESS
cd "$HOME"
rc=0
ok() { echo "ok: $*" | tee -a "$r/summary"; }
bad() { echo "FAIL: $*" | tee -a "$r/summary"; rc=1; }
step() { # NAME COMMAND...: output to results/NAME, its time in the summary
  local name=$1 start s
  shift
  start=$(date +%s)
  echo "THV-VM: ---- $name: $*"
  "$@" >"$r/$name" 2>&1
  s=$?
  cat "$r/$name"
  if [ $s = 0 ]; then ok "$name ($(( $(date +%s) - start )) s)"; else bad "$name: exit $s ($(( $(date +%s) - start )) s)"; fi
  return $s
}
echo "THV-VM: as $(id -un) ($(id -u)), $(uname -m), cgroup $(sed -n 's/^0:://p' /proc/self/cgroup)"
step which command -v thv-sandbox
step version thv-sandbox --version
step doctor thv-sandbox doctor
step doctor.json thv-sandbox doctor --json
python3 "$p/show-doctor.py" "$r/doctor.json" || bad "doctor --json is not doctor's JSON"
export SANDBOX_PROBE_BIN=$p/bin/sandbox-probe
step make-probe-image "$p/bin/make-probe-image" "$HOME/probe" app app
# The first run unpacks the image: minutes under emulation. The client's stdout is the exchange; the run's
# stderr (thv-sandbox's diagnostics) goes to its own file.
step mcp python3 "$p/mcp-client.py" 900 sh -c "exec thv-sandbox run oci:$HOME/probe:app 2>$r/run.stderr"
# Again, from the unpacked cache: how long a start takes on this machine.
step mcp-again python3 "$p/mcp-client.py" 300 sh -c "exec thv-sandbox run oci:$HOME/probe:app 2>$r/run-again.stderr"
echo "THV-VM: run.stderr:"; cat "$r/run.stderr" 2>/dev/null
exit $rc
