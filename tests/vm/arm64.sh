#!/usr/bin/env bash
# Runs the aarch64 release on aarch64: cross-builds it with packaging/build-release.sh (binary and .deb), runs it
# under qemu-user, then installs the .deb in an aarch64 Debian 12 VM (qemu-system-aarch64, software emulation:
# TCG) and, as an unprivileged user, runs `thv-sandbox doctor` and a real sandboxed MCP server (the e2e crate's
# sandbox-probe, cross-built, in an arm64 OCI layout) driven by a client that checks the `initialize` answer.
#
# BY HAND ONLY, NOT IN CI: emulating a whole aarch64 machine is slow (tens of minutes from scratch on 2 cores: the
# cross build, debootstrap's second stage under qemu-user, the boot and first run under TCG). A maintainer reruns
# it before a release, or after a change to the build, the packaging or anything architecture-specific.
#
#   tests/vm/arm64.sh [STEP...]        (as root: debootstrap, chroot and binfmt_misc need it)
#
# STEP: build (the cross build), user (the binary under qemu-aarch64-static), image (the VM image; rebuilt only
# when its recipe changed), vm (boot and run); default: all four. Every step says how long it took. Exit status 0
# only when every check passed. Needs (apt): gcc-aarch64-linux-gnu libseccomp-dev:arm64 (after
# `dpkg --add-architecture arm64`), qemu-user-static, qemu-system-arm, debootstrap, e2fsprogs, cpio, kmod; rustup's
# aarch64-unknown-linux-gnu target and cargo-deb; the Debian mirror reachable (image step only).
#
# Files (big, outside the tree): $THV_ARM64_DIR, default /var/cache/thv-arm64: vm/ (root.img, vmlinuz, initrd.img,
# recipe), results/ (the last run's outputs: qemu-user/*.txt, vm/*: doctor, the MCP exchange, the console log).
# Knobs: THV_VM_SMP (2), THV_VM_MEMORY (2048 MiB), THV_VM_BOOT_TIMEOUT (900 s), THV_VM_TIMEOUT (2400 s),
# THV_E2E_DEBIAN_MIRROR.
#
# The image step runs the foreign debootstrap's second stage in a chroot, which executes arm64 binaries through
# binfmt_misc: when the kernel has no `qemu-aarch64` entry, this script mounts binfmt_misc (if needed) and
# registers Debian's entry (/usr/lib/binfmt.d/qemu-aarch64.conf, flag F: the interpreter is opened now, so it works
# inside the chroot), as installing qemu-user-static does on a host where systemd-binfmt runs. It stays registered.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
repo=$(pwd)
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

dir=${THV_ARM64_DIR:-/var/cache/thv-arm64}
vm=$dir/vm
results=$dir/results
target=aarch64-unknown-linux-gnu
mirror=${THV_E2E_DEBIAN_MIRROR:-http://deb.debian.org/debian}
boot_timeout=${THV_VM_BOOT_TIMEOUT:-900}
run_timeout=${THV_VM_TIMEOUT:-2400}
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(build user image vm)
for s in "${steps[@]}"; do
  case $s in build | user | image | vm) ;; *) echo "error: unknown step $s (build, user, image, vm)" >&2; exit 2 ;; esac
done
[ "$(id -u)" = 0 ] || { echo "error: run as root (debootstrap, chroot and binfmt_misc need it)" >&2; exit 1; }
need() { # TOOL PACKAGE
  command -v "$1" >/dev/null || { echo "error: $1 not found (apt-get install $2)" >&2; exit 1; }
}
mkdir -p "$dir" "$results"
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
out=$target_dir/$target/release
version=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="thv-sandbox"))')
deb=$repo/dist/thv-sandbox_${version}-1_arm64.deb
failures=()
timings=$results/timings
: >"$timings"
note() { echo "  $*" >>"$timings"; }
timed() { # NAME COMMAND...: runs it in a subshell with -e in force, records its wall time
  local name=$1 start rc
  shift
  start=$(date +%s)
  echo "== $name"
  set +e
  (set -e; "$@")
  rc=$?
  set -e
  note "$name: $(( $(date +%s) - start )) s$([ "$rc" = 0 ] || echo " (FAILED, exit $rc)")"
  [ "$rc" = 0 ] || failures+=("$name")
}

