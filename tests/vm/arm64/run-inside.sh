#!/bin/sh
# In the aarch64 VM (tests/vm/arm64.sh), as root, at boot (thv-vm-tests.service of tests/vm/guest): installs the
# aarch64 .deb with dpkg, then runs run-as-user.sh as the unprivileged user `thv` in a login session (runuser -l:
# PAM and pam_systemd give it a session, XDG_RUNTIME_DIR and its D-Bus, as an ssh or console login gets).
set -u
p=/mnt/payload
r=$p/results
chown -R thv: "$r"
echo "THV-VM: $(uname -m), kernel $(uname -r), $(nproc) CPUs, $(sed -n 's/MemTotal: *//p' /proc/meminfo) memory"
start=$(date +%s)
if ! dpkg -i "$p/thv-sandbox.deb" >"$r/dpkg.log" 2>&1; then
  cat "$r/dpkg.log"
  echo "FAIL: dpkg -i thv-sandbox.deb" | tee "$r/summary"
  exit 1
fi
echo "THV-VM: installed $(dpkg-query -W -f='${Package} ${Version} ${Architecture}' thv-sandbox) in $(( $(date +%s) - start )) s"
dpkg -L thv-sandbox >"$r/dpkg-L.txt"
i=0
while [ ! -S /run/user/1000/bus ] && [ $i -lt 240 ]; do sleep 0.5; i=$((i + 1)); done
[ -S /run/user/1000/bus ] || echo "THV-VM: the user's D-Bus /run/user/1000/bus never appeared"
runuser -l thv -c "$p/run-as-user.sh"
