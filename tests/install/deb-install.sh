#!/usr/bin/env bash
# Installs a thv-sandbox .deb on this machine (as root) and checks what the package promises, or removes it:
#   tests/install/deb-install.sh install DEB
#     - a previous thv-sandbox package is purged first (a fresh install is what is tested);
#     - /usr/bin/thv-sandbox runs and names its commit, links libseccomp statically (static-link.sh);
#     - the manual page is found by man-db (when installed) and the bash completion loads in bash;
#     - the AppArmor profile: where the kernel restricts unprivileged user namespaces it is installed in
#       /etc/apparmor.d/ and loaded (when AppArmor is on); elsewhere (Debian 12) /etc/apparmor.d/thv-sandbox does
#       not exist — Debian 12's parser would reject it at every boot;
#     - `thv-sandbox doctor` passes as root and as each user named in $THV_INSTALL_USERS (unprivileged).
#   tests/install/deb-install.sh remove
#     - dpkg -r leaves neither the binary nor an AppArmor profile behind.
# A sandboxed run through the installed binary with a real MCP client is .ci/run's business (the e2e tests with
# THV_SANDBOX_BIN=/usr/bin/thv-sandbox).
set -euo pipefail
cd "$(dirname "$0")/../.."
fail() { echo "FAIL: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "run as root (dpkg)"
knob=/proc/sys/kernel/apparmor_restrict_unprivileged_userns
case ${1:-} in
install)
  deb=$(realpath "${2:?usage: deb-install.sh install DEB}")
  if dpkg -s thv-sandbox >/dev/null 2>&1; then dpkg --purge thv-sandbox >/dev/null; fi
  dpkg -i "$deb"
  [ "$(command -v thv-sandbox)" = /usr/bin/thv-sandbox ] || fail "thv-sandbox is not /usr/bin/thv-sandbox on PATH"
  thv-sandbox --version | grep -Eq '^thv-sandbox [0-9.]+ \(commit [0-9a-f]{12}\)$' || fail "--version: $(thv-sandbox --version)"
  tests/install/static-link.sh /usr/bin/thv-sandbox
  if command -v man >/dev/null; then
    [ "$(man -w thv-sandbox)" = /usr/share/man/man1/thv-sandbox.1.gz ] || fail "man -w thv-sandbox: $(man -w thv-sandbox)"
    [ "$(man -w thv-sandbox-run)" = /usr/share/man/man1/thv-sandbox-run.1.gz ] || fail "no thv-sandbox-run(1)"
  fi
  bash --norc -c 'source /usr/share/bash-completion/completions/thv-sandbox && complete -p thv-sandbox' >/dev/null \
    || fail "the bash completion does not load"
  if [ -e "$knob" ]; then
    [ -f /etc/apparmor.d/thv-sandbox ] || fail "the kernel restricts user namespaces but no /etc/apparmor.d/thv-sandbox"
    if [ "$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)" = Y ]; then
      grep -q '^thv-sandbox ' /sys/kernel/security/apparmor/profiles || fail "the profile is not loaded"
    fi
  else
    [ ! -e /etc/apparmor.d/thv-sandbox ] || fail "/etc/apparmor.d/thv-sandbox installed on a kernel without $knob"
  fi
  report=$(mktemp); chmod 644 "$report"
  thv-sandbox doctor 2> "$report" || { cat "$report" >&2; fail "doctor as root"; }
  for u in ${THV_INSTALL_USERS:-}; do
    runuser -u "$u" -- env -i PATH=/usr/bin:/bin HOME="$(getent passwd "$u" | cut -d: -f6)" thv-sandbox doctor \
      2> "$report" || { cat "$report" >&2; fail "doctor as $u"; }
    echo "doctor passes as $u"
  done
  rm -f "$report"
  echo "ok: $deb installed"
  ;;
remove)
  dpkg -r thv-sandbox >/dev/null
  [ ! -e /usr/bin/thv-sandbox ] || fail "/usr/bin/thv-sandbox left after dpkg -r"
  [ ! -e /etc/apparmor.d/thv-sandbox ] || fail "/etc/apparmor.d/thv-sandbox left after dpkg -r"
  if [ -r /sys/kernel/security/apparmor/profiles ] && grep -q '^thv-sandbox ' /sys/kernel/security/apparmor/profiles; then
    fail "the AppArmor profile is still loaded after dpkg -r"
  fi
  echo "ok: removed"
  ;;
*) echo "usage: deb-install.sh install DEB | remove" >&2; exit 2 ;;
esac
