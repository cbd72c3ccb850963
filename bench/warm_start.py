#!/usr/bin/env python3
"""Warm-start benchmark: from launching `thv-sandbox run` on an already-unpacked image to the MCP initialize
response, against the same server binary started bare on the host, as root and as an unprivileged user, all four
variants interleaved in one sitting with their order rotated every round.

With the phase clock: every sandboxed run has THV_SANDBOX_TRACE=1, so each process of the start (supervisor,
keeper, runner init, the container's init up to the server's execve) prints marks stamped with CLOCK_MONOTONIC,
the clock of this script's time.monotonic_ns(); the script places them on the same time line as its own spawn and
the response, and prints the median offset of every mark from the spawn and the median step between marks.

Usage (as root): bench/warm_start.py [--runs N] [--user NAME|--no-user] [--no-build] [--bin DIR]
  --user NAME  the unprivileged user (default thvsbx-sub; started with setpriv, an exec in the same process, for
               its bare and its sandboxed runs alike). The binaries and the work dir must be readable by it.
  --bin DIR    take thv-sandbox, sandbox-probe and make-probe-image from DIR (default: target/release, built)
  --baseline DIR  also run the thv-sandbox in DIR (another commit's build) as a fifth/sixth variant, interleaved
               with the others on a cache of its own: the difference between two commits in one sitting
"""
import argparse, json, os, pwd, shutil, statistics, subprocess, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INIT = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}}) + "\n"
TRACE = "thv-sandbox trace: "


def once(cmd, env):
    """Spawn → first line of the initialize response. Returns (ms, marks as [(ms from spawn, label)], stderr)."""
    t0 = time.monotonic_ns()
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    p.stdin.write(INIT.encode())
    p.stdin.flush()
    line = p.stdout.readline()
    t1 = time.monotonic_ns()
    assert b'"result"' in line, line
    p.stdin.close()
    err = p.stderr.read().decode()
    p.wait()
    assert p.returncode == 0, (p.returncode, err)
    marks, seen = [], set()
    for l in err.splitlines():
        if l.startswith(TRACE):
            ns, _pid, label = l[len(TRACE):].split(" ", 2)
            if label in seen:  # `main` again: the runner's own start after its exec
                label += " (runner exec'd)"
            seen.add(label)
            marks.append(((int(ns) - t0) / 1e6, label))
    return (t1 - t0) / 1e6, marks, err


