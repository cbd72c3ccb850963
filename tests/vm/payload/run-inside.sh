#!/bin/sh
# In the test VM, as root, at boot (thv-vm-tests.service): runs the tests as the unprivileged user `thv` in a real
# login session (runuser -l goes through PAM and pam_systemd: a session scope under user-1000.slice, owned by
# root, as an ssh or console login gets; XDG_RUNTIME_DIR and the user's D-Bus), then leaves the results in
# results/ of this disk. Part of the payload tests/vm/run.sh makes, not of the image.
set -u
p=/mnt/payload
chown -R thv: "$p/results"
echo "THV-VM: kernel $(uname -r), $(nproc) CPUs, $(sed -n 's/MemTotal: *//p' /proc/meminfo) memory"
echo "THV-VM: cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
# The user's manager runs from boot (lingering); wait (bounded) until its bus answers.
i=0
while [ ! -S /run/user/1000/bus ] && [ $i -lt 120 ]; do sleep 0.5; i=$((i + 1)); done
[ -S /run/user/1000/bus ] || { echo "THV-VM: the user's D-Bus /run/user/1000/bus never appeared"; \
  systemctl --no-pager status user@1000.service; exit 1; }
echo "THV-VM: user@1000.service $(systemctl is-active user@1000.service) after $(cut -d' ' -f1 /proc/uptime) s"
echo "THV-VM: $(systemd-analyze time 2>/dev/null | head -n 1)"
# A watchdog for runs that stall: every 3 minutes, the busiest processes and where each sleeps (the console is all
# a stalled run leaves to read).
( while sleep 180; do
    echo "THV-VM: watchdog at $(cut -d' ' -f1 /proc/uptime) s, load $(cut -d' ' -f1-3 /proc/loadavg):"
    ps -eo pid,ppid,stat,pcpu,wchan:24,comm --sort=-pcpu | head -n 15 | sed 's/^/THV-VM:   /'
  done ) &
watchdog=$!
rc=0
runuser -l thv -c "$p/run-as-user.sh" || rc=$?
kill "$watchdog" 2>/dev/null
exit "$rc"
