#!/usr/bin/env python3
"""Real-server start with and without the bytecode step (issue 14): from launching `thv-sandbox run` on an
already-unpacked root to the MCP initialize response of `mcp-server-time` (PyPI, Debian 12 image built by
tests/images/build-real-servers.sh), for

  time          the image as built (pip compiled its bytecode; oci-from-dirs truncated the mtimes)
  time-nopyc    the same image with every __pycache__ of the app layer removed (as `uv` installs ship it)

each run with the step (default) and with --no-bytecode, so four variants, interleaved (the order rotates every
round), medians and spread. The first run of each variant builds its root; that time is printed too (the cost of
the step at unpack: the compile of the image's sources in the sandbox).

Usage: bench/bytecode_start.py [--runs N] [--images DIR] [--bin PATH]
  --bin defaults to target/release/thv-sandbox if built, else target/debug/thv-sandbox.
"""
import argparse, gzip, hashlib, io, json, os, shutil, statistics, subprocess, sys, tarfile, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INIT = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}}) + "\n"


def once(cmd, env):
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    p.stdin.write(INIT.encode()); p.stdin.flush()
    line = p.stdout.readline()
    t1 = time.perf_counter()
    p.stdin.close()
    err = p.stderr.read().decode()
    p.wait()
    assert b'"result"' in line, (line, err)
    return (t1 - t0) * 1e3


def blob(layout, digest):
    return os.path.join(layout, "blobs", "sha256", digest.split(":", 1)[1])


def put(layout, data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    with open(blob(layout, d), "wb") as f:
        f.write(data)
    return d


def without_bytecode(real, out):
    """Copies the layout `real` to `out` and adds the tag time-nopyc: time with the app layer's __pycache__ gone."""
    shutil.copytree(real, out)
    index = json.load(open(os.path.join(out, "index.json")))
    entry = next(m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "time")
    manifest = json.load(open(blob(out, entry["digest"])))
    config = json.load(open(blob(out, manifest["config"]["digest"])))
    app = manifest["layers"][-1]
    src = tarfile.open(fileobj=gzip.open(blob(out, app["digest"])), mode="r|")
    raw = io.BytesIO()
    dst = tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT)
    for m in src:
        if "__pycache__" in m.name.split("/"):
            continue
        dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    dst.close()
    tar = raw.getvalue()
    gz = gzip.compress(tar, 1)
    layer = {"mediaType": app["mediaType"], "digest": put(out, gz), "size": len(gz)}
    config["rootfs"]["diff_ids"][-1] = "sha256:" + hashlib.sha256(tar).hexdigest()
    cbytes = json.dumps(config).encode()
    manifest["config"] = {"mediaType": manifest["config"]["mediaType"], "digest": put(out, cbytes), "size": len(cbytes)}
    manifest["layers"][-1] = layer
    mbytes = json.dumps(manifest).encode()
    index["manifests"].append({"mediaType": entry["mediaType"], "digest": put(out, mbytes), "size": len(mbytes),
                               "annotations": {"org.opencontainers.image.ref.name": "time-nopyc"}})
    json.dump(index, open(os.path.join(out, "index.json"), "w"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--images", default=os.environ.get("THV_E2E_REAL_IMAGES", "/var/cache/thv-e2e-real"))
    ap.add_argument("--bin")
    a = ap.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    exe = a.bin or next(p for p in (os.path.join(target, "release", "thv-sandbox"),
                                    os.path.join(target, "debug", "thv-sandbox")) if os.path.exists(p))
    work = tempfile.mkdtemp(prefix="thv-bench-bytecode-")
    os.chmod(work, 0o711)
    try:
        layout = os.path.join(work, "layout")
        without_bytecode(os.path.join(a.images, "layout"), layout)
        cache = os.path.join(work, "cache")
        env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/"), "THV_SANDBOX_TUF_REFRESH": "0",
               "THV_SANDBOX_IMAGE_VERIFICATION": "disabled"}
        variants = {}
        for tag in ("time", "time-nopyc"):
            for step in ("step", "no-step"):
                cmd = [exe, "run", "--cache-dir", cache] + (["--no-bytecode"] if step == "no-step" else []) \
                    + [f"oci:{layout}:{tag}"]
                variants[f"{tag} {step}"] = cmd
        print(f"thv-sandbox: {exe}; commit {subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True).stdout.strip()}")
        print(f"machine: {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}, uid {os.getuid()}")
        for name, cmd in variants.items():
            print(f"first run (builds the root) {name:20s} {once(cmd, env):8.0f} ms")
        results = {name: [] for name in variants}
        names = list(variants)
        for i in range(a.runs):
            order = names[i % len(names):] + names[:i % len(names)]
            for name in order:
                results[name].append(once(variants[name], env))
        print(f"warm start, launch -> initialize response, {a.runs} runs each, interleaved (order rotated):")
        for name, ms in results.items():
            q = statistics.quantiles(ms, n=4)
            print(f"  {name:20s} median {statistics.median(ms):7.1f} ms  IQR {q[0]:.1f}-{q[2]:.1f}  "
                  f"min {min(ms):.1f}  max {max(ms):.1f}")
        print(f"load at end {os.getloadavg()[0]:.1f}")
    finally:
        subprocess.run(["chmod", "-R", "u+w", work])
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
