#!/usr/bin/env bash
# The GitHub Action's install step (action.yml): installs thv-sandbox's .deb for this runner's architecture.
#   install.sh --deb FILE             a .deb already here (built in the workflow, or tests/install/action-scripts.sh)
#   install.sh --release REPO TAG     the release asset of REPO at TAG, checked with `gh attestation verify`
#                                     against REPO's release workflow before it is installed
# $SUDO (default: sudo when not root) runs dpkg. Prints the installed version.
set -euo pipefail
sudo=${SUDO-$([ "$(id -u)" = 0 ] || echo sudo)}
arch=$(dpkg --print-architecture)
case ${1:-} in
--deb) deb=$(realpath "${2:?--deb FILE}") ;;
--release)
  repo=${2:?--release REPO TAG} tag=${3:?--release REPO TAG}
  dir=$(mktemp -d)
  gh release download "$tag" --repo "$repo" --pattern "thv-sandbox_*_${arch}.deb" --dir "$dir"
  deb=$(ls "$dir"/thv-sandbox_*_"$arch".deb)
  gh attestation verify "$deb" --repo "$repo" --signer-workflow "$repo/.github/workflows/release.yml"
  ;;
*) echo "usage: install.sh --deb FILE | --release REPO TAG" >&2; exit 2 ;;
esac
[ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] || { echo "$deb is not for $arch" >&2; exit 1; }
$sudo dpkg -i "$deb" >/dev/null
thv-sandbox --version
