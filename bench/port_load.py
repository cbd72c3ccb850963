#!/usr/bin/env python3
"""Load on the `--port` bridge (issue 18): a stdio server (the test probe) exposed as streamable HTTP by
`thv-sandbox run --port`, under concurrent clients and successive sessions.

1. sessions: S sessions one after another, each `initialize` (a fresh sandbox behind the port), `initialized`, one
   `tools/call echo`, `DELETE`. Reported: initialize (the sandbox start) and tool-call latency percentiles; the
   processes of the run (sandboxed servers included) and the directories of its state and cache, before and after
   (they must not grow: each session's server is gone with its session).
2. concurrent: in one session, N clients at once (a thread and a keep-alive HTTP connection each), each sending R
   `tools/call echo` requests one after another. Reported per N: per-request latency p50/p90/p99 and requests per
   second. The probe answers one request at a time (a stdio server), so this measures the bridge's queueing and
   matching of answers to requests, not parallel work.
3. takeover: an `initialize` while a session is open ends that session (one session at a time, README "--port"):
   the old session's next request must get 404.

Usage: bench/port_load.py [--bin DIR] [--sessions S] [--clients 1,4,16] [--requests R]
Defaults: target/debug binaries (cargo build -p thv-sandbox -p thv-sandbox-e2e --bins), 20 sessions, 1,4,16 clients,
50 requests each. Exit 1 if a request fails or something leaks.
"""
import argparse, http.client, json, os, secrets, shutil, socket, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load import pct, snapshot  # noqa: E402

PROTOCOL = "2025-06-18"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """One MCP client over one keep-alive HTTP connection to the bridge."""

    def __init__(self, port, token, session=None):
        self.port, self.token, self.session = port, token, session
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def headers(self):
        h = {"Host": f"127.0.0.1:{self.port}", "Authorization": f"Bearer {self.token}",
             "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
             "MCP-Protocol-Version": PROTOCOL}
        if self.session:
            h["Mcp-Session-Id"] = self.session
        return h

    def post(self, message):
        """(status, the JSON-RPC answer or None, seconds)."""
        t0 = time.perf_counter()
        self.conn.request("POST", "/mcp", body=json.dumps(message), headers=self.headers())
        r = self.conn.getresponse()
        body = r.read()
        dt = time.perf_counter() - t0
        sid = r.getheader("Mcp-Session-Id")
        if sid:
            self.session = sid
        if r.status != 200 or not body:
            return r.status, None, dt
        if (r.getheader("Content-Type") or "").startswith("text/event-stream"):
            data = [l[5:].strip() for l in body.decode().splitlines() if l.startswith("data:")]
            answers = [json.loads(d) for d in data if d]
            answer = next((a for a in answers if a.get("id") == message.get("id")), None)
        else:
            answer = json.loads(body)
        return r.status, answer, dt

    def delete(self):
        self.conn.request("DELETE", "/mcp", headers=self.headers())
        r = self.conn.getresponse()
        r.read()
        return r.status

    def close(self):
        self.conn.close()


