#!/usr/bin/env bash
# Checks a thv-sandbox .deb without installing it (dpkg-deb only):
#   - control fields: package name, architecture, Depends without libseccomp (it is linked in), Recommends uidmap;
#   - the files: the binary (0755), a manual page per command (gzipped roff), bash/zsh/fish completions where each
#     shell looks, the AppArmor profile under /usr/share/thv-sandbox/apparmor/ and nothing under /etc/apparmor.d/
#     (the postinst installs it only where the kernel restricts user namespaces);
#   - the maintainer scripts are the repository's (packaging/debian/) and parse as sh;
#   - the packaged profile is packaging/apparmor/thv-sandbox; the binary passes tests/install/static-link.sh;
#     the completions and pages are what the binary generates (when it runs on this machine).
# Usage: tests/install/deb-contents.sh DEB [amd64|arm64]   (default: this machine's architecture)
set -euo pipefail
deb=$(realpath "${1:?usage: deb-contents.sh DEB [ARCH]}")
arch=${2:-$(dpkg --print-architecture)}
cd "$(dirname "$0")/../.."
fail() { echo "FAIL: $*" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = thv-sandbox ] || fail "Package: $(field Package)"
[ "$(field Architecture)" = "$arch" ] || fail "Architecture: $(field Architecture), expected $arch"
depends=$(field Depends)
grep -q 'libc6' <<<"$depends" || fail "Depends lacks libc6: $depends"
if grep -q seccomp <<<"$depends"; then fail "Depends names libseccomp: $depends"; fi
grep -qw uidmap <<<"$(field Recommends)" || fail "Recommends lacks uidmap: $(field Recommends)"

listing=$(dpkg-deb -c "$deb")
has() { # MODE PATH
  grep -qE "^$1 .* \./$2\$" <<<"$listing" || fail "no $2 (mode $1) in $deb"
}
has '-rwxr-xr-x' usr/bin/thv-sandbox
for page in thv-sandbox thv-sandbox-run thv-sandbox-doctor thv-sandbox-verify thv-sandbox-registry-info \
  thv-sandbox-completions; do
  has '-rw-r--r--' "usr/share/man/man1/$page.1.gz"
done
has '-rw-r--r--' usr/share/bash-completion/completions/thv-sandbox
has '-rw-r--r--' usr/share/zsh/vendor-completions/_thv-sandbox
has '-rw-r--r--' usr/share/fish/vendor_completions.d/thv-sandbox.fish
has '-rw-r--r--' usr/share/thv-sandbox/apparmor/thv-sandbox
if grep -q '\./etc/' <<<"$listing"; then fail "the package ships files under /etc: $(grep '\./etc/' <<<"$listing")"; fi
if grep -q '__runner' <<<"$listing"; then fail "a manual page for the hidden runner"; fi

dpkg-deb -e "$deb" "$work/control"
for s in postinst prerm postrm; do
  [ -x "$work/control/$s" ] || fail "no executable $s"
  cmp -s "$work/control/$s" "packaging/debian/$s" || fail "$s differs from packaging/debian/$s"
  sh -n "$work/control/$s" || fail "$s does not parse"
done

dpkg-deb -x "$deb" "$work/root"
cmp -s "$work/root/usr/share/thv-sandbox/apparmor/thv-sandbox" packaging/apparmor/thv-sandbox \
  || fail "the packaged AppArmor profile differs from packaging/apparmor/thv-sandbox"
bin=$work/root/usr/bin/thv-sandbox
machine=$([ "$arch" = arm64 ] && echo AArch64 || echo "Advanced Micro Devices X86-64")
tests/install/static-link.sh "$bin" "$machine"
for page in "$work"/root/usr/share/man/man1/*.gz; do
  gzip -dc "$page" | grep -q '^\.TH ' || fail "$page is not a manual page"
done
if [ "$arch" = "$(dpkg --print-architecture)" ]; then
  cmp -s <("$bin" completions bash) "$work/root/usr/share/bash-completion/completions/thv-sandbox" || fail "bash completion differs"
  cmp -s <("$bin" completions zsh) "$work/root/usr/share/zsh/vendor-completions/_thv-sandbox" || fail "zsh completion differs"
  cmp -s <("$bin" completions fish) "$work/root/usr/share/fish/vendor_completions.d/thv-sandbox.fish" || fail "fish completion differs"
  cmp -s <("$bin" man) <(gzip -dc "$work/root/usr/share/man/man1/thv-sandbox.1.gz") || fail "thv-sandbox.1 differs"
  "$bin" --version | grep -Eq '^thv-sandbox [0-9.]+ \(commit [0-9a-f]{12}\)$' || fail "--version: $("$bin" --version)"
fi
echo "ok: $deb ($(field Version), $arch): $(grep -c . <<<"$listing") entries, depends: $depends"
