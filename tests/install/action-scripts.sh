#!/usr/bin/env bash
# Tests the scripts the GitHub Action (action.yml) and the release workflow call, which cannot run here themselves:
#   - action.yml and .github/workflows/release.yml parse as YAML, and every repository script they name exists and
#     is executable;
#   - packaging/action/cache-key.sh: the key follows the images' digests (a changed digest changes it), not their
#     order or repeats, and an unpinned reference is refused;
#   - packaging/action/install.sh --deb DEB installs the package (as root, $SUDO empty) and prints the version;
#   - packaging/action/host.sh: where doctor passes, nothing is relaxed (a $SUDO that fails proves sysctl was not
#     called) and `relaxed=false` goes to the step output; where doctor fails for another reason than the AppArmor
#     restriction (an unusable cache directory), the step fails with doctor's report and relaxes nothing. The
#     relaxing branch itself needs an Ubuntu kernel with the restriction: not testable here.
# Usage: tests/install/action-scripts.sh DEB   (as root; leaves the package installed)
set -euo pipefail
deb=$(realpath "${1:?usage: action-scripts.sh DEB}")
cd "$(dirname "$0")/../.."
fail() { echo "FAIL: $*" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

# 1. The YAML parses; the scripts it names exist.
python3 - <<'PY' || fail "YAML"
import yaml, re, os, sys
for f in ["action.yml", ".github/workflows/release.yml"]:
    text = open(f).read()
    yaml.safe_load(text)
    for path in set(re.findall(r"((?:packaging|tests/install)/[\w./-]+\.sh)", text)):
        if not os.access(path, os.X_OK):
            sys.exit(f"{f} names {path}, which is not an executable file")
PY

# 2. The cache key.
a=registry.example/a@sha256:$(printf a | sha256sum | cut -c1-64)
b=registry.example/b@sha256:$(printf b | sha256sum | cut -c1-64)
b2=registry.example/b@sha256:$(printf b2 | sha256sum | cut -c1-64)
k1=$(printf '%s\n' "$a" "$b" | packaging/action/cache-key.sh pfx)
k2=$(printf '%s\n\n%s\n%s\n' "$b" "$a" "$b" | packaging/action/cache-key.sh pfx)
k3=$(printf '%s\n' "$a" "$b2" | packaging/action/cache-key.sh pfx)
[[ $k1 =~ ^pfx-[0-9a-f]{32}$ ]] || fail "key format: $k1"
[ "$k1" = "$k2" ] || fail "order or repeats change the key: $k1 vs $k2"
[ "$k1" != "$k3" ] || fail "a new digest keeps the key"
if printf '%s\n' registry.example/a:latest | packaging/action/cache-key.sh pfx 2>/dev/null; then fail "an unpinned reference was accepted"; fi
if packaging/action/cache-key.sh pfx </dev/null 2>/dev/null; then fail "no references gave a key"; fi

# 3. install.sh --deb.
[ "$(id -u)" = 0 ] || fail "run as root (dpkg)"
out=$(SUDO= packaging/action/install.sh --deb "$deb")
grep -Eq '^thv-sandbox [0-9.]+ \(commit [0-9a-f]{12}\)$' <<<"$out" || fail "install.sh printed: $out"

# 4. host.sh.
out=$(SUDO=false packaging/action/host.sh 2>/dev/null) || fail "host.sh failed on a host doctor passes"
[ "$out" = relaxed=false ] || fail "host.sh output: $out"
touch "$work/cache-file"
if out=$(SUDO=false XDG_CACHE_HOME="$work/cache-file" packaging/action/host.sh 2>"$work/err"); then
  fail "host.sh passed although doctor failed: $out"
fi
[ -z "$out" ] || fail "host.sh claimed: $out"
grep -q 'cache dir' "$work/err" || fail "host.sh did not show doctor's report: $(cat "$work/err")"
if grep -q 'lifting' "$work/err"; then fail "host.sh relaxed the restriction for an unrelated failure"; fi
echo "ok: action scripts"
