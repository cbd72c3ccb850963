#!/usr/bin/env python3
"""Package-server start benchmark (issue 16): first and warm start of the same npm and PyPI MCP servers, from
launching to the MCP initialize response, through `thv-sandbox run npx://…` / `uvx://…` against bare `npx -y …` /
`uvx …` on the host (uv from PyPI, installed into a scratch venv), and against the installed tree started bare
(`node …/dist/index.js` / `python3 -c …` on the root thv-sandbox installed). Interleaved, medians and spread, the
machine's load average printed (other engineers compile on the same 2 cores).

Usage: bench/package_start.py [--runs N] [--first N] [--bin PATH] [--node-base IMAGE] [--python-base IMAGE]
Defaults: the debug binary in target/, the test base images in /var/cache/thv-e2e-packages/layout.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time, glob

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INIT = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}}) + "\n"
NPM = "@modelcontextprotocol/server-everything@2026.8.31"
PYPI = "mcp-server-time==2026.10.19"

def once(cmd, env):
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    p.stdin.write(INIT.encode()); p.stdin.flush()
    line = b""
    while b'"result"' not in line:  # some servers print a banner line first
        line = p.stdout.readline()
        if not line:
            break
    t1 = time.perf_counter()
    p.stdin.close()
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill(); p.wait()
    err = p.stderr.read().decode(errors="replace")
    assert b'"result"' in line, (cmd, err[-2000:])
    return (t1 - t0) * 1e3

def stats(xs):
    return f"median {statistics.median(xs):8.1f} ms  (min {min(xs):.1f}, max {max(xs):.1f}, n={len(xs)})"

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--first", type=int, default=3)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "debug", "thv-sandbox"))
    ap.add_argument("--node-base", default="oci:/var/cache/thv-e2e-packages/layout:node")
    ap.add_argument("--python-base", default="oci:/var/cache/thv-e2e-packages/layout:python")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="thv-pkg-bench-")
    os.chmod(work, 0o711)
    base_env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "PIP_CERT", "SSL_CERT_FILE")}
    # uv from PyPI, in a scratch venv (the host has none).
    venv = os.path.join(work, "uv-venv")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", "uv"], check=True)
    uvx = os.path.join(venv, "bin", "uvx")
    uv_env = dict(base_env, SSL_CERT_FILE=base_env.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt"),
                  UV_NATIVE_TLS="1")

    def sandbox(cache, pkg, base, args):
        return [a.bin, "run", "--quiet", "--cache-dir", cache, "--base-image", base, pkg] + (["--"] + args if args else [])

    rows = {}
    def add(k, v): rows.setdefault(k, []).append(v)
    print(f"load average before: {open('/proc/loadavg').read().split()[:3]}", flush=True)
    # First runs: a fresh cache / npm cache / uv cache each time, interleaved.
    for i in range(a.first):
        c = os.path.join(work, f"first-{i}"); os.makedirs(c); os.chmod(c, 0o711)
        add("thv npx first", once(sandbox(c, "npx://" + NPM, a.node_base, ["stdio"]), base_env))
        add("bare npx -y first", once(["npx", "-y", NPM, "stdio"], dict(base_env, npm_config_cache=os.path.join(c, "npm"))))
        add("thv uvx first", once(sandbox(c, "uvx://" + PYPI, a.python_base, []), base_env))
        add("bare uvx first", once([uvx, PYPI.replace("==", "@")], dict(uv_env, UV_CACHE_DIR=os.path.join(c, "uv"))))
        shutil.rmtree(c, ignore_errors=True)
    # Warm runs: one installed cache, one npm cache, one uv cache.
    c = os.path.join(work, "warm"); os.makedirs(c); os.chmod(c, 0o711)
    npm_cache, uv_cache = os.path.join(c, "npm"), os.path.join(c, "uv")
    once(sandbox(c, "npx://" + NPM, a.node_base, ["stdio"]), base_env)
    once(sandbox(c, "uvx://" + PYPI, a.python_base, []), base_env)
    once(["npx", "-y", NPM, "stdio"], dict(base_env, npm_config_cache=npm_cache))
    once([uvx, PYPI.replace("==", "@")], dict(uv_env, UV_CACHE_DIR=uv_cache))
    node_root = glob.glob(os.path.join(c, "roots-v1", "*-pkg-*", "rootfs", "opt", "thv-package", "node_modules"))
    tree = [r for r in node_root if os.path.isdir(os.path.join(r, "@modelcontextprotocol"))][0]
    for _ in range(a.runs):
        add("thv npx warm", once(sandbox(c, "npx://" + NPM, a.node_base, ["stdio"]), base_env))
        add("bare npx -y warm", once(["npx", "-y", NPM, "stdio"], dict(base_env, npm_config_cache=npm_cache)))
        add("bare node on the installed tree", once(["node", os.path.join(tree, "@modelcontextprotocol/server-everything/dist/index.js"), "stdio"], base_env))
        add("thv uvx warm", once(sandbox(c, "uvx://" + PYPI, a.python_base, []), base_env))
        add("bare uvx warm", once([uvx, PYPI.replace("==", "@")], dict(uv_env, UV_CACHE_DIR=uv_cache)))
    print(f"load average after: {open('/proc/loadavg').read().split()[:3]}; {os.cpu_count()} cpus; uid {os.getuid()}")
    for k, v in rows.items():
        print(f"{k:34s} {stats(v)}")
    shutil.rmtree(work, ignore_errors=True)

if __name__ == "__main__":
    main()
