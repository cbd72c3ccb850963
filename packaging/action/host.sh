#!/usr/bin/env bash
# The GitHub Action's host step (action.yml): `thv-sandbox doctor` as the runner's user. When doctor's
# `apparmor userns` check fails — Ubuntu restricts unprivileged user namespaces (hosted ubuntu-24.04 runners do)
# and no AppArmor profile applies to the binary (the package's was not loaded) — the restriction is lifted for the
# job with sysctl and doctor runs again. Any other failure fails the step with doctor's report and relaxes nothing.
# Prints `relaxed=true|false` for $GITHUB_OUTPUT. $SUDO (default: sudo when not root) runs sysctl.
set -euo pipefail
sudo=${SUDO-$([ "$(id -u)" = 0 ] || echo sudo)}
report=$(mktemp); trap 'rm -f "$report"' EXIT
if thv-sandbox doctor 2> "$report"; then
  cat "$report" >&2
  echo "relaxed=false"
  exit 0
fi
cat "$report" >&2
grep -q '^\[FAIL\] apparmor userns:' "$report" || exit 1
echo "thv-sandbox: lifting kernel.apparmor_restrict_unprivileged_userns for this job" >&2
$sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 >&2
thv-sandbox doctor 2> "$report" || { cat "$report" >&2; exit 1; }
echo "relaxed=true"
