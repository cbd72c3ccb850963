#!/usr/bin/env python3
"""Real-server start benchmark: the PyPI and npm servers the e2e suite builds (tests/images/build-real-servers.sh,
layout in /var/cache/thv-e2e-real/layout, tags `time` and `everything`), launch → MCP `initialize` answered, for

- bare:        the image's own root, extracted here from the layout's layers (Python's tarfile, numeric owners,
               mtimes as in the layers), the server started as a plain host process with
               `setsid chroot --userspec=65534:65534 ROOT env -i -C WORKDIR ENV… ENTRYPOINT` (the image's user, workdir,
               environment and entrypoint): the same interpreter and the same installed files, bytecode as the
               image ships it (pip compiled it at install; Debian's packages compiled the stdlib at install);
- runc:        runc as root (`runc spec`, read-only root = the same extracted root, the image's entrypoint, env,
               workdir and user). Rootless runc was tried and refused to start here (`fchown fd 7: operation not
               permitted` on the stdio pipes, also with pipes of the user's own);
- podman:      `podman run --rm -i --network none` of the image pulled from the layout (`oci:` transport) into a
               private storage (root: podman's rootless mode needs a configured user session);
- thv-sandbox: `thv-sandbox run oci:LAYOUT:TAG` as the unprivileged user and as root, each on a warm cache of its
               own (unpacked once first).

Each variant is started --runs times, all variants interleaved with their order rotated every round; medians,
quartiles, min and max. The client is this script: it writes one `initialize` line and times the first line of
the answer (no MCP SDK).

Usage (root): bench/real_servers.py [--runs 15] [--user thvsbx-sub] [--bin DIR] [--servers time,everything]
              [--no-podman] [--no-runc] [--root-variant FLAGS]... [--baseline DIR]
"""
import argparse, gzip, json, os, pwd, shutil, statistics, subprocess, tarfile, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INIT = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}}) + "\n"


def once(cmd, env):
    t0 = time.monotonic_ns()
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    p.stdin.write(INIT.encode())
    p.stdin.flush()
    line = p.stdout.readline()
    t1 = time.monotonic_ns()
    ok = b'"result"' in line
    p.stdin.close()
    p.stdin = None  # closed: the server sees EOF and ends
    try:
        err = p.communicate(timeout=30)[1].decode(errors="replace")
    except subprocess.TimeoutExpired:
        p.kill()
        err = p.communicate()[1].decode(errors="replace")
    assert ok, (cmd, line, err[-2000:])
    return (t1 - t0) / 1e6


def serve():
    """--serve: time the commands sent on stdin (one JSON [cmd, env] a line) as the user this helper runs as, so
    that the server's pipes are the user's own (rootless runc chowns its stdio to the container's root)."""
    import sys
    for line in sys.stdin:
        cmd, env = json.loads(line)
        try:
            print(json.dumps(once(cmd, env)), flush=True)
        except AssertionError as e:
            print(json.dumps(str(e)), flush=True)