def initialize(c, i=0):
    status, answer, dt = c.post({"jsonrpc": "2.0", "id": i, "method": "initialize", "params": {
        "protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "port-load", "version": "0"}}})
    ok = status == 200 and answer is not None and "result" in answer
    if ok:
        c.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
    return ok, dt


def echo(c, i, text):
    status, answer, dt = c.post({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                                 "params": {"name": "echo", "arguments": {"text": text}}})
    ok = (status == 200 and answer is not None
          and answer.get("result", {}).get("content", [{}])[0].get("text") == text)
    return ok, dt, status


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "debug"))
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--requests", type=int, default=50)
    a = ap.parse_args()
    thv = os.path.join(a.bin, "thv-sandbox")
    work = tempfile.mkdtemp(prefix="thv-port-load-")
    os.chmod(work, 0o711)
    layout = os.path.join(work, "probe")
    subprocess.run([os.path.join(a.bin, "make-probe-image"), layout, "app", "app"], check=True,
                   stdout=subprocess.DEVNULL)
    state, cache = os.path.join(work, "state"), os.path.join(work, "cache")
    os.makedirs(state, mode=0o700)
    os.makedirs(os.path.join(work, "tmp"))
    token = secrets.token_hex(32)
    token_file = os.path.join(work, "token")
    with open(os.open(token_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write(token)
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/"), "XDG_RUNTIME_DIR": state,
           "THV_SANDBOX_TUF_REFRESH": "0", "TMPDIR": os.path.join(work, "tmp")}
    port = free_port()
    log = open(os.path.join(work, "run.log"), "wb")
    run = subprocess.Popen([thv, "run", "--cache-dir", cache, "--port", str(port), "--port-token-file", token_file,
                            f"oci:{layout}:app"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=log, env=env)
    failed = False
    try:
        deadline = time.time() + 120
        while b"serving MCP" not in open(os.path.join(work, "run.log"), "rb").read():
            if run.poll() is not None or time.time() > deadline:
                sys.exit("the run did not start serving: " + open(os.path.join(work, "run.log")).read()[-2000:])
            time.sleep(0.1)

        # 1. successive sessions
        c = Client(port, token)
        initialize(c)
        echo(c, 1, "warm")
        c.delete()
        c.close()
        time.sleep(0.5)
        before = snapshot(work, cache, state)
        init_s, call_s, bad = [], [], 0
        for s in range(a.sessions):
            c = Client(port, token)
            ok, dt = initialize(c)
            init_s.append(dt)
            ok2, dt2, _ = echo(c, 1, f"session {s}")
            call_s.append(dt2)
            st = c.delete()
            c.close()
            bad += (not ok) + (not ok2) + (st not in (200, 202, 204))
        time.sleep(1.0)
        after = snapshot(work, cache, state)
        print(f"sessions: {a.sessions} in a row, {a.sessions * 3 - bad}/{a.sessions * 3} steps ok; "
              f"initialize (a new sandbox) p50 {pct(init_s, 50) * 1e3:.0f} ms, p90 {pct(init_s, 90) * 1e3:.0f} ms, "
              f"max {max(init_s) * 1e3:.0f} ms; first tools/call p50 {pct(call_s, 50) * 1e3:.1f} ms, "
              f"p90 {pct(call_s, 90) * 1e3:.1f} ms")
        print("  before:", before)
        print("  after: ", after)
        grown = [k for k in ("processes", "dirs", "tmp_entries") if after[k] > before[k]]
        if bad or grown:
            failed = True
            print(f"  FAILED: {bad} steps failed; grew: {grown}", file=sys.stderr)

        # 2. concurrent clients in one session
        for n in [int(x) for x in a.clients.split(",")]:
            lead = Client(port, token)
            initialize(lead)
            lat, errors = [], []
            lock = threading.Lock()
            go = threading.Barrier(n)

            def worker(w):
                c = Client(port, token, lead.session)
                go.wait()
                mine = []
                for r in range(a.requests):
                    ok, dt, st = echo(c, 1000 * (w + 1) + r, f"w{w} r{r}")
                    mine.append(dt)
                    if not ok:
                        with lock:
                            errors.append(st)
                c.close()
                with lock:
                    lat.extend(mine)

            t0 = time.perf_counter()
            ts = [threading.Thread(target=worker, args=(w,)) for w in range(n)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            wall = time.perf_counter() - t0
            lead.delete()
            lead.close()
            total = n * a.requests
            print(f"concurrent: {n} clients x {a.requests} tools/call in one session: {total - len(errors)}/{total} ok; "
                  f"{total / wall:.0f} req/s; latency p50 {pct(lat, 50) * 1e3:.2f} ms, p90 {pct(lat, 90) * 1e3:.2f} ms, "
                  f"p99 {pct(lat, 99) * 1e3:.2f} ms, max {max(lat) * 1e3:.1f} ms")
            if errors:
                failed = True
                print(f"  FAILED requests: {len(errors)} (statuses {sorted(set(errors))})", file=sys.stderr)

        # 3. takeover: a second initialize ends the open session
        first = Client(port, token)
        initialize(first)
        ok1, _, _ = echo(first, 1, "first")
        second = Client(port, token)
        ok2, dt = initialize(second)
        _, _, st = echo(first, 2, "first again")
        ok3, _, _ = echo(second, 3, "second")
        print(f"takeover: second initialize {dt * 1e3:.0f} ms; the first session's next request got {st} "
              f"(404 expected); the second session serves: {ok3}")
        if not (ok1 and ok2 and ok3 and st == 404):
            failed = True
            print("  FAILED takeover", file=sys.stderr)
        second.delete()
        first.close()
        second.close()
    finally:
        run.terminate()
        try:
            run.wait(timeout=30)
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait()
        log.close()
    left = snapshot(work, cache, state)["processes"]
    print(f"after the run ended: {left} processes of it left")
    if left:
        failed = True
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
