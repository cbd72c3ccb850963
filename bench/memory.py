#!/usr/bin/env python3
"""Memory of the runtime's own processes beside running servers: N sandboxes of the probe server started at once
(each answered `initialize` and stays connected), then the PSS (proportional set size: shared pages divided among
the processes that map them) of every process of each sandbox, from /proc/PID/smaps_rollup.

Per sandbox the runtime's processes are the supervisor (`thv-sandbox run`, the client's child), the runner keeper
and the runner init; the server (and anything libcontainer leaves between init and server) is listed apart.
Run as root (the runner init is non-dumpable: only root reads its smaps); with --user NAME the sandboxes run as
that user (setpriv). Repeats the whole measurement --rounds times (fresh sandboxes each round) and prints medians.

Usage: bench/memory.py [--servers 10] [--rounds 3] [--user NAME] [--bin DIR] [--env K=V ...]
"""
import argparse, json, os, pwd, shutil, statistics, subprocess, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INIT = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}}) + "\n"
FIELDS = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Private_Dirty")


def rollup(pid):
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if parts[0].rstrip(":") in FIELDS:
                out[parts[0].rstrip(":")] = int(parts[1])  # kB
    return out


def children(pid):
    kids = []
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/children") as f:
                kids += [int(x) for x in f.read().split()]
        except FileNotFoundError:
            pass
    return kids


def comm(pid):
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def threads(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def tree(sup):
    """supervisor → keeper → init → … → server: roles by position (the keeper is the supervisor's only child,
    the init the keeper's only child; everything below the init is the container)."""
    keeper = children(sup)
    assert len(keeper) == 1, ("supervisor children", keeper)
    init = children(keeper[0])
    assert len(init) == 1, ("keeper children", init)
    below, todo = [], children(init[0])
    while todo:
        p = todo.pop()
        below.append(p)
        todo += children(p)
    return {"supervisor": [sup], "keeper": keeper, "init": init, "server": below}


def one_round(n, cmd, env):
    procs = []
    try:
        for _ in range(n):
            p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 env=env)
            p.stdin.write(INIT.encode())
            p.stdin.flush()
            assert b'"result"' in p.stdout.readline()
            procs.append(p)
        time.sleep(0.5)  # let every process settle (lazy frees, thread starts)
        per = []
        for p in procs:
            roles = tree(p.pid)
            row = {}
            for role, pids in roles.items():
                agg = {k: 0 for k in FIELDS}
                for q in pids:
                    for k, v in rollup(q).items():
                        agg[k] += v
                agg["threads"] = sum(threads(q) for q in pids)
                agg["comm"] = ",".join(sorted({comm(q) for q in pids}))
                row[role] = agg
            per.append(row)
        return per
    finally:
        for p in procs:
            p.stdin.close()
        for p in procs:
            p.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--user")
    ap.add_argument("--bin", help="directory with thv-sandbox, make-probe-image (default target/release, built)")
    ap.add_argument("--env", action="append", default=[], help="extra K=V for thv-sandbox (e.g. MALLOC_ARENA_MAX=1)")
    a = ap.parse_args()
    rel = a.bin or os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release")
    if not a.bin:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "thv-sandbox", "-p", "thv-sandbox-e2e",
                        "--bins"], cwd=ROOT, check=True)
    rel = os.path.abspath(rel)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    os.makedirs("/var/lib/thv-bench", mode=0o755, exist_ok=True)
    work = tempfile.mkdtemp(prefix="mem-", dir="/var/lib/thv-bench")
    os.chmod(work, 0o755)
    layout = os.path.join(work, "probe")
    subprocess.run([os.path.join(rel, "make-probe-image"), layout, "app", "app"], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["chmod", "-R", "a+rX", layout], check=True)
    cache = os.path.join(work, "cache")
    wrap, home = [], os.environ.get("HOME", "/")
    if a.user:
        pw = pwd.getpwnam(a.user)
        wrap = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "--"]
        home = pw.pw_dir
        os.mkdir(cache)
        shutil.chown(cache, a.user, a.user)
    env = {"PATH": "/usr/bin:/bin", "HOME": home}
    env.update(dict(kv.split("=", 1) for kv in a.env))
    # setpriv execs in place: the supervisor keeps the pid Popen returns.
    cmd = wrap + [os.path.join(rel, "thv-sandbox"), "run", "--cache-dir", cache, f"oci:{layout}:app"]
    p = subprocess.run(cmd, input=INIT.encode(), capture_output=True, env=env)  # unpack once
    assert p.returncode == 0, p.stderr.decode()
    rounds = [one_round(a.servers, cmd, env) for _ in range(a.rounds)]
    med = statistics.median
    print(f"commit {commit}; binaries {rel}; {a.servers} sandboxes at once, {a.rounds} rounds; "
          f"user {a.user or 'current'}; extra env {a.env or 'none'}")
    print("per sandbox, median over sandboxes and rounds (kB):")
    print(f"  {'role':10s} {'comm':28s} {'thr':>4s} " + " ".join(f"{k:>13s}" for k in FIELDS))
    rows = [r for rnd in rounds for r in rnd]
    for role in ("supervisor", "keeper", "init", "server"):
        c = rows[0][role]["comm"]
        print(f"  {role:10s} {c:28s} {med([r[role]['threads'] for r in rows]):4.0f} "
              + " ".join(f"{med([r[role][k] for r in rows]):13.0f}" for k in FIELDS))
    own = [sum(r[role]["Pss"] for role in ("supervisor", "keeper", "init")) for r in rows]
    own_rss = [sum(r[role]["Rss"] for role in ("supervisor", "keeper", "init")) for r in rows]
    print(f"runtime's share (supervisor + keeper + init) per sandbox: PSS median {med(own) / 1024:.2f} MiB "
          f"(min {min(own) / 1024:.2f}, max {max(own) / 1024:.2f}); RSS median {med(own_rss) / 1024:.2f} MiB")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
