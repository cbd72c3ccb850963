#!/usr/bin/env bash
# Builds the base images of tests/tests/packages.rs (issue 16): what `npx://` and `uvx://` servers install onto.
#
#   tests/images/build-package-bases.sh [OUT]    (as root; OUT defaults to $THV_E2E_PACKAGE_BASES, then
#                                                 /var/cache/thv-e2e-packages)
#
# Writes one OCI layout, OUT/layout, with two tags sharing a Debian 12 minbase layer (debootstrap: python3,
# nodejs, ca-certificates) and adding the installer as a second layer:
#   node     + npm (npm's own tarball from the npm registry, in /usr/local as the official Node images have it)
#   python   + pip (pip's own wheel from PyPI; no uv)
# and OUT/recipe, the hash of this recipe: a rerun whose hash matches does nothing. Needs debootstrap, cargo and
# the Debian mirror. The same recipe as tests/images/build-real-servers.sh, with the installers in the root.
set -euo pipefail
cd "$(dirname "$0")/../.."

out=${1:-${THV_E2E_PACKAGE_BASES:-/var/cache/thv-e2e-packages}}
mirror=${THV_E2E_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
npm_version=10.8.2
pip_version=24.2

recipe=$( { cat "$0" tests/src/bin/oci-from-dirs.rs; echo "$mirror $suite"; } | sha256sum | cut -d' ' -f1)
if [ -f "$out/recipe" ] && [ "$(cat "$out/recipe")" = "$recipe" ] && [ -f "$out/layout/index.json" ]; then
  echo "package base images in $out are up to date (recipe $recipe)"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "error: run as root (debootstrap needs it)" >&2; exit 1; }
for tool in debootstrap cargo npm; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found" >&2; exit 1; }
done

start=$(date +%s)
cargo build --locked --quiet -p thv-sandbox-e2e --bin oci-from-dirs
target_dir=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
oci_from_dirs="$target_dir/debug/oci-from-dirs"

work=$(mktemp -d /var/tmp/thv-e2e-packages.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "== debootstrap $suite (minbase + python3 + nodejs + ca-certificates) from $mirror"
debootstrap --variant=minbase --include=python3,nodejs,ca-certificates "$suite" "$work/root" "$mirror" \
  >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
rm -rf "$work/root"/var/cache/apt/* "$work/root"/var/lib/apt/lists/* "$work/root"/usr/share/doc/* \
  "$work/root"/usr/share/man/* "$work/root"/usr/share/info/* "$work/root"/usr/share/locale/* \
  "$work/root"/var/log/* "$work/root"/dev/*
# Debian marks its Python as externally managed (PEP 668); the installer writes to its own prefix only.
rm -f "$work/root"/usr/lib/python3*/EXTERNALLY-MANAGED

# The installers, as the official images ship them (Debian's npm package does not configure under
# debootstrap): npm's own tarball (it bundles its dependencies) and pip's own wheel.
echo "== npm $npm_version, pip $pip_version"
mkdir -p "$work/npm/usr/local/lib/node_modules" "$work/npm/usr/local/bin" "$work/pip/usr/lib/python3/dist-packages"
(cd "$work" && npm pack --silent "npm@$npm_version" >/dev/null)
tar -xzf "$work/npm-$npm_version.tgz" -C "$work/npm/usr/local/lib/node_modules"
mv "$work/npm/usr/local/lib/node_modules/package" "$work/npm/usr/local/lib/node_modules/npm"
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$work/npm/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$work/npm/usr/local/bin/npx"
python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$work" "pip==$pip_version"
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
  "$work/pip-$pip_version-py3-none-any.whl" "$work/pip/usr/lib/python3/dist-packages"
chown -R 0:0 "$work/npm" "$work/pip"
chmod -R a+rX,go-w "$work/npm" "$work/pip"

echo "== OCI layout"
rm -rf "$out/layout" "$out/recipe"
mkdir -p "$out"
echo -n "node: "
"$oci_from_dirs" "$out/layout" node --layer "$work/root" --layer "$work/npm" \
  --env PATH=/usr/local/bin:/usr/bin:/bin --entrypoint node --user 0:0 --workdir / \
  --label org.opencontainers.image.title="debian $suite + nodejs + npm"
echo -n "python: "
"$oci_from_dirs" "$out/layout" python --layer "$work/root" --layer "$work/pip" \
  --env PATH=/usr/local/bin:/usr/bin:/bin --entrypoint python3 --user 0:0 --workdir / \
  --label org.opencontainers.image.title="debian $suite + python3 + pip"
echo "$recipe" >"$out/recipe"
chmod -R a+rX "$out"
d=$(realpath "$out"); while [ "$d" != / ]; do chmod a+x "$d"; d=$(dirname "$d"); done
echo "package base images written to $out/layout in $(( $(date +%s) - start )) s ($(du -sh "$out/layout" | cut -f1))"
