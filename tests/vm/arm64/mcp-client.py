#!/usr/bin/env python3
"""An MCP client over stdio for tests/vm/arm64.sh: starts COMMAND... (here `thv-sandbox run oci:LAYOUT:TAG`),
sends `initialize`, `notifications/initialized`, then `tools/call echo` and `tools/call probe` (the sandbox-probe's
report of its own process: namespaces, ids, seccomp), closes stdin and waits for the exit. Checks every answer;
prints each exchange as JSON lines on stdout and exits 1 at the first wrong or missing answer.

  mcp-client.py TIMEOUT_S COMMAND...
"""
import json
import os
import platform
import select
import subprocess
import sys
import time

timeout = float(sys.argv[1])
command = sys.argv[2:]
proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
buf = b""


def fail(msg):
    print(json.dumps({"error": msg}), flush=True)
    proc.kill()
    proc.wait()
    sys.exit(1)


def send(msg):
    proc.stdin.write((json.dumps(msg) + "\n").encode())
    proc.stdin.flush()


def answer(req_id, limit):
    """The next line that answers req_id (notifications in between are shown and skipped)."""
    global buf
    deadline = time.monotonic() + limit
    while True:
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                fail(f"no answer to id {req_id} within {limit} s")
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    fail(f"the server's stdout closed before the answer to id {req_id} (exit {proc.wait()})")
                buf += chunk
        line, buf = buf.split(b"\n", 1)
        msg = json.loads(line)
        if msg.get("id") == req_id:
            return msg
        print(json.dumps({"notification": msg}), flush=True)


start = time.monotonic()
send({"jsonrpc": "2.0", "id": 1, "method": "initialize",
      "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                 "clientInfo": {"name": "arm64-vm-client", "version": "1"}}})
init = answer(1, timeout)
elapsed = round(time.monotonic() - start, 1)
print(json.dumps({"initialize": init, "seconds": elapsed, "client_machine": platform.machine()}), flush=True)
result = init.get("result") or fail(f"initialize: no result: {init}")
if result.get("serverInfo", {}).get("name") != "sandbox-probe" or result.get("protocolVersion") != "2025-06-18":
    fail(f"initialize: not the probe's answer: {result}")
send({"jsonrpc": "2.0", "method": "notifications/initialized"})

text = f"hello from {platform.machine()}"
send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": text}}})
echo = answer(2, 120)
print(json.dumps({"echo": echo}), flush=True)
if echo.get("result", {}).get("content", [{}])[0].get("text") != text:
    fail(f"echo: {echo}")

send({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "probe", "arguments": {}}})
probe = answer(3, 120)
try:
    report = json.loads(probe["result"]["content"][0]["text"])
except (KeyError, IndexError, ValueError) as e:
    fail(f"probe: {e!r}: {probe}")
status = report.get("status", {})
summary = {k: report.get(k) for k in ("credentials", "uid_map", "gid_map", "hostname", "namespaces", "root_writable")}
summary["status"] = {k: status.get(k) for k in ("Seccomp", "Seccomp_filters", "NoNewPrivs", "CapEff", "CapBnd")}
print(json.dumps({"probe": summary}), flush=True)
# Inside the sandbox: namespaces of its own (not this client's), a seccomp filter (mode 2), no_new_privs.
for ns in ("user", "mnt", "pid", "ipc", "uts"):
    if report.get("namespaces", {}).get(ns) == os.readlink(f"/proc/self/ns/{ns}"):
        fail(f"probe: the server shares the client's {ns} namespace")
if str(status.get("Seccomp")) != "2" or str(status.get("NoNewPrivs")) != "1":
    fail(f"probe: the server is not under a seccomp filter with no_new_privs: {summary['status']}")

proc.stdin.close()
try:
    rc = proc.wait(timeout=120)
except subprocess.TimeoutExpired:
    fail("the run did not exit within 120 s of its stdin closing")
print(json.dumps({"exit": rc}), flush=True)
sys.exit(0 if rc == 0 else 1)
