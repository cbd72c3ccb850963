#!/usr/bin/env bash
# Builds the test VM of tests/vm/run.sh: a real cgroup v2 + systemd host (Debian 12), for the tests that need
# one (resource limits through a transient systemd scope; the sandbox on the host most users have).
#
#   tests/vm/build-image.sh [OUT]       (as root; OUT defaults to $THV_E2E_VM, then /var/cache/thv-vm)
#
# Writes OUT/root.img (ext4, made with `mkfs.ext4 -d`: no loop mount), OUT/vmlinuz (the host's linux-image-amd64
# package: the kernel that package depends on, which need not be the running one; its modules go into the root),
# OUT/initrd.img (a busybox initramfs with the few modules of that kernel the root disk needs, guest/init), and
# OUT/recipe, the hash of this recipe. A rerun whose recipe hash matches does nothing, so CI machines and
# developers build once. Needs: debootstrap, e2fsprogs, cpio, kmod, linux-image-amd64; the Debian mirror reachable.
#
# The guest: Debian 12 minbase with systemd, udev, dbus and dbus-user-session (a user session has its own bus),
# libpam-systemd (a login gets a session scope and XDG_RUNTIME_DIR), docker-registry, busybox-static and uidmap
# for the end-to-end tests; an unprivileged user `thv` (uid 1000) with lingering enabled and /etc/subuid and
# /etc/subgid ranges; no network but loopback. At boot, thv-vm-tests.service mounts the second virtio disk
# (/dev/vdb, the payload run.sh makes), runs its run-inside.sh and powers the machine off; without a second disk
# it does nothing (log in on the console as root, no password, to look around).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

out=${1:-${THV_E2E_VM:-/var/cache/thv-vm}}
mirror=${THV_E2E_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
packages=systemd,systemd-sysv,udev,dbus,dbus-user-session,libpam-systemd,kmod,procps,docker-registry,busybox-static,uidmap,python3
# The modules the initramfs loads to mount the root disk, dependencies first.
initramfs_modules="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk crc16 mbcache jbd2 crc32c_generic ext4"
# The kernel: the one Debian's linux-image-amd64 meta-package on this host depends on.
kpkg=$(dpkg-query -W -f='${Depends}' linux-image-amd64 2>/dev/null | sed -n 's/^\(linux-image-[^ ,]*\).*/\1/p') || true
[ -n "$kpkg" ] || { echo "error: linux-image-amd64 is not installed (apt-get install linux-image-amd64)" >&2; exit 1; }
kver=${kpkg#linux-image-}
kpkg_version=$(dpkg-query -W -f='${Version}' "$kpkg")

recipe=$( { cat "$0" "$here"/guest/*; echo "$mirror $suite $packages $kpkg $kpkg_version $initramfs_modules"; } | sha256sum | cut -d' ' -f1)
if [ -f "$out/recipe" ] && [ "$(cat "$out/recipe")" = "$recipe" ] && [ -f "$out/root.img" ] \
  && [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ]; then
  echo "test VM in $out is up to date (recipe $recipe)"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "error: run as root (debootstrap needs it)" >&2; exit 1; }
for tool in debootstrap mkfs.ext4 cpio modinfo; do
  command -v "$tool" >/dev/null \
    || { echo "error: $tool not found (apt-get install debootstrap e2fsprogs cpio kmod)" >&2; exit 1; }
done
for f in "/boot/vmlinuz-$kver" "/lib/modules/$kver/modules.dep"; do
  [ -f "$f" ] || { echo "error: $f missing (apt-get install --reinstall $kpkg)" >&2; exit 1; }
done

start=$(date +%s)
work=$(mktemp -d /var/tmp/thv-vm.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root

echo "== debootstrap $suite (minbase + $packages) from $mirror"
debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" \
  >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

echo "== configure"
# The kernel's modules (overlay, veth, … are modules in Debian's kernel); the kernel and initrd stay outside.
mkdir -p "$root/lib/modules"
cp -a "/lib/modules/$kver" "$root/lib/modules/"
echo thv-vm >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tthv-vm\n::1\tlocalhost\n' >"$root/etc/hosts"
echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' >"$root/etc/fstab"
# root logs in on the console without a password (a throwaway machine without network, for debugging).
chroot "$root" passwd -d root >/dev/null
# The unprivileged user the tests run as, with subordinate ids and lingering (its systemd manager runs from boot).
chroot "$root" useradd --create-home --uid 1000 --shell /bin/bash thv
echo 'thv:100000:65536' >"$root/etc/subuid"
echo 'thv:100000:65536' >"$root/etc/subgid"
mkdir -p "$root/var/lib/systemd/linger"
touch "$root/var/lib/systemd/linger/thv"
# What a test machine does not need at boot.
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer systemd-timesyncd.service \
  docker-registry.service; do
  chroot "$root" systemctl disable "$unit" >/dev/null 2>&1 || true
done
chroot "$root" systemctl mask docker-registry.service >/dev/null 2>&1 || true
# The payload runner.
install -m 0755 "$here/guest/thv-vm-tests" "$root/usr/local/sbin/thv-vm-tests"
install -m 0644 "$here/guest/thv-vm-tests.service" "$root/etc/systemd/system/thv-vm-tests.service"
chroot "$root" systemctl enable thv-vm-tests.service >/dev/null
rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
  "$root"/usr/share/locale/* "$root"/var/log/*.log

echo "== ext4 image"
rm -f "$out/root.img" "$out/recipe"
mkdir -p "$out"
# 4 GiB, sparse: the tests unpack images and keep caches under /tmp and the user's home.
truncate -s 4G "$work/root.img"
mkfs.ext4 -q -F -L thv-vm-root -d "$root" "$work/root.img"
cp "/boot/vmlinuz-$kver" "$work/vmlinuz"
echo "== initramfs (busybox and the root disk's modules)"
# Debian's own initrd for this kernel loads and probes far more than the VM has, which under emulation costs tens
# of seconds; this one loads the virtio and ext4 modules of the same package and switches to the root disk.
ir=$work/initramfs
mkdir -p "$ir/bin" "$ir/modules"
cp "$root/bin/busybox" "$ir/bin/busybox"
install -m 0755 "$here/guest/init" "$ir/init"
for m in $initramfs_modules; do
  cp "$(modinfo -k "$kver" -n "$m")" "$ir/modules/$m.ko"
  echo "$m" >>"$ir/modules.order"
done
(cd "$ir" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.img"
mv "$work/root.img" "$work/vmlinuz" "$work/initrd.img" "$out/"
echo "$recipe" >"$out/recipe"
chmod -R a+rX "$out"
echo "test VM written to $out in $(( $(date +%s) - start )) s (kernel $kver, $(du -sh "$out/root.img" | cut -f1) used)"
