#!/usr/bin/env bash
# Validates packaging/apparmor/thv-sandbox with a real AppArmor parser of the generation that enforces Ubuntu's
# userns restriction (>= 4.0: Ubuntu 24.04 ships 4.0, Debian 13 ships 4.1): it must compile, attach to
# /usr/bin/thv-sandbox, allow `userns` and confine nothing else. Negative controls show the parser does check:
# a misspelt rule fails, and Debian 12's own parser (3.0, which has no `userns` rule) rejects the profile — the
# reason packaging/debian/postinst installs it only where the kernel has the restriction.
#
# Parser: `apparmor_parser` on PATH when it knows `userns`; else Debian 13's apparmor package, fetched once with
# apt into $THV_INSTALL_TOOLS (default /var/cache/thv-install-tools as root, else ~/.cache/thv-install-tools)
# and run with its own loader and libraries (nothing is installed on the system). About 7 s the first time.
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=packaging/apparmor/thv-sandbox
fail() { echo "FAIL: $*" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

# knows_userns PARSER...: the parser compiles a minimal profile with a `userns` rule.
knows_userns() {
  printf 'profile t /t {\n  userns,\n}\n' > "$work/probe"
  "$@" -Q -K -S "$work/probe" >/dev/null 2>&1
}

parser=()
if command -v apparmor_parser >/dev/null && knows_userns apparmor_parser; then
  parser=(apparmor_parser)
else
  tools=${THV_INSTALL_TOOLS:-$([ "$(id -u)" = 0 ] && echo /var/cache/thv-install-tools || echo "$HOME/.cache/thv-install-tools")}
  root=$tools/apparmor-trixie/root
  arch=$(dpkg --print-architecture)
  multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo "$(uname -m)-linux-gnu")
  if [ ! -x "$root/usr/sbin/apparmor_parser" ]; then
    echo "fetching Debian 13's apparmor (parser 4.x) into $tools/apparmor-trixie"
    d=$tools/apparmor-trixie
    rm -rf "$d"; mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/debs" "$root"
    echo 'deb http://deb.debian.org/debian trixie main' > "$d/sources.list"
    apt_opts=(-q -o Dir::Etc::SourceList="$d/sources.list" -o Dir::Etc::SourceParts=/nonexistent
      -o Dir::State::Lists="$d/lists" -o Dir::Cache="$d/cache" -o APT::Architecture="$arch"
      -o APT::Sandbox::User=root)
    apt-get "${apt_opts[@]}" update >/dev/null
    (cd "$d/debs" && apt-get "${apt_opts[@]}" download apparmor libc6 >/dev/null)
    for deb in "$d"/debs/*.deb; do dpkg-deb -x "$deb" "$root"; done
    rm -rf "$d/lists" "$d/cache" "$d/debs"
  fi
  loader=$(ls "$root/usr/lib/$multiarch"/ld-linux*.so.* | head -n 1)
  parser=("$loader" --library-path "$root/usr/lib/$multiarch" "$root/usr/sbin/apparmor_parser"
    --config-file "$root/etc/apparmor/parser.conf" --base "$root/etc/apparmor.d")
fi
echo "parser: $("${parser[@]}" --version | head -n 1)"
knows_userns "${parser[@]}" || fail "the parser does not know the userns rule"

# 1. The profile compiles (to a binary policy: -S), without touching the kernel (-Q -K).
"${parser[@]}" -Q -K -S "$profile" > "$work/policy.bin" 2> "$work/err" || { cat "$work/err" >&2; fail "$profile does not compile"; }
[ -s "$work/policy.bin" ] || fail "no compiled policy"
# 2. What it is: one profile, named thv-sandbox, attached to /usr/bin/thv-sandbox, unconfined but for userns.
[ "$("${parser[@]}" -Q -K -N "$profile" 2>/dev/null)" = thv-sandbox ] || fail "the profile is not named thv-sandbox"
rules=$("${parser[@]}" -Q -K -p "$profile" 2>/dev/null | grep -v '^\s*#' | grep -v '^\s*$' | sed -n '/^profile thv-sandbox/,/^}/p')
grep -qx 'profile thv-sandbox /usr/bin/thv-sandbox flags=(unconfined) {' <<<"$rules" || fail "attachment or flags changed: $rules"
grep -qx '  userns,' <<<"$rules" || fail "no userns rule: $rules"
# 3. Negative control: a misspelt rule is rejected by the same parser.
sed 's/^  userns,$/  usernss,/' "$profile" > "$work/bad"
if "${parser[@]}" -Q -K -S "$work/bad" >/dev/null 2>&1; then fail "the parser accepted a misspelt rule"; fi
# 4. Debian 12's parser (3.0) rejects it: postinst must not install it there (checked by tests/install/deb-install.sh).
if command -v apparmor_parser >/dev/null && [ "${parser[0]}" != apparmor_parser ]; then
  if apparmor_parser -Q -K -S "$profile" >/dev/null 2>&1; then
    fail "$(apparmor_parser --version | head -n 1) accepts the profile: revisit packaging/debian/postinst"
  fi
  echo "as expected, $(apparmor_parser --version | head -n 1) rejects the userns rule"
fi
echo "ok: $profile compiles with $("${parser[@]}" --version | head -n 1), allows userns for /usr/bin/thv-sandbox"
