#!/usr/bin/env python3
"""Load on the egress proxy (issue 18): HTTP GETs from inside a sandbox, through its egress proxy, to an HTTP server
on loopback that the allow-list lets it reach (`--allow-host 127.0.0.1:PORT`), against the same GETs sent
directly on the host. Three ways through the proxy, each measured: a forward-proxy request (absolute form), a
tunnel opened by HTTP `CONNECT 127.0.0.1:PORT` (what an HTTPS client does; the GET then goes through the tunnel
as plain TCP, so the figure is the proxy's cost, not TLS's), and a tunnel opened by a SOCKS5 CONNECT (greeting,
then the request: two round trips, as curl does). Every GET is on a connection, and a tunnel, of its own.

Both sides use the same client code: the test probe's `http_get_many` tool (tests/src/bin/sandbox-probe.rs: COUNT
GETs, CONCURRENCY at a time, one TCP connection each, `Connection: close`). In the sandbox the probe sends them to
HTTP_PROXY (the egress proxy, which checks each against the allow-list and connects on the host) as absolute-form
requests, or opens a CONNECT or SOCKS5 tunnel there first; on the host the same binary runs unsandboxed and
connects straight to the server. The server is a
threaded Python HTTP server answering 200 with a 2-byte body; it is the same for both, so the difference is what
the proxy path costs (the extra hop, the allow-list check, the relay).

Usage: bench/egress_load.py [--bin DIR] [--count N] [--concurrency 1,8,32] [--rounds R]
Defaults: target/debug binaries, 400 GETs per measurement, concurrency 1, 8 and 32, 3 rounds (interleaved: proxy,
connect, socks5, direct, proxy, …; medians over rounds, and the spread of GETs/s over rounds as min–max). Exit 1
if a GET fails.
"""
import argparse, http.server, json, os, shutil, socketserver, statistics, subprocess, sys, tempfile, threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The ways through the egress proxy (the probe's `via`).
VIAS = ["proxy", "connect", "socks5"]
LABELS = {
    "proxy": "sandbox → proxy (absolute-form GET) → server",
    "connect": "sandbox → proxy (HTTP CONNECT tunnel) → server",
    "socks5": "sandbox → proxy (SOCKS5 tunnel) → server",
    "direct": "host → server (direct)",
}


def serve():
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"ok")

    class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        request_queue_size = 512

    srv = S(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


class Mcp:
    """An MCP session over a command's stdio."""

    def __init__(self, cmd, env):
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=env)
        self.n = 0
        init = self.call("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                        "clientInfo": {"name": "egress-load", "version": "0"}})
        if "result" not in init:
            raise SystemExit(f"initialize failed: {init}")
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def send(self, m):
        self.p.stdin.write((json.dumps(m) + "\n").encode())
        self.p.stdin.flush()

    def call(self, method, params):
        self.n += 1
        self.send({"jsonrpc": "2.0", "id": self.n, "method": method, "params": params})
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise SystemExit("the server closed its output: " + self.p.stderr.read().decode()[-2000:])
            m = json.loads(line)
            if m.get("id") == self.n:
                return m

    def get_many(self, url, count, concurrency, via):
        a = self.call("tools/call", {"name": "http_get_many", "arguments": {
            "url": url, "count": count, "concurrency": concurrency, "via": via}})
        text = a["result"]["content"][0]["text"]
        if a["result"].get("isError"):
            raise SystemExit(f"http_get_many failed: {text}")
        return json.loads(text)

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "debug"))
    ap.add_argument("--count", type=int, default=400)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="thv-egress-load-")
    os.chmod(work, 0o711)
    layout = os.path.join(work, "probe")
    subprocess.run([os.path.join(a.bin, "make-probe-image"), layout, "app", "app"], check=True,
                   stdout=subprocess.DEVNULL)
    state = os.path.join(work, "state")
    os.makedirs(state, mode=0o700)
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/"), "XDG_RUNTIME_DIR": state,
           "THV_SANDBOX_TUF_REFRESH": "0"}
    srv = serve()
    port = srv.server_address[1]
    url = f"http://127.0.0.1:{port}/"
    sandboxed = Mcp([os.path.join(a.bin, "thv-sandbox"), "run", "--cache-dir", os.path.join(work, "cache"),
                     "--allow-host", f"127.0.0.1:{port}", f"oci:{layout}:app"], env)
    host = Mcp([os.path.join(a.bin, "sandbox-probe")], env)
    failed = False
    rows = []
    try:
        # The proxy is the sandbox's only way out: the same GET sent directly from inside fails.
        inside_direct = sandboxed.get_many(url, 1, 1, "direct")
        print(f"a direct GET from inside the sandbox: {'refused' if inside_direct['failed'] else 'SUCCEEDED'} "
              f"({inside_direct['first_error']})")
        if not inside_direct["failed"]:
            failed = True
        # Warm every path once.
        for via in VIAS:
            sandboxed.get_many(url, 20, 4, via)
        host.get_many(url, 20, 4, "direct")
        for c in [int(x) for x in a.concurrency.split(",")]:
            runs = {via: [] for via in VIAS + ["direct"]}
            for _ in range(a.rounds):
                for via in VIAS:
                    runs[via].append(sandboxed.get_many(url, a.count, c, via))
                runs["direct"].append(host.get_many(url, a.count, c, "direct"))
            for kind, rs in runs.items():
                bad = sum(r["failed"] for r in rs)
                if bad:
                    failed = True
                    print(f"  {kind} c={c}: {bad} GETs failed, first: {next(r['first_error'] for r in rs if r['failed'])}",
                          file=sys.stderr)
                med = lambda k: statistics.median(r[k] for r in rs)
                rps = [r["per_second"] for r in rs]
                rows.append((c, kind, med("per_second"), min(rps), max(rps), med("p50_us") / 1e3,
                             med("p90_us") / 1e3, med("p99_us") / 1e3, sum(r["ok"] for r in rs),
                             a.count * a.rounds))
    finally:
        sandboxed.close()
        host.close()
        srv.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{a.count} GETs per measurement, {a.rounds} rounds interleaved, medians over rounds")
    print("| concurrency | path | GETs/s (min–max) | p50 ms | p90 ms | p99 ms | ok |")
    print("|---|---|---|---|---|---|---|")
    for c, kind, rps, lo, hi, p50, p90, p99, ok, total in rows:
        print(f"| {c} | {LABELS[kind]} | {rps:.0f} ({lo:.0f}–{hi:.0f}) | {p50:.2f} | {p90:.2f} | {p99:.2f} | "
              f"{ok}/{total} |")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