class AsUser:
    def __init__(self, wrap, env):
        self.p = subprocess.Popen(wrap + ["/usr/bin/python3", os.path.abspath(__file__), "--serve"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)

    def once(self, cmd, env):
        self.p.stdin.write(json.dumps([cmd, env]) + "\n")
        self.p.stdin.flush()
        r = json.loads(self.p.stdout.readline())
        assert isinstance(r, float), r
        return r


def blob(layout, digest):
    return os.path.join(layout, "blobs", *digest.split(":"))


def image(layout, tag):
    idx = json.load(open(os.path.join(layout, "index.json")))
    for m in idx["manifests"]:
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            man = json.load(open(blob(layout, m["digest"])))
            cfg = json.load(open(blob(layout, man["config"]["digest"])))
            return man, cfg["config"]
    raise SystemExit(f"no tag {tag} in {layout}")


def extract(layout, man, root, done):
    for layer in man["layers"]:
        if layer["digest"] in done:
            continue
        with tarfile.open(blob(layout, layer["digest"]), "r:gz") as t:
            for m in t:
                name = os.path.basename(m.name)
                assert not name.startswith(".wh."), f"whiteouts not handled here: {m.name}"
            t.extractall(root, numeric_owner=True, filter="fully_trusted")
        done.add(layer["digest"])


def stats(v):
    q = statistics.quantiles(v, n=4)
    return f"median {statistics.median(v):8.1f} ms  IQR {q[0]:7.1f}–{q[2]:7.1f}  min {min(v):7.1f}  max {max(v):7.1f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--user", default="thvsbx-sub")
    ap.add_argument("--bin", help="directory with thv-sandbox (default target/release, built)")
    ap.add_argument("--layout", default=os.environ.get("THV_E2E_REAL_IMAGES", "/var/cache/thv-e2e-real") + "/layout")
    ap.add_argument("--servers", default="time,everything")
    ap.add_argument("--no-podman", action="store_true")
    ap.add_argument("--no-runc", action="store_true")
    ap.add_argument("--baseline", metavar="DIR",
                    help="another build's thv-sandbox (DIR/thv-sandbox) as one more root variant, on a cache of its own")
    ap.add_argument("--root-variant", action="append", default=[], metavar="FLAGS",
                    help="one more thv-sandbox variant as root with these flags (e.g. '--cpus 2'); repeatable")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        return serve()
    assert os.getuid() == 0, "run as root (chroot, podman)"
    rel = a.bin or os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release")
    if not a.bin:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "thv-sandbox"], cwd=ROOT, check=True)
    thv = os.path.join(os.path.abspath(rel), "thv-sandbox")
    pw = pwd.getpwnam(a.user)
    as_user = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "--"]
    user_env = {"PATH": "/usr/sbin:/usr/bin:/bin", "HOME": pw.pw_dir}
    helper = AsUser(as_user, user_env)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    # Not under /tmp or /var/tmp: thv-sandbox refuses a cache whose parents others may write to.
    os.makedirs("/var/lib/thv-bench", mode=0o755, exist_ok=True)
    work = tempfile.mkdtemp(prefix="real-", dir="/var/lib/thv-bench")
    os.chmod(work, 0o755)
    try:
        root = os.path.join(work, "root")
        os.mkdir(root)
        done = set()
        variants, info = [], []
        cache = os.path.join(work, "cache")
        os.mkdir(cache, 0o700)
        shutil.chown(cache, a.user, a.user)
        runc_state = os.path.join(work, "runc")
        os.mkdir(runc_state, 0o700)
        root_cache = os.path.join(work, "cache-root")
        os.mkdir(root_cache, 0o700)
        podman = ["podman", "--root", os.path.join(work, "podman"), "--runroot", os.path.join(work, "podman-run"),
                  "--storage-driver", "vfs"]
        for tag in a.servers.split(","):
            man, cfg = image(a.layout, tag)
            extract(a.layout, man, root, done)
            argv = (cfg.get("Entrypoint") or []) + (cfg.get("Cmd") or [])
            env = cfg.get("Env", [])
            wd = cfg.get("WorkingDir", "/")
            uid, gid = cfg.get("User", "0:0").split(":")
            # setsid: a session of its own, as runc's and thv-sandbox's container init give the server, so that
            # with autogroup scheduling (kernel.sched_autogroup_enabled=1) bare gets its own CPU share too instead
            # of sharing the benchmark's session with whatever else runs in it.
            bare = ["setsid", "chroot", f"--userspec={uid}:{gid}", root, "/usr/bin/env", "-i", "-C", wd] + env + argv
            variants.append((tag, "bare", bare, {"PATH": "/usr/sbin:/usr/bin:/bin"}, None))
            if not a.no_runc:
                bundle = os.path.join(work, f"bundle-{tag}")
                os.mkdir(bundle)
                subprocess.run(["runc", "spec"], cwd=bundle, check=True)
                spec = json.load(open(os.path.join(bundle, "config.json")))
                spec["root"] = {"path": root, "readonly": True}
                spec["process"].update(args=argv, env=env, cwd=wd, terminal=False,
                                       user={"uid": int(uid), "gid": int(gid)})
                json.dump(spec, open(os.path.join(bundle, "config.json"), "w"))
                subprocess.run(["chmod", "-R", "a+rX", bundle], check=True)
                n = [0]

                def runc_cmd(tag=tag, bundle=bundle):
                    n[0] += 1
                    return ["runc", "--root", runc_state, "run", "--bundle", bundle, f"{tag}-{n[0]}"]
                variants.append((tag, "runc (root)", runc_cmd, {"PATH": "/usr/sbin:/usr/bin:/bin"}, None))
            if not a.no_podman:
                ref = f"localhost/thv-bench-{tag}:latest"
                subprocess.run(podman + ["pull", "-q", f"oci:{a.layout}:{tag}"], check=True,
                               stdout=subprocess.DEVNULL)
                img = subprocess.run(podman + ["images", "-q", "--no-trunc"], capture_output=True,
                                     text=True).stdout.split()
                subprocess.run(podman + ["tag", img[0], ref], check=False)
                variants.append((tag, "podman (root)", podman + ["run", "--rm", "-i", "--network", "none", "--ulimit", "host", ref],
                                 {"PATH": "/usr/sbin:/usr/bin:/bin", "HOME": "/root"}, None))
            sb = [thv, "run", "--quiet", "--cache-dir", cache, f"oci:{a.layout}:{tag}"]
            helper.once(sb, user_env)  # unpack once (stdin stays open until the answer)
            variants.append((tag, "thv-sandbox (user)", sb, user_env, helper))
            sbr = [thv, "run", "--quiet", "--cache-dir", root_cache, f"oci:{a.layout}:{tag}"]
            root_env = {"PATH": "/usr/sbin:/usr/bin:/bin", "HOME": "/root"}
            once(sbr, root_env)  # unpack once
            variants.append((tag, "thv-sandbox (root)", sbr, root_env, None))
            if a.baseline:
                base_cache = os.path.join(work, "cache-baseline")
                if not os.path.isdir(base_cache):
                    os.mkdir(base_cache, 0o700)
                sbb = [os.path.join(a.baseline, "thv-sandbox")] + sbr[1:]
                sbb[sbb.index(root_cache)] = base_cache
                once(sbb, root_env)  # its own unpack
                variants.append((tag, "thv-sandbox (root, baseline)", sbb, root_env, None))
            for flags in a.root_variant:
                extra = sbr[:2] + flags.split() + sbr[2:]
                variants.append((tag, f"thv-sandbox (root, {flags})", extra, root_env, None))
            ver = subprocess.run(["chroot", root] + (["python3", "--version"] if "python3" in argv[0]
                                                     else ["node", "--version"]),
                                 capture_output=True, text=True).stdout.strip()
            info.append(f"{tag}: {' '.join(argv)} ({ver})")
        subprocess.run(["chmod", "a+rX", root], check=True)
        # One untimed start of each variant (first-time effects: page cache, podman's first container).
        def run(cmd, env, who):
            cmd = cmd() if callable(cmd) else cmd
            return who.once(cmd, env) if who else once(cmd, env)
        for v in list(variants):
            try:
                run(v[2], v[3], v[4])
            except AssertionError as e:
                if not v[1].startswith("podman"):
                    raise
                print(f"podman does not run here, left out: {str(e)[-300:]}")
                variants.remove(v)
        res = {(t, k): [] for t, k, *_ in variants}
        load0 = os.getloadavg()
        for i in range(a.runs):
            for j in range(len(variants)):
                tag, kind, cmd, env, who = variants[(i + j) % len(variants)]
                res[(tag, kind)].append(run(cmd, env, who))
        load1 = os.getloadavg()
        print(f"commit {commit}; {a.runs} runs of each variant, interleaved, order rotated; {os.cpu_count()} cpus; "
              f"load average {load0[0]:.2f} before, {load1[0]:.2f} after; user {a.user}")
        for line in info:
            print("  " + line)
        med = statistics.median
        for tag in a.servers.split(","):
            print(f"\n== {tag}")
            b = med(res[(tag, "bare")])
            for (t, k), v in res.items():
                if t == tag:
                    print(f"  {k:24s} {stats(v)}   {100 * (med(v) / b - 1):+6.1f} % vs bare")
            print("  all runs (ms): " + "; ".join(f"{k}: " + ", ".join(f"{x:.0f}" for x in v)
                                            for (t, k), v in res.items() if t == tag))
    finally:
        if not a.no_podman:
            subprocess.run(podman + ["system", "reset", "-f"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
