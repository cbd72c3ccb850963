#!/usr/bin/env python3
"""Warm-start benchmark: from launching `thv-sandbox run` on an already-unpacked image to the MCP initialize
response, against the same server binary run bare on the host. Medians over N runs in one sitting, with the
per-phase breakdown thv-sandbox reports (THV_SANDBOX_TIMINGS=1).

Usage: bench/warm_start.py [--runs N] [--no-build]   (builds release binaries and the probe image first)
As another user: build as yourself, then `runuser -u USER -- env CARGO_TARGET_DIR=… bench/warm_start.py --no-build`.
"""
import argparse, json, os, re, statistics, subprocess, sys, tempfile, time

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
    a = ap.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "thv-sandbox", "-p", "thv-sandbox-e2e",
                        "--bins"], cwd=ROOT, check=True)
    rel = os.path.join(target, "release")
    work = tempfile.mkdtemp(prefix="thv-bench-")
    os.chmod(work, 0o711)
    layout = os.path.join(work, "probe")
    subprocess.run([os.path.join(rel, "make-probe-image"), layout, "app", "app"], check=True)
    cache = os.path.join(work, "cache")
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/"), "THV_SANDBOX_TIMINGS": "1"}
    sandbox = [os.path.join(rel, "thv-sandbox"), "run", "--cache-dir", cache, f"oci:{layout}:app"]
    once(sandbox, env)  # unpack once: the benchmark is the warm start
    bare = [os.path.join(rel, "sandbox-probe")]
    phases = {k: [] for k in ("image", "spec", "runner namespaces", "create", "start", "to exec")}
    sb, hb, after_exec = [], [], []
    for _ in range(a.runs):  # interleaved, so both see the same machine state
        ms, err = once(sandbox, env)
        sb.append(ms)
        m = re.search(r"timings: (.*)", err)
        for part in m.group(1).split(", "):
            name, val = part.rsplit(" ", 2)[0], float(part.rsplit(" ", 2)[1])
            phases[name].append(val)
        after_exec.append(ms - phases["to exec"][-1])
        hb.append(once(bare, env)[0])
    med = statistics.median
    print(f"runs: {a.runs} each, interleaved; machine: {os.cpu_count()} cpus, uid {os.getuid()}")
    print(f"bare probe, spawn -> initialize response:          median {med(hb):6.2f} ms  (min {min(hb):.2f}, max {max(hb):.2f})")
    print(f"thv-sandbox run, spawn -> initialize response:     median {med(sb):6.2f} ms  (min {min(sb):.2f}, max {max(sb):.2f})")
    print(f"added by the sandbox:                              median {med(sb) - med(hb):6.2f} ms")
    print("phases (thv-sandbox's own clock, median ms):")
    for k, v in phases.items():
        print(f"  {k:18s} {med(v):6.2f}")
    print(f"  {'exec -> response':18s} {med(after_exec):6.2f}  (includes process start of thv-sandbox itself before its clock starts)")

if __name__ == "__main__":
    main()
