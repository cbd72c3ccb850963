#!/usr/bin/env python3
"""Guard relay benchmark (issue 17): what relaying stdio through the guard costs, against the server holding the
client's descriptors (`--pin off`, no filter, no audit log: no relay).

- latency: one MCP round trip (`tools/call echo`, a short text) from writing the request to reading the whole
  response, per message; N round trips per session;
- throughput: `tools/call blob` results of SIZE bytes (one JSON line each), MB/s from request to whole response.

Sessions alternate relay off / relay on (interleaved, so both see the same machine state); medians and spread over
all round trips of each kind. The machine is shared: read the spread, not only the medians.

Usage: bench/guard_relay.py [--sessions S] [--trips N] [--blob-mib M] [--blobs K] [--no-build] [--debug]
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def msg(i, method, params=None):
    m = {"jsonrpc": "2.0", "id": i, "method": method}
    if params is not None:
        m["params"] = params
    return (json.dumps(m) + "\n").encode()


def session(cmd, env, trips, blob_bytes, blobs):
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                         bufsize=1 << 20)
    out = p.stdout
    def roundtrip(data):
        t0 = time.perf_counter_ns()
        p.stdin.write(data)
        p.stdin.flush()
        line = out.readline()
        t1 = time.perf_counter_ns()
        assert line.endswith(b"\n") and b'"result"' in line[:100], line[:200]
        return t1 - t0, len(line)
    roundtrip(msg(0, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                    "clientInfo": {"name": "bench", "version": "0"}}))
    p.stdin.write(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}\n')
    p.stdin.flush()
    roundtrip(msg(1, "tools/list"))
    echo = [roundtrip(msg(10 + i, "tools/call", {"name": "echo", "arguments": {"text": "hello"}}))[0]
            for i in range(trips)]
    big = []
    for i in range(blobs):
        ns, n = roundtrip(msg(100000 + i, "tools/call", {"name": "blob", "arguments": {"bytes": blob_bytes}}))
        assert n > blob_bytes, n
        big.append(n / (ns / 1e9) / 1e6)
    p.stdin.close()
    p.wait()
    assert p.returncode == 0, p.returncode
    return echo, big


def q(xs, f):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(f * len(xs)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=5, help="sessions of each kind")
    ap.add_argument("--trips", type=int, default=2000, help="echo round trips per session")
    ap.add_argument("--blob-mib", type=int, default=8)
    ap.add_argument("--blobs", type=int, default=10, help="blob results per session")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--debug", action="store_true", help="use the debug build")
    a = ap.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    profile = "debug" if a.debug else "release"
    if not a.no_build:
        build = ["cargo", "build", "--locked", "-p", "thv-sandbox", "-p", "thv-sandbox-e2e", "--bins"]
        subprocess.run(build + ([] if a.debug else ["--release"]), cwd=ROOT, check=True)
    bins = os.path.join(target, profile)
    work = tempfile.mkdtemp(prefix="thv-bench-guard-")
    os.chmod(work, 0o711)
    layout = os.path.join(work, "probe")
    subprocess.run([os.path.join(bins, "make-probe-image"), layout, "app", "app"], check=True,
                   stdout=subprocess.DEVNULL)
    cache = os.path.join(work, "cache")
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/")}
    base = [os.path.join(bins, "thv-sandbox"), "run", "--cache-dir", cache]
    image = f"oci:{layout}:app"
    kinds = {"off": base + ["--pin", "off", image], "on": base + ["--pin", "warn", image]}
    session(kinds["on"], env, 10, 1024, 1)  # unpack, and pin, once
    echo = {k: [] for k in kinds}
    big = {k: [] for k in kinds}
    for _ in range(a.sessions):
        for k, cmd in kinds.items():
            e, b = session(cmd, env, a.trips, a.blob_mib << 20, a.blobs)
            echo[k] += e
            big[k] += b
    med = statistics.median
    print(f"{profile} build; {a.sessions} sessions of each kind, interleaved; {a.trips} echo round trips and "
          f"{a.blobs} results of {a.blob_mib} MiB per session; machine: {os.cpu_count()} cpus, "
          f"load {os.getloadavg()[0]:.1f}, uid {os.getuid()}")
    for k in kinds:
        us = [x / 1e3 for x in echo[k]]
        print(f"relay {k:3}: echo round trip median {med(us):7.1f} us (p10 {q(us, .1):6.1f}, p90 {q(us, .9):7.1f}); "
              f"blob {a.blob_mib} MiB median {med(big[k]):7.1f} MB/s (p10 {q(big[k], .1):6.1f}, p90 {q(big[k], .9):6.1f})")
    d = med(echo["on"]) / 1e3 - med(echo["off"]) / 1e3
    # A round trip crosses the relay twice (request and response): the added cost per message is half.
    print(f"added by the relay: {d:.1f} us per round trip (median on - median off), {d / 2:.1f} us per message; "
          f"throughput {med(big['on']) / med(big['off']) * 100:.0f}% of relay off")


if __name__ == "__main__":
    sys.exit(main())
