#!/usr/bin/env bash
# Proves a thv-sandbox binary has libseccomp linked in, not as a run-time dependency:
#   - its dynamic section (readelf -d) needs no libseccomp.so (any architecture: readelf reads foreign ELF files);
#   - when it has a symbol table, seccomp_init is defined in it (not an undefined import);
#   - on this machine's architecture: the dynamic loader resolves no libseccomp (ldd), and it runs (--version)
#     with a broken libseccomp.so.2 first on the library path.
# Usage: tests/install/static-link.sh BINARY [EXPECTED_MACHINE]   (EXPECTED_MACHINE as readelf -h says it:
# "Advanced Micro Devices X86-64", "AArch64")
# It fails on a program that needs libseccomp.so.2 (e.g. Debian 12's /usr/bin/ctags-universal, or thv-sandbox built
# with LIBSECCOMP_LINK_TYPE=dylib).
set -euo pipefail
bin=${1:?usage: static-link.sh BINARY [EXPECTED_MACHINE]}
machine=${2:-}
fail() { echo "FAIL: $*" >&2; exit 1; }
[ -f "$bin" ] || fail "no such file: $bin"

needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
[ -n "$needed" ] || fail "$bin has no NEEDED entries: not a dynamically linked ELF executable?"
echo "$bin needs: $(echo $needed)"
if grep -q '^libseccomp' <<<"$needed"; then fail "$bin needs $(grep '^libseccomp' <<<"$needed") at run time"; fi

if [ -n "$machine" ]; then
  m=$(readelf -h "$bin" | sed -n 's/^ *Machine: *//p')
  [ "$m" = "$machine" ] || fail "$bin is for $m, not $machine"
fi

sections=$(readelf -S "$bin")
if grep -q ' \.symtab ' <<<"$sections"; then
  sym=$(readelf -Ws "$bin" | awk '$8 == "seccomp_init" && !s { s = $7 } END { print s }')
  [ -n "$sym" ] || fail "$bin has a symbol table without seccomp_init: is libseccomp linked at all?"
  [ "$sym" != UND ] || fail "seccomp_init is undefined in $bin"
  echo "seccomp_init is defined in $bin (section $sym)"
fi

host_machine=$(readelf -h /bin/sh | sed -n 's/^ *Machine: *//p')
if [ "$(readelf -h "$bin" | sed -n 's/^ *Machine: *//p')" = "$host_machine" ]; then
  resolved=$(ldd "$bin")
  if grep -q libseccomp <<<"$resolved"; then fail "ldd resolves libseccomp for $bin: $(grep libseccomp <<<"$resolved")"; fi
  # A directory, searched first, whose libseccomp.so.2 is not a library: if the loader tried to load one, the run
  # would fail.
  trap_dir=$(mktemp -d); trap 'rm -rf "$trap_dir"' EXIT
  echo "not an ELF file" > "$trap_dir/libseccomp.so.2"
  LD_LIBRARY_PATH=$trap_dir "$bin" --version >/dev/null || fail "$bin does not run without libseccomp.so.2"
  echo "$bin runs with no libseccomp.so.2 to load"
fi
echo "ok: $bin links libseccomp statically"