def stats(v):
    q = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3
    return f"median {statistics.median(v):7.2f} ms  IQR {q[0]:.2f}–{q[2]:.2f}  min {min(v):.2f}  max {max(v):.2f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--bin", help="directory with thv-sandbox, sandbox-probe, make-probe-image")
    ap.add_argument("--user", default="thvsbx-sub")
    ap.add_argument("--no-user", action="store_true", help="only the current user")
    ap.add_argument("--no-root", action="store_true",
                    help="as root, only the --user: no root runs between the user's (see BENCHMARKS.md: root's runs "
                         "leave kernel work behind that slows the run after them)")
    ap.add_argument("--gap", type=float, default=0.0,
                    help="seconds of quiet before each run (an MCP client starts a server after a quiet spell, not "
                         "right after another sandbox's exit)")
    ap.add_argument("--baseline", help="directory with another commit's thv-sandbox, run interleaved")
    a = ap.parse_args()
    rel = a.bin or os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release")
    if not a.bin and not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "thv-sandbox", "-p", "thv-sandbox-e2e",
                        "--bins"], cwd=ROOT, check=True)
    rel = os.path.abspath(rel)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    # Not under /tmp: thv-sandbox refuses a cache whose parents others may write to.
    base = "/var/lib/thv-bench" if os.getuid() == 0 else os.path.expanduser("~/.cache")
    os.makedirs(base, mode=0o755, exist_ok=True)
    work = tempfile.mkdtemp(prefix="warm-", dir=base)
    os.chmod(work, 0o755)
    layout = os.path.join(work, "probe")
    subprocess.run([os.path.join(rel, "make-probe-image"), layout, "app", "app"], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["chmod", "-R", "a+rX", layout], check=True)
    base_env = {"PATH": "/usr/bin:/bin"}
    users = [("root" if os.getuid() == 0 else pwd.getpwuid(os.getuid()).pw_name, [], os.environ.get("HOME", "/"))]
    if a.no_root and os.getuid() == 0:
        users = []
    if not a.no_user and os.getuid() == 0:
        pw = pwd.getpwnam(a.user)
        users.append((a.user, ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "--"],
                      pw.pw_dir))
    variants = []
    for who, wrap, home in users:
        cache = os.path.join(work, f"cache-{who}")
        if wrap:
            os.mkdir(cache)
            shutil.chown(cache, a.user, a.user)
            os.chmod(cache, 0o700)
        env = dict(base_env, HOME=home, THV_SANDBOX_TRACE="1")
        sandbox = wrap + [os.path.join(rel, "thv-sandbox"), "run", "--cache-dir", cache, f"oci:{layout}:app"]
        once(sandbox, env)  # unpack once: the benchmark is the warm start
        variants.append((who, "bare", wrap + [os.path.join(rel, "sandbox-probe")], dict(base_env, HOME=home)))
        variants.append((who, "sandbox", sandbox, env))
        if a.baseline:
            bcache = cache + "-baseline"
            os.mkdir(bcache, 0o700)
            if wrap:
                shutil.chown(bcache, a.user, a.user)
            base_cmd = wrap + [os.path.join(os.path.abspath(a.baseline), "thv-sandbox"), "run", "--cache-dir",
                               bcache, f"oci:{layout}:app"]
            once(base_cmd, env)
            variants.append((who, "baseline", base_cmd, env))
    res = {(w, k): [] for w, k, _, _ in variants}
    marks = {w: {} for w, *_ in users}
    load0 = os.getloadavg()
    for i in range(a.runs):  # interleaved, the order rotated every round
        for j in range(len(variants)):
            who, kind, cmd, env = variants[(i + j) % len(variants)]
            if a.gap:
                time.sleep(a.gap)
            ms, m, _ = once(cmd, env)
            res[(who, kind)].append(ms)
            if kind == "sandbox":
                for off, label in m:
                    marks[who].setdefault(label, []).append(off)
                marks[who].setdefault("response (client)", []).append(ms)
    load1 = os.getloadavg()
    med = statistics.median
    print(f"commit {commit}{' (dirty tree)' if dirty else ''}; binaries {rel}; {a.runs} runs of each variant, "
          f"interleaved, order rotated; {os.cpu_count()} cpus; load average {load0[0]:.2f} before, "
          f"{load1[0]:.2f} after{f'; {a.gap:g} s of quiet before each run' if a.gap else ''}")
    for who, *_ in users:
        bare, sb = res[(who, "bare")], res[(who, "sandbox")]
        print(f"\n== {who}")
        print(f"bare probe, spawn -> initialize response:      {stats(bare)}")
        print(f"thv-sandbox run, spawn -> initialize response: {stats(sb)}")
        print(f"added (median sandbox - median bare):          {med(sb) - med(bare):7.2f} ms")
        if a.baseline:
            bl = res[(who, "baseline")]
            print(f"baseline {a.baseline}, spawn -> response:  {stats(bl)}")
            print(f"baseline added (median - median bare):         {med(bl) - med(bare):7.2f} ms")
        print("phase clock (median offset from spawn; step = median of per-run differences to the previous mark):")
        order = sorted(marks[who], key=lambda k: med(marks[who][k]))
        prev = None
        for k in order:
            v = marks[who][k]
            if prev is None:
                step = med(v)
            else:
                pv = marks[who][prev]
                step = med([x - y for x, y in zip(v, pv)]) if len(pv) == len(v) else float("nan")
            print(f"  {k:28s} at {med(v):7.2f}   step {step:6.2f}")
            prev = k
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