# ---- build: the release binary and .deb, and the probe the VM runs ----------------------------------------
step_build() {
  need aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu
  need qemu-aarch64-static qemu-user-static
  need cargo-deb "cargo-deb (cargo install cargo-deb --locked)"
  rustup target list --installed | grep -qx "$target" \
    || { echo "error: rustup target add $target" >&2; return 1; }
  # The release script builds and packages thv-sandbox; the docs come from the cross-built binary under qemu-user
  # when this machine has no release build of its own.
  packaging/build-release.sh "$target"
  # sandbox-probe (the MCP server of the VM's image) and make-probe-image (writes that image, run in the VM:
  # it takes the probe's shared libraries from ldd, so it must run there). Same toolchain set-up as the script.
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
    LIBSECCOMP_LIB_PATH=/usr/lib/aarch64-linux-gnu \
    cargo build --locked --release --target "$target" -p thv-sandbox-e2e --bin sandbox-probe --bin make-probe-image
  [ -f "$deb" ] || { echo "error: no $deb" >&2; return 1; }
  # What the release workflow checks of what ships (readelf and dpkg-deb read a foreign architecture's files).
  tests/install/static-link.sh "dist/thv-sandbox-$version-$target" AArch64
  tests/install/deb-contents.sh "$deb" arm64
}

# ---- user: the binary under qemu-user (no VM) -------------------------------------------------------------
step_user() {
  need qemu-aarch64-static qemu-user-static
  local bin=$out/thv-sandbox q=$results/qemu-user rc=0
  [ -x "$bin" ] || { echo "error: no $bin (run the build step)" >&2; return 1; }
  rm -rf "$q"; mkdir -p "$q"
  local run=(qemu-aarch64-static "$bin")
  file -b "$bin" | tee "$q/file.txt"
  # Commit named: the same short hash git gives for HEAD (a "-dirty" suffix when the tree had changes).
  "${run[@]}" --version | tee "$q/version.txt"
  local commit; commit=$(git rev-parse --short=12 HEAD)
  grep -qF "$commit" "$q/version.txt" \
    || { echo "FAIL: --version does not name HEAD ($commit): a binary built before the last commit? (run the build step)" >&2; rc=1; }
  for sh in bash zsh fish; do
    "${run[@]}" completions "$sh" >"$q/completions.$sh" || rc=1
    grep -q thv-sandbox "$q/completions.$sh" || { echo "FAIL: completions $sh" >&2; rc=1; }
    echo "completions $sh: $(wc -l <"$q/completions.$sh") lines"
  done
  "${run[@]}" man --dir "$q/man1" || rc=1
  echo "man: $(find "$q/man1" -name '*.1' | wc -l) pages"
  [ -s "$q/man1/thv-sandbox.1" ] || { echo "FAIL: man wrote no thv-sandbox.1" >&2; rc=1; }
  # doctor's exit status says whether the checks passed: under qemu-user some cannot (see the report below).
  local drc=0
  "${run[@]}" doctor --json >"$q/doctor.json" 2>"$q/doctor.stderr" || drc=$?
  echo "doctor --json: exit $drc"
  python3 "$here/arm64/show-doctor.py" "$q/doctor.json" || { echo "FAIL: doctor --json is not its JSON" >&2; rc=1; }
  "${run[@]}" registry list >"$q/registry-list.txt" || rc=1
  echo "registry list: $(($(wc -l <"$q/registry-list.txt") - 1)) servers"
  [ "$(wc -l <"$q/registry-list.txt")" -gt 10 ] || { echo "FAIL: registry list is short" >&2; rc=1; }
  return "$rc"
}

