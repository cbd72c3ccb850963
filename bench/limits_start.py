#!/usr/bin/env python3
"""Warm-start cost of resource limits: `thv-sandbox run` to the MCP initialize response with the default limits
(the sandbox's cgroup is made: a transient systemd scope over D-Bus for a user on a cgroup v2 host with systemd,
cgroupfs writes as root) against the same run with every limit `unlimited` (no cgroup at all). Interleaved, medians
over N runs in one sitting. The vm engineer runs it in the VM (tests/vm/), as the unprivileged user with a systemd
user session; it also runs here (root: cgroup v1).

Usage: bench/limits_start.py [--runs N] [--no-build] [--baseline BIN]
  (builds release binaries and the probe image first; --baseline: another thv-sandbox binary run with the default
  limits as a third variant, interleaved, on a cache of its own: an A/B of a change)
It refuses to report when the limited runs warned that no limit applies (then there is nothing to measure).
"""
import argparse, json, os, statistics, subprocess, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INIT = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}}) + "\n"


def once(cmd, env):
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    p.stdin.write(INIT.encode()); p.stdin.flush()
    line = p.stdout.readline()
    t1 = time.perf_counter()
    assert b'"result"' in line, line
    p.stdin.close()
    err = p.stderr.read().decode()
    p.wait()
    assert p.returncode == 0, (p.returncode, err)
    return (t1 - t0) * 1e3, err


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--no-build", action="store_true", help="use binaries already built (e.g. as another user)")
    ap.add_argument("--baseline", help="another thv-sandbox binary: a third variant, default limits")
    a = ap.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "thv-sandbox", "-p", "thv-sandbox-e2e",
                        "--bins"], cwd=ROOT, check=True)
    rel = os.path.join(target, "release")
    work = tempfile.mkdtemp(prefix="thv-bench-limits-")
    os.chmod(work, 0o711)
    layout = os.path.join(work, "probe")
    subprocess.run([os.path.join(rel, "make-probe-image"), layout, "app", "app"], check=True)
    cache = os.path.join(work, "cache")
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/")}
    # The user's systemd manager is reached through these (the scope path).
    for keep in ("XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS"):
        if keep in os.environ:
            env[keep] = os.environ[keep]
    base = [os.path.join(rel, "thv-sandbox"), "run", "--cache-dir", cache, "--image-verification", "disabled"]
    image = f"oci:{layout}:app"
    free = base + ["--memory", "unlimited", "--cpus", "unlimited", "--pids-limit", "unlimited", image]
    limited = base + [image]
    once(free, env)  # unpack once: the benchmark is the warm start
    _, err = once(limited, env)
    if "limit for this server" in err:
        raise SystemExit(f"the limited run got no cgroup here, nothing to measure:\n{err}")
    variants = [("no limits (no cgroup)", free), ("default limits (own cgroup)", limited)]
    if a.baseline:
        base_cache = os.path.join(work, "cache-baseline")
        baseline = [a.baseline, "run", "--cache-dir", base_cache, "--image-verification", "disabled", image]
        once(baseline, env)  # its own unpack
        variants.append(("default limits, baseline binary", baseline))
    times = {name: [] for name, _ in variants}
    for i in range(a.runs):  # interleaved, order rotated each round, so all see the same machine state
        for j in range(len(variants)):
            name, cmd = variants[(i + j) % len(variants)]
            times[name].append(once(cmd, env)[0])
    med = statistics.median
    print(f"runs: {a.runs} each, interleaved; machine: {os.cpu_count()} cpus, uid {os.getuid()}")
    for name, t in times.items():
        print(f"{name + ':':33} median {med(t):8.2f} ms  (min {min(t):.2f}, max {max(t):.2f})")
    unl = times["no limits (no cgroup)"]
    for name, t in list(times.items())[1:]:
        print(f"added by the limits ({name}): median {med(t) - med(unl):+8.2f} ms")


if __name__ == "__main__":
    main()
