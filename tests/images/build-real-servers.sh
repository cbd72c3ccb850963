#!/usr/bin/env bash
# Builds the images of tests/tests/real_servers.rs: real MCP servers from PyPI and npm on a real Debian root.
#
#   tests/images/build-real-servers.sh [OUT]      (as root; OUT defaults to $THV_E2E_REAL_IMAGES, then
#                                                  /var/cache/thv-e2e-real)
#
# Writes one OCI layout, OUT/layout, with two tags that share their first layer:
#   time        Debian 12 minbase + python3 + nodejs (debootstrap)  |  /app/time: mcp-server-time (pip)
#   everything  the same Debian layer                               |  /app/everything: server-everything (npm)
# and OUT/recipe, the hash of this recipe. A rerun whose recipe hash matches does nothing, so CI machines and
# developers build once. Needs: debootstrap, python3 with pip (the host's Python must be the image's 3.11:
# Debian 12's), npm, cargo; and the Debian mirror, PyPI and npm reachable.
set -euo pipefail
cd "$(dirname "$0")/../.."

out=${1:-${THV_E2E_REAL_IMAGES:-/var/cache/thv-e2e-real}}
mirror=${THV_E2E_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
# Pinned top-level packages (their dependencies are resolved by pip and npm at build time).
py_pkg=mcp-server-time==2026.10.19
npm_pkg=@modelcontextprotocol/server-everything@2026.8.31

recipe=$( { cat "$0" tests/src/bin/oci-from-dirs.rs; echo "$mirror $suite"; } | sha256sum | cut -d' ' -f1)
if [ -f "$out/recipe" ] && [ "$(cat "$out/recipe")" = "$recipe" ] && [ -f "$out/layout/index.json" ]; then
  echo "real-server images in $out are up to date (recipe $recipe)"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "error: run as root (debootstrap needs it)" >&2; exit 1; }
for tool in debootstrap npm cargo; do
  command -v "$tool" >/dev/null \
    || { echo "error: $tool not found (apt-get install debootstrap npm python3-pip)" >&2; exit 1; }
done
python=/usr/bin/python3
"$python" -m pip --version >/dev/null || { echo "error: $python has no pip (apt-get install python3-pip)" >&2; exit 1; }

start=$(date +%s)
cargo build --locked --quiet -p thv-sandbox-e2e --bin oci-from-dirs
target_dir=$(cargo metadata --format-version 1 --no-deps \
  | "$python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
oci_from_dirs="$target_dir/debug/oci-from-dirs"

work=$(mktemp -d /var/tmp/thv-e2e-real.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "== debootstrap $suite (minbase + python3 + nodejs) from $mirror"
debootstrap --variant=minbase --include=python3,nodejs "$suite" "$work/root" "$mirror" \
  >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
# What a container root does not need: apt's caches and lists, documentation, translations, and /dev (the
# runtime provides it; debootstrap made device nodes there).
rm -rf "$work/root"/var/cache/apt/* "$work/root"/var/lib/apt/lists/* "$work/root"/usr/share/doc/* \
  "$work/root"/usr/share/man/* "$work/root"/usr/share/info/* "$work/root"/usr/share/locale/* \
  "$work/root"/var/log/* "$work/root"/dev/*
image_python=$(chroot "$work/root" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
host_python=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$image_python" = "$host_python" ] || {
  echo "error: host Python $host_python, image Python $image_python: pip would pick the wrong wheels" >&2; exit 1; }

echo "== pip install $py_pkg"
"$python" -m pip install --quiet --no-cache-dir --disable-pip-version-check --root-user-action=ignore \
  --only-binary=:all: --target "$work/time/app/time" "$py_pkg"
# pip wrote launchers whose #! names the host's Python; the image runs the module instead.
rm -rf "$work/time/app/time/bin"

echo "== npm install $npm_pkg"
mkdir -p "$work/everything/app/everything"
npm install --silent --no-audit --no-fund --omit=dev --cache "$work/npm-cache" \
  --prefix "$work/everything/app/everything" "$npm_pkg"
chown -R 0:0 "$work/time" "$work/everything"
chmod -R a+rX,go-w "$work/time" "$work/everything"

echo "== OCI layout"
rm -rf "$out/layout" "$out/recipe"
mkdir -p "$out"
echo -n "time: "
"$oci_from_dirs" "$out/layout" time --layer "$work/root" --layer "$work/time" \
  --env PATH=/usr/local/bin:/usr/bin:/bin --env PYTHONPATH=/app/time --env PYTHONDONTWRITEBYTECODE=1 \
  --entrypoint python3 --entrypoint -m --entrypoint mcp_server_time --user 65534:65534 --workdir /app/time \
  --label org.opencontainers.image.title="$py_pkg"
echo -n "everything: "
"$oci_from_dirs" "$out/layout" everything --layer "$work/root" --layer "$work/everything" \
  --env PATH=/usr/local/bin:/usr/bin:/bin --env NODE_ENV=production \
  --entrypoint node --entrypoint /app/everything/node_modules/@modelcontextprotocol/server-everything/dist/index.js \
  --cmd stdio --user 65534:65534 --workdir /app/everything \
  --label org.opencontainers.image.title="$npm_pkg"
echo "$recipe" >"$out/recipe"
chmod -R a+rX "$out"
d=$(realpath "$out"); while [ "$d" != / ]; do chmod a+x "$d"; d=$(dirname "$d"); done
echo "real-server images written to $out/layout in $(( $(date +%s) - start )) s ($(du -sh "$out/layout" | cut -f1))"