# ---- image: the aarch64 Debian 12 VM ------------------------------------------------------------------------
binfmt_aarch64() {
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] && return 0
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  fi
  echo "(registering binfmt_misc qemu-aarch64 from /usr/lib/binfmt.d/qemu-aarch64.conf)"
  grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf >/proc/sys/fs/binfmt_misc/register
}

step_image() {
  # What the tests need, as in build-image.sh (no docker-registry here), plus Debian's arm64 kernel.
  local packages=systemd,systemd-sysv,udev,dbus,dbus-user-session,libpam-systemd,kmod,procps,busybox-static,uidmap,python3,linux-image-arm64
  local recipe
  # The recipe: this function and binfmt_aarch64 as bash holds them (an edit elsewhere in this script does not
  # rebuild the image), the guest files, mirror and packages.
  recipe=$( { declare -f step_image binfmt_aarch64; cat "$here"/guest/*; echo "$mirror bookworm $packages"; } \
    | sha256sum | cut -d' ' -f1)
  if [ -f "$vm/recipe" ] && [ "$(cat "$vm/recipe")" = "$recipe" ] && [ -f "$vm/root.img" ] \
    && [ -f "$vm/vmlinuz" ] && [ -f "$vm/initrd.img" ]; then
    echo "aarch64 VM in $vm is up to date (recipe $recipe)"
    return 0
  fi
  for t in debootstrap:debootstrap mkfs.ext4:e2fsprogs cpio:cpio modprobe:kmod qemu-aarch64-static:qemu-user-static; do
    need "${t%%:*}" "${t#*:}"
  done
  [ -e /usr/lib/binfmt.d/qemu-aarch64.conf ] || { echo "error: no qemu-aarch64 binfmt entry (apt-get install qemu-user-static)" >&2; return 1; }
  binfmt_aarch64
  local root start
  # Not local: the EXIT trap runs after this function has returned.
  work=$(mktemp -d /var/tmp/thv-arm64.XXXXXX)
  trap 'rm -rf "$work"' EXIT   # this step runs in a subshell of its own
  root=$work/root
  start=$(date +%s)
  echo "-- debootstrap --foreign (arm64, minbase + $packages)"
  debootstrap --arch=arm64 --foreign --variant=minbase --include="$packages" bookworm "$root" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; return 1; }
  note "image: debootstrap --foreign $(( $(date +%s) - start )) s"
  start=$(date +%s)
  echo "-- second stage (arm64 binaries under qemu-user, through binfmt_misc)"
  # INITRD=No: the kernel package's hook makes no initrd (Debian's, of every module, takes tens of minutes under
  # qemu-user; the VM boots with the small one below).
  INITRD=No chroot "$root" /debootstrap/debootstrap --second-stage >"$work/second-stage.log" 2>&1 \
    || { tail -n 30 "$work/second-stage.log" >&2; tail -n 30 "$root/debootstrap/debootstrap.log" >&2 || true; return 1; }
  note "image: second stage under qemu-user $(( $(date +%s) - start )) s"
  echo "-- configure"
  echo thv-arm64 >"$root/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\tthv-arm64\n::1\tlocalhost\n' >"$root/etc/hosts"
  echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' >"$root/etc/fstab"
  chroot "$root" passwd -d root >/dev/null
  chroot "$root" useradd --create-home --uid 1000 --shell /bin/bash thv
  echo 'thv:100000:65536' >"$root/etc/subuid"
  echo 'thv:100000:65536' >"$root/etc/subgid"
  mkdir -p "$root/var/lib/systemd/linger"
  touch "$root/var/lib/systemd/linger/thv"
  for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer systemd-timesyncd.service; do
    chroot "$root" systemctl disable "$unit" >/dev/null 2>&1 || true
  done
  # The payload runner of tests/vm (mounts /dev/vdb, runs its run-inside.sh, powers off), unchanged.
  install -m 0755 "$here/guest/thv-vm-tests" "$root/usr/local/sbin/thv-vm-tests"
  install -m 0644 "$here/guest/thv-vm-tests.service" "$root/etc/systemd/system/thv-vm-tests.service"
  chroot "$root" systemctl enable thv-vm-tests.service >/dev/null
  local kver
  kver=$(cd "$root/lib/modules" && ls | head -n 1)
  [ -f "$root/boot/vmlinuz-$kver" ] || { echo "error: no kernel in the root ($kver)" >&2; return 1; }
  cp "$root/boot/vmlinuz-$kver" "$work/vmlinuz"
  echo "-- initramfs (tests/vm/guest/init, busybox, the modules for virtio-blk-pci and ext4 of $kver)"
  local ir=$work/initramfs
  mkdir -p "$ir/bin" "$ir/modules"
  cp "$root/bin/busybox" "$ir/bin/busybox"
  install -m 0755 "$here/guest/init" "$ir/init"
  # modprobe reads the root's modules.dep (written by the kernel package's postinst): dependencies first, each
  # once; built-in ones are not listed. -a: every name is a module (else the later ones are its parameters).
  modprobe -a -d "$root" -S "$kver" --show-depends virtio_pci virtio_blk ext4 \
    | awk '$1 == "insmod" { print $2 }' | awk '!seen[$0]++' | while read -r ko; do
      m=$(basename "$ko"); m=${m%.ko*}
      case $ko in "$root"/*) ;; *) ko=$root$ko ;; esac   # modprobe -d names them with the root in front
      case $ko in
        *.ko) cp "$ko" "$ir/modules/$m.ko" ;;
        *.ko.xz) xz -dc "$ko" >"$ir/modules/$m.ko" ;;
        *) echo "error: module $ko" >&2; exit 1 ;;
      esac
      echo "$m" >>"$ir/modules.order"
    done
  touch "$ir/modules.order"
  echo "   modules: $(tr '\n' ' ' <"$ir/modules.order")"
  (cd "$ir" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.img"
  rm -rf "$root"/boot/* "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/var/log/*.log "$root/debootstrap"
  echo "-- ext4 image"
  truncate -s 4G "$work/root.img"
  mkfs.ext4 -q -F -L thv-arm64-root -d "$root" "$work/root.img"
  mkdir -p "$vm"
  rm -f "$vm/recipe"
  mv "$work/root.img" "$work/vmlinuz" "$work/initrd.img" "$vm/"
  echo "$recipe" >"$vm/recipe"
  echo "aarch64 VM written to $vm (kernel $kver)"
}

# ---- vm: boot, install the .deb, doctor, a sandboxed MCP run --------------------------------------------------
step_vm() {
  for t in qemu-system-aarch64:qemu-system-arm mkfs.ext4:e2fsprogs debugfs:e2fsprogs; do need "${t%%:*}" "${t#*:}"; done
  [ -f "$vm/root.img" ] || { echo "error: no VM image in $vm (run the image step)" >&2; return 1; }
  [ -f "$deb" ] && [ -x "$out/sandbox-probe" ] && [ -x "$out/make-probe-image" ] \
    || { echo "error: no $deb or probe binaries in $out (run the build step)" >&2; return 1; }
  local payload status=0
  # Not local: the EXIT trap runs after this function has returned.
  qemu_pid= tail_pid=
  work=$(mktemp -d /var/tmp/thv-arm64-run.XXXXXX)
  # This step runs in a subshell of its own: on any exit, no qemu left behind and no payload.
  trap '[ -z "$qemu_pid" ] || kill "$qemu_pid" 2>/dev/null; [ -z "$tail_pid" ] || kill "$tail_pid" 2>/dev/null; rm -rf "$work"' EXIT
  payload=$work/payload
  mkdir -p "$payload/bin" "$payload/results"
  cp "$deb" "$payload/thv-sandbox.deb"
  cp "$out/sandbox-probe" "$out/make-probe-image" "$payload/bin/"
  install -m 0755 "$here/arm64/run-inside.sh" "$here/arm64/run-as-user.sh" "$payload/"
  install -m 0644 "$here/arm64/mcp-client.py" "$here/arm64/show-doctor.py" "$payload/"
  chmod -R a+rX "$payload"
  truncate -s "$(( $(du -sm "$payload" | cut -f1) + 256 ))M" "$work/payload.img"
  mkfs.ext4 -q -F -L thv-payload -d "$payload" "$work/payload.img"
  local console=$work/console.log t_boot up= now
  : >"$console"
  echo "-- boot (qemu-system-aarch64 -M virt, TCG, ${THV_VM_SMP:-2} CPUs, ${THV_VM_MEMORY:-2048} MiB; console below)"
  t_boot=$(date +%s)
  # -cpu max with the cheap pointer-authentication algorithm (the architected one is slow under TCG). The root
  # image is opened with snapshot=on (the cached image stays as built); no network device.
  qemu-system-aarch64 -M virt -accel tcg,thread=multi -cpu max,pauth-impdef=on -smp "${THV_VM_SMP:-2}" \
    -m "${THV_VM_MEMORY:-2048}" -nographic -no-reboot -nic none \
    -kernel "$vm/vmlinuz" -initrd "$vm/initrd.img" \
    -append "root=/dev/vda rw console=ttyAMA0 quiet panic=-1 systemd.show_status=auto" \
    -drive "file=$vm/root.img,format=raw,if=none,id=root,snapshot=on" -device virtio-blk-pci,drive=root \
    -drive "file=$work/payload.img,format=raw,if=none,id=payload" -device virtio-blk-pci,drive=payload \
    </dev/null >"$console" 2>&1 &
  qemu_pid=$!
  tail -n +1 --pid="$qemu_pid" -f "$console" &
  tail_pid=$!
  while kill -0 "$qemu_pid" 2>/dev/null; do
    now=$(date +%s)
    if [ -z "$up" ]; then
      if grep -q 'THV-VM: multi-user after' "$console"; then
        up=$now
        note "vm: boot to multi-user $(( up - t_boot )) s"
      elif [ $(( now - t_boot )) -ge "$boot_timeout" ]; then
        echo "error: the VM did not come up within $boot_timeout s" >&2; status=1; break
      fi
    fi
    if [ $(( now - t_boot )) -ge "$run_timeout" ]; then
      echo "error: the VM run took longer than $run_timeout s" >&2; status=1; break
    fi
    sleep 1
  done
  if kill -0 "$qemu_pid" 2>/dev/null; then
    kill "$qemu_pid"; wait "$qemu_pid" 2>/dev/null || true
  else
    wait "$qemu_pid" || { echo "error: qemu exited with status $?" >&2; status=1; }
  fi
  qemu_pid=
  wait "$tail_pid" 2>/dev/null || true
  tail_pid=
  [ -z "$up" ] || note "vm: from multi-user to power-off (install, doctor, MCP run) $(( $(date +%s) - up )) s"
  # The results: out of the payload disk without mounting it.
  rm -rf "$results/vm"; mkdir -p "$results/vm"
  cp "$console" "$results/vm/console.log"
  debugfs -R "rdump /results $results/vm" "$work/payload.img" >/dev/null 2>&1 || true
  if [ -d "$results/vm/results" ]; then mv "$results/vm/results"/* "$results/vm/" 2>/dev/null || true; rmdir "$results/vm/results"; fi
  local rc; rc=$(cat "$results/vm/rc" 2>/dev/null || echo none)
  echo "-- results ($results/vm)"
  cat "$results/vm/summary" 2>/dev/null || echo "(no summary: the run did not finish; console above)"
  [ "$rc" = 0 ] || { echo "error: the VM run ended with $rc" >&2; status=1; }
  return "$status"
}

for s in "${steps[@]}"; do timed "$s" "step_$s"; done
echo "== timings"
cat "$timings"
if [ ${#failures[@]} -gt 0 ]; then
  echo "FAILED: ${failures[*]}"
  exit 1
fi
echo "all passed: ${steps[*]}"
