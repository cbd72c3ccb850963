#!/usr/bin/env bash
# Set-up for the tests, the one place for their system prerequisites: run once, as root, on a fresh Debian 12 /
# Ubuntu ≥ 22.04 machine, then `cargo test --workspace --locked` (README.md, "Tests"). .ci/run calls it first.
#
#   sudo scripts/setup.sh
#
# Installs every Debian package the tests, the real-server image build and the install checks of .ci/run use, adds
# the /etc/hosts name of the TLS registry test, and creates the two unprivileged users (and their supplementary
# group) that CI runs the end-to-end binaries as. Safe to run again: each step checks what is already there.
# A new system package for a test goes into PACKAGES below (with a comment naming the test), not into .ci/run.
# apt waits for the dpkg lock (unattended-upgrades on a fresh machine, another apt) instead of failing.
# Rust itself (≥ 1.85, through rustup) is not installed here: the script checks for it and says what to run.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
[ "$(id -u)" = 0 ] || { echo "error: run as root: sudo $0" >&2; exit 1; }

PACKAGES=(
  build-essential git pkg-config ca-certificates  # building: a C compiler and linker for the crates' build scripts
  libseccomp-dev        # libseccomp, linked statically (.cargo/config.toml)
  uidmap                # newuidmap/newgidmap: the subordinate-id mode
  busybox-static        # a static binary to unpack and run in test images (runtime unit tests, e2e images)
  docker-registry       # the real OCI registry the e2e tests start on loopback (tests/src/registry.rs)
  apache2-utils         # htpasswd: the registry's basic-auth tests
  openssl               # the tests' CAs and certificates (TLS registry, Sigstore instance)
  python3 python3-pip   # an interpreter under the profiles; pip: the real-server images (tests/images/)
  debootstrap           # the real-server images' Debian root (tests/images/build-real-servers.sh)
  chromium              # headless Chromium under the browser seccomp variant (sandbox-profiles/tests/chromium.rs)
  python3-yaml apparmor dpkg-dev  # .ci/run's install checks: action.yml/release.yml parsing, apparmor_parser, dpkg
  qemu-system-x86 linux-image-amd64 e2fsprogs binutils cpio kmod  # the cgroup v2 + systemd test VM (tests/vm/)
)

echo "== apt-get update"
apt-get update -o DPkg::Lock::Timeout=600
echo "== apt-get install ${PACKAGES[*]}"
apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=600 "${PACKAGES[@]}"
# Node.js and npm (an interpreter under the profiles; the real-server images): the machine's own when it has one
# (e.g. Node.js from NodeSource, whose nodejs conflicts with Debian's npm package), else Debian's.
command -v npm >/dev/null || apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=600 nodejs npm

# The TLS registry test needs a name other than localhost for the loopback (loopback addresses always get plain
# HTTP): a reserved test name, resolved through /etc/hosts.
grep -q 'thv-sandbox-tls\.test' /etc/hosts || echo "127.0.0.1 thv-sandbox-tls.test" >> /etc/hosts

# The CI users (.ci/run runs the end-to-end binaries as them; so does a developer, as root, with the same
# command lines): thvsbx-sub with a subordinate-id range of its own, thvsbx-nosub without one. Both are in a
# supplementary group, as real users are (sudo, docker…): single mode cannot drop it, and the sandbox must still run
# (tests/tests/hardening.rs checks which groups the server holds).
getent group thvsbx-extra >/dev/null || groupadd thvsbx-extra
make_user() { # name with_subids
  id -u "$1" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$1"
  usermod -a -G thvsbx-extra "$1"
  touch /etc/subuid /etc/subgid
  local want="" start
  if [ "$2" = yes ]; then
    # A range no other user of this machine has.
    start=$(( 300000 + 65536 * $(id -u "$1") % 1000000 ))
    want="$1:$start:65536"
  fi
  for f in /etc/subuid /etc/subgid; do
    [ "$(grep "^$1:" "$f" || true)" = "$want" ] && continue  # already right: not rewritten under running tests
    sed -i "/^$1:/d" "$f"
    [ -z "$want" ] || echo "$want" >> "$f"
  done
}
make_user thvsbx-sub yes
make_user thvsbx-nosub no

# Rust: checked, not installed (rustup is per user; Debian's and Ubuntu's compilers are older than 1.85). The user
# who will run the tests is the one who ran sudo.
who=${SUDO_USER:-root}
if [ "$who" = root ]; then
  rustc_version=$(rustc --version 2>/dev/null | awk '{print $2}') || true
else
  home=$(getent passwd "$who" | cut -d: -f6)
  rustc_version=$(runuser -u "$who" -- env PATH="$home/.cargo/bin:/usr/local/bin:/usr/bin:/bin" rustc --version \
    2>/dev/null | awk '{print $2}') || true
fi
if [ -z "$rustc_version" ] || ! printf '1.85.0\n%s\n' "${rustc_version%%-*}" | sort -V -C; then
  echo "set-up done, but $who has no Rust ≥ 1.85 (found: ${rustc_version:-none}). Install it as $who with" >&2
  echo "  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy" >&2
  exit 1
fi
echo "set-up done (Rust $rustc_version for $who): now run cargo test --workspace --locked"
