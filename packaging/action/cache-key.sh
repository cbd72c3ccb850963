#!/usr/bin/env bash
# The GitHub Action's cache key (action.yml): from the pinned references `thv-sandbox pull` printed (stdin, one per
# line, `…@sha256:HEX`), a key that changes exactly when an image's digest changes: the sorted, de-duplicated
# references hashed, under a prefix ($1). Order and repeats do not matter; a line that is not pinned is an error
# (the key would not follow the image).
set -euo pipefail
prefix=${1:?usage: cache-key.sh PREFIX < pinned-references}
refs=$(grep -v '^[[:space:]]*$' | sort -u)
[ -n "$refs" ] || { echo "no pinned references on stdin" >&2; exit 1; }
while IFS= read -r r; do
  [[ $r =~ @sha256:[0-9a-f]{64}$ ]] || { echo "not a pinned reference (…@sha256:HEX): $r" >&2; exit 1; }
done <<<"$refs"
echo "$prefix-$(printf '%s\n' "$refs" | sha256sum | cut -c1-32)"
