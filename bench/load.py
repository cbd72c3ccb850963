#!/usr/bin/env python3
"""Load (issue 18): many sandboxes at once from a cold cache, many in a row, and what they leave behind.

1. cold: N (default 50) `thv-sandbox run` started at once on an empty cache, pulling the probe image from a
   registry on loopback (a small threaded server over the image's OCI layout, counting the requests). Each must
   answer MCP initialize. Reported: start-to-response percentiles, and how many times each blob was downloaded
   (one download per blob is the promise) and how many roots are in the cache (one unpack).
2. sequential: M (default 200) runs one after another, each answering initialize and closing. Counted before and
   after: processes of these runs (sandboxed servers included), mounts of this mount namespace
   (/proc/self/mountinfo), fds open by this script, directories under the cache and the runtime state directory,
   entries in the runs' TMPDIR. They must not grow.

Usage: bench/load.py [--bin PATH] [--concurrent N] [--sequential M] [--probe-image PATH]
Defaults use target/debug (cargo build -p thv-sandbox -p thv-sandbox-e2e --bins). Exit 1 if a promise fails.
"""
import argparse, http.server, json, os, shutil, socketserver, subprocess, sys, tempfile, threading, time
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INIT = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "load", "version": "0"}}}) + "\n"


def serve_layout(layout, tag):
    """A read-only OCI distribution endpoint for repository `r` over `layout`; returns (server, counts)."""
    counts = Counter()
    idx = json.load(open(os.path.join(layout, "index.json")))
    desc = next(m for m in idx["manifests"]
                if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_GET(self):
            p = self.path.split("?")[0]
            counts[p] += 1
            body, ctype = None, "application/octet-stream"
            if p == "/v2/":
                body, ctype = b"{}", "application/json"
            elif p in (f"/v2/r/manifests/{tag}", f"/v2/r/manifests/{desc['digest']}"):
                body = open(os.path.join(layout, "blobs/sha256", desc["digest"][7:]), "rb").read()
                ctype = desc["mediaType"]
            elif p.startswith("/v2/r/blobs/sha256:"):
                f = os.path.join(layout, "blobs/sha256", p.rsplit(":", 1)[1])
                if os.path.isfile(f):
                    body = open(f, "rb").read()
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            if "/manifests/" in p:
                self.send_header("Docker-Content-Digest", desc["digest"])
            self.end_headers()
            self.wfile.write(body)

    class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        request_queue_size = 256

    srv = S(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, counts


def start(cmd, env):
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    p.stdin.write(INIT.encode())
    p.stdin.flush()
    line = p.stdout.readline()
    ms = (time.perf_counter() - t0) * 1e3
    p.stdin.close()
    err = p.stderr.read().decode(errors="replace")
    p.wait()
    ok = b'"result"' in line and p.returncode == 0
    return ms, ok, err


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(q / 100 * (len(v) - 1))))]


def snapshot(work, cache, state):
    """Counts of what a run could leave behind. The machine is shared (other users' processes come and go), so
    processes are those of these runs: a command line naming the work directory, or a root or working directory
    inside it (a sandboxed server)."""
    procs = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
            mine = work in cmdline
            for link in ("root", "cwd"):
                try:
                    mine = mine or os.readlink(f"/proc/{pid}/{link}").startswith(work)
                except OSError:
                    pass
            procs += mine
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    mounts = len(open("/proc/self/mountinfo").read().splitlines())
    fds = len(os.listdir("/proc/self/fd"))
    dirs = sum(len(d) for root in (cache, state) if os.path.isdir(root) for _, d, _ in os.walk(root))
    tmp = len(os.listdir(os.path.join(work, "tmp")))
    return {"processes": procs, "mounts": mounts, "fds": fds, "dirs": dirs, "tmp_entries": tmp}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "debug"))
    ap.add_argument("--concurrent", type=int, default=50)
    ap.add_argument("--sequential", type=int, default=200)
    a = ap.parse_args()
    thv = os.path.join(a.bin, "thv-sandbox")
    work = tempfile.mkdtemp(prefix="thv-load-")
    os.chmod(work, 0o711)
    layout = os.path.join(work, "probe")
    subprocess.run([os.path.join(a.bin, "make-probe-image"), layout, "app", "app"], check=True)
    srv, counts = serve_layout(layout, "app")
    ref = f"127.0.0.1:{srv.server_address[1]}/r:app"
    state = os.path.join(work, "state")
    os.makedirs(state, mode=0o700)
    os.makedirs(os.path.join(work, "tmp"))
    # TMPDIR of its own: /tmp is shared with whatever else runs on the machine.
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/"), "XDG_RUNTIME_DIR": state,
           "THV_SANDBOX_TUF_REFRESH": "0", "TMPDIR": os.path.join(work, "tmp")}
    failed = False

    # 1. cold, concurrent
    cache = os.path.join(work, "cache-cold")
    cmd = [thv, "run", "--cache-dir", cache, ref]
    results = [None] * a.concurrent
    go = threading.Barrier(a.concurrent)

    def one(i):
        go.wait()
        results[i] = start(cmd, env)

    t0 = time.perf_counter()
    ts = [threading.Thread(target=one, args=(i,)) for i in range(a.concurrent)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    ms = [r[0] for r in results]
    bad = [r[2] for r in results if not r[1]]
    blob_gets = {p: n for p, n in counts.items() if "/blobs/" in p}
    roots = [d for d in os.listdir(cache) if d.startswith("roots-")]
    n_roots = sum(len([e for e in os.listdir(os.path.join(cache, d)) if not e.startswith(".")]) for d in roots)
    print(f"cold: {a.concurrent} runs at once, {a.concurrent - len(bad)} served; wall {wall:.1f} s; "
          f"start -> initialize response p50 {pct(ms, 50):.0f} ms, p90 {pct(ms, 90):.0f} ms, "
          f"p99 {pct(ms, 99):.0f} ms, max {max(ms):.0f} ms")
    print(f"  blob downloads: {sorted(blob_gets.values())} (one each expected); "
          f"manifest GETs: {sum(n for p, n in counts.items() if '/manifests/' in p)}; root entries in the cache: {n_roots}")
    if bad:
        failed = True
        print("  FAILED runs:", len(bad), "first error:", bad[0][-2000:], file=sys.stderr)
    if any(n != 1 for n in blob_gets.values()):
        failed = True
        print("  a blob was downloaded more than once", file=sys.stderr)

    # 2. sequential, warm
    before = snapshot(work, cache, state)
    seq_ms, seq_bad = [], 0
    for _ in range(a.sequential):
        m, ok, err = start(cmd, env)
        seq_ms.append(m)
        if not ok:
            seq_bad += 1
            last_err = err
    time.sleep(0.5)
    after = snapshot(work, cache, state)
    print(f"sequential: {a.sequential} runs, {a.sequential - seq_bad} served; p50 {pct(seq_ms, 50):.0f} ms, "
          f"p90 {pct(seq_ms, 90):.0f} ms, max {max(seq_ms):.0f} ms")
    print("  before:", before)
    print("  after: ", after)
    grown = [k for k in before if after[k] > before[k]]
    if seq_bad:
        failed = True
        print("  FAILED runs:", seq_bad, last_err[-2000:], file=sys.stderr)
    if grown:
        failed = True
        print("  LEAK: grew:", grown, file=sys.stderr)
    srv.shutdown()
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
