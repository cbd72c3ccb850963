#!/usr/bin/env python3
"""Cold pull + unpack benchmark (issue 3): thv-sandbox against `skopeo copy` + `umoci unpack --rootless` and
against `podman pull`, from a local registry, each run into a fresh empty destination. Medians of N interleaved
runs, wall time and peak RSS (GNU time's %M: ru_maxrss from wait4, the max over the command and its reaped
descendants; measured by /usr/bin/time because a direct child of Python starts with Python's own high-water mark).

The image: a Debian bookworm minbase root (debootstrap, built once and cached under --work) split into three gzip
layers (usr/lib, usr/share, the rest), numeric owners, pushed with skopeo to `docker-registry` on 127.0.0.1.

Usage (as root: debootstrap, podman --root): bench/cold_pull.py [--runs N] [--work DIR] [--no-build]
    [--user NAME]   also run thv-sandbox and skopeo+umoci as that unprivileged user (setpriv, same pid)
    [--baseline BIN] also run the thv-sandbox steps with another build (e.g. one from before streaming pulls)
    [--thv BIN]     the thv-sandbox to measure (default: target/release/thv-sandbox, built unless --no-build)
    [--rootfs DIR]  use DIR as the image's root instead of debootstrapping Debian (a quick check of the script)
    [--no-podman]
Needs: apt-get install skopeo umoci podman debootstrap docker-registry

Every run's destination is checked right after the run (outside the clock), before the next run replaces it: the
unpacked root (thv-sandbox: the one `roots-v*/*/rootfs` of the fresh cache, for `pull`+`run` and for the
one-process `run`; skopeo+umoci: the bundle's rootfs; podman: its overlay layer directories) is counted (paths) and
summed (bytes of regular files and symlinks, lstat sizes). The first run of each tool and user is the reference: a
later run that differs, a missing or empty root, or a thv-sandbox root that differs from umoci's (an independent
unpacker of the same image) stops the benchmark with both numbers.
"""
import argparse, glob, gzip, hashlib, json, os, pwd, re, shutil, socket, stat, statistics, subprocess, sys, tarfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIRROR = "http://deb.debian.org/debian"  # the URI in /etc/apt/sources.list.d/debian.sources on the bench machine
REPO, TAG = "bench/debian", "minbase"
RSS_DIR = "/tmp"  # set to the work dir in main()


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def build_rootfs(work):
    rootfs = os.path.join(work, "rootfs")
    if os.path.isdir(rootfs):
        return rootfs
    tmp = rootfs + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    sh(["debootstrap", "--variant=minbase", "bookworm", tmp, MIRROR])
    os.rename(tmp, rootfs)
    return rootfs


def _filter(ti):
    if ti is None:  # sockets
        return None
    ti.uname = ti.gname = ""  # numeric owners only
    if ti.isdev():  # debootstrap's /dev nodes: not image content
        return None
    return ti


def write_layer(rootfs, blobs, include):
    """One layer: `include(relpath) -> bool` decides membership of every path; parent dirs are added as needed.
    Returns (descriptor, diff_id, uncompressed size, entries)."""
    raw = os.path.join(blobs, "layer.tar")
    n = 0
    with tarfile.open(raw, "w", format=tarfile.PAX_FORMAT) as tf:
        added = set()
        for dirpath, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, rootfs)
            for name in [None] + sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                rel = rel_dir if name is None else os.path.normpath(os.path.join(rel_dir, name))
                if rel == "." or not include(rel):
                    continue
                parts = rel.split("/")
                for i in range(1, len(parts)):  # parents first
                    p = "/".join(parts[:i])
                    if p not in added:
                        tf.addfile(_filter(tf.gettarinfo(os.path.join(rootfs, p), p)))
                        added.add(p); n += 1
                if rel in added:
                    continue
                ti = _filter(tf.gettarinfo(os.path.join(rootfs, rel), rel))
                if ti is None:
                    continue
                added.add(rel); n += 1
                if ti.isreg():
                    with open(os.path.join(rootfs, rel), "rb") as f:
                        tf.addfile(ti, f)
                else:
                    tf.addfile(ti)
    h = hashlib.sha256()
    with open(raw, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    diff_id = "sha256:" + h.hexdigest()
    size = os.path.getsize(raw)
    gz = raw + ".gz"
    with open(raw, "rb") as src, open(gz, "wb") as out:
        with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0, filename="") as z:
            shutil.copyfileobj(src, z, 1 << 20)
    os.unlink(raw)
    return move_blob(blobs, gz, "application/vnd.oci.image.layer.v1.tar+gzip"), diff_id, size, n


def move_blob(blobs, path, media_type):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    dst = os.path.join(blobs, h.hexdigest())
    os.rename(path, dst)
    return {"mediaType": media_type, "digest": "sha256:" + h.hexdigest(), "size": os.path.getsize(dst)}


def put_json(blobs, obj, media_type):
    p = os.path.join(blobs, "tmp.json")
    with open(p, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
    return move_blob(blobs, p, media_type)


def build_layout(work, rootfs):
    layout = os.path.join(work, "layout")
    if os.path.exists(os.path.join(layout, "index.json")):
        return layout, json.load(open(os.path.join(work, "image-stats.json")))
    shutil.rmtree(layout, ignore_errors=True)
    blobs = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blobs)
    under = lambda rel, d: rel == d or rel.startswith(d + "/")
    splits = [lambda r: under(r, "usr/lib"), lambda r: under(r, "usr/share"),
              lambda r: not (under(r, "usr/lib") or under(r, "usr/share"))]
    layers, diff_ids, stats = [], [], []
    for inc in splits:
        desc, diff_id, size, n = write_layer(rootfs, blobs, inc)
        layers.append(desc); diff_ids.append(diff_id); stats.append({"uncompressed": size, "gz": desc["size"], "entries": n})
    config = {"architecture": "amd64", "os": "linux",
              "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    cdesc = put_json(blobs, config, "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": cdesc, "layers": layers}
    mdesc = put_json(blobs, manifest, "application/vnd.oci.image.manifest.v1+json")
    mdesc["annotations"] = {"org.opencontainers.image.ref.name": TAG}
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [mdesc]}, f)
    with open(os.path.join(work, "image-stats.json"), "w") as f:
        json.dump(stats, f)
    return layout, stats


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_registry(work):
    port = free_port()
    store = os.path.join(work, "registry")
    shutil.rmtree(store, ignore_errors=True)
    cfg = os.path.join(work, "registry.yml")
    with open(cfg, "w") as f:
        f.write(f"version: 0.1\nstorage: {{filesystem: {{rootdirectory: {store}}}, delete: {{enabled: true}}}}\n"
                f"http: {{addr: 127.0.0.1:{port}}}\nlog: {{level: error, accesslog: {{disabled: true}}}}\n")
    log = open(os.path.join(work, "registry.log"), "w")
    p = subprocess.Popen(["docker-registry", "serve", cfg], stdout=log, stderr=log)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            return p, port
        except Exception:
            if p.poll() is not None:
                sys.exit(f"docker-registry exited; see {work}/registry.log")
            time.sleep(0.1)
    p.terminate()
    sys.exit("docker-registry did not answer")


def measure(cmd, env=None, user=None):
    """Wall seconds and peak RSS (MiB) of one command; `user` = (uid, gid) runs it via setpriv (exec, same pid)."""
    if user:
        cmd = ["setpriv", f"--reuid={user[0]}", f"--regid={user[1]}", "--clear-groups", "--"] + cmd
    # Peak RSS comes from GNU time's wait4, not ours: a direct child of Python inherits Python's own high-water
    # mark (~13-23 MiB) through fork/vfork + exec, which would hide anything smaller.
    rss_file = os.path.join(RSS_DIR, "rss")
    cmd = ["/usr/bin/time", "-f", "%M", "-o", rss_file] + cmd
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    err = p.stderr.read()
    p.wait()
    t = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{err.decode(errors='replace')[-3000:]}")
    with open(rss_file) as f:
        rss_kib = int(f.read().split()[-1])
    return t, rss_kib / 1024, err.decode(errors="replace")


def fresh(path, owner=None):
    if os.path.lexists(path):
        sh(["rm", "-rf", "--one-file-system", path])
    os.makedirs(path)
    if owner:
        os.chown(path, *owner)
    return path


def tree_stats(d, listing=None):
    """(paths, bytes) of the tree under d: every entry below d, and the lstat size of its regular files and
    symlinks (directory sizes depend on the file system's history, not on the content). With `listing` (a dict),
    also records each relative path and whether it is empty (an empty directory or a 0-byte file)."""
    paths = size = 0
    for dirpath, dirnames, filenames in os.walk(d):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            paths += 1
            if not stat.S_ISDIR(st.st_mode):
                size += st.st_size
            if listing is not None:
                empty = (stat.S_ISDIR(st.st_mode) and not os.listdir(full)) or \
                        (stat.S_ISREG(st.st_mode) and st.st_size == 0)
                listing[os.path.relpath(full, d)] = empty
    return paths, size


def thv_root(cache):
    """The one unpacked root in a fresh thv-sandbox cache."""
    roots = glob.glob(os.path.join(cache, "roots-v*", "*", "rootfs"))
    if len(roots) != 1:
        sys.exit(f"check: expected exactly one unpacked root in {cache}, found {roots}")
    return roots[0]


def podman_layers(proot):
    """podman's overlay storage: its layer directories (the image is stored as layers, not as one root)."""
    diffs = sorted(glob.glob(os.path.join(proot, "root", "overlay", "*", "diff")))
    if not diffs:
        sys.exit(f"check: no overlay layer under {proot}/root/overlay")
    return diffs


class Checks:
    """Per-run checks of what each run left in its destination, against the first run of the same (user, tool)."""

    def __init__(self):
        self.reference = {}  # (who, tool) -> (paths, bytes)
        self.listing = {}  # (who, tool) -> {relative path: empty?}, of run 1 (one root only)
        self.lines = []

    def run(self, who, tool, i, paths):
        listing = {} if i == 0 and len(paths) == 1 else None
        stats = [tree_stats(p, listing) for p in paths]
        if listing is not None:
            self.listing[(who, tool)] = listing
        got = (sum(s[0] for s in stats), sum(s[1] for s in stats))
        where = ", ".join(paths)
        if got[0] == 0 or got[1] == 0:
            sys.exit(f"check: run {i + 1} of {tool} ({who}) left an empty root: {got} in {where}")
        ref = self.reference.setdefault((who, tool), got)
        if got != ref:
            sys.exit(f"check: run {i + 1} of {tool} ({who}) left {got[0]} paths / {got[1]} bytes in {where}; "
                     f"run 1 left {ref[0]} / {ref[1]}")
        self.lines.append(f"check {who} {tool} run {i + 1}: {got[0]} paths, {got[1] / 1e6:.1f} MB (as run 1)")
        return got

    def same_tree(self, who, a, b):
        """Run 1 of tool `a` (thv-sandbox) unpacked the same tree as run 1 of `b` (umoci): every path of b's, the
        same bytes, and beyond b's only empty entries (thv-sandbox adds empty mount targets: /proc, /sys, /dev,
        /tmp, /etc/hosts...)."""
        la, lb = self.listing.get((who, a)), self.listing.get((who, b))
        if la is None or lb is None:
            return
        ra, rb = self.reference[(who, a)], self.reference[(who, b)]
        missing = sorted(set(lb) - set(la))
        extra = sorted(p for p in set(la) - set(lb) if not la[p])
        if missing or extra or ra[1] != rb[1]:
            sys.exit(f"check: {a} ({who}) unpacked {ra[0]} paths / {ra[1]} bytes, {b} {rb[0]} / {rb[1]}; "
                     f"missing from {a}: {missing[:20]}; non-empty extras in {a}: {extra[:20]}")
        added = sorted(set(la) - set(lb))
        self.lines.append(f"check {who} {a} = {b} (run 1), plus {len(added)} empty mount targets: {added}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", default="/tmp/thv-cold-bench")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--user", help="also run thv-sandbox and skopeo+umoci as this unprivileged user")
    ap.add_argument("--no-podman", action="store_true")
    ap.add_argument("--baseline", help="another thv-sandbox binary to measure the same way (labelled 'baseline')")
    ap.add_argument("--thv", help="the thv-sandbox binary (default: target/release/thv-sandbox)")
    ap.add_argument("--rootfs", help="the image's root: this directory instead of a debootstrapped Debian")
    a = ap.parse_args()
    if os.getuid() != 0:
        sys.exit("run as root (debootstrap, podman --root); use --user for the unprivileged runs")
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    if not a.no_build and not a.thv:
        sh(["cargo", "build", "--release", "--locked", "-p", "thv-sandbox"], cwd=ROOT)
    thv = os.path.abspath(a.thv) if a.thv else os.path.join(target, "release", "thv-sandbox")
    os.makedirs(a.work, exist_ok=True)
    os.chmod(a.work, 0o755)
    global RSS_DIR
    RSS_DIR = a.work
    print(f"load average at the start: {os.getloadavg()}")
    rootfs = os.path.abspath(a.rootfs) if a.rootfs else build_rootfs(a.work)
    layout, stats = build_layout(a.work, rootfs)
    reg, port = start_registry(a.work)
    try:
        ref = f"127.0.0.1:{port}/{REPO}:{TAG}"
        sh(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:{TAG}", f"docker://{ref}"])
        print(f"image: {sum(s['uncompressed'] for s in stats)/1e6:.0f} MB uncompressed, "
              f"{sum(s['gz'] for s in stats)/1e6:.0f} MB gzip, {sum(s['entries'] for s in stats)} tar entries in "
              f"{len(stats)} layers: " + "; ".join(f"{s['uncompressed']/1e6:.0f} MB/{s['entries']} entries" for s in stats))
        run_all(a, thv, ref, port)
    finally:
        reg.terminate()
        reg.wait()


def run_all(a, thv, ref, port):
    users = [("root", None)]
    if a.user:
        pw = pwd.getpwnam(a.user)
        users.append((a.user, (pw.pw_uid, pw.pw_gid)))
    results = {}  # (who, tool) -> list of dicts
    base_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    checks = Checks()
    phases = {}  # (who, phase) -> ms, from THV_SANDBOX_TIMINGS of the `run --pull never` step
    for i in range(a.runs):
        for who, ids in users:
            home = pwd.getpwnam(who).pw_dir if ids else "/root"
            env = dict(base_env, HOME=home)
            d = os.path.join(a.work, "runs", who)
            os.makedirs(d, exist_ok=True)
            if ids:
                os.chown(d, *ids)
                env["XDG_RUNTIME_DIR"] = fresh(os.path.join(d, "xdg-run"), ids)
                os.chmod(env["XDG_RUNTIME_DIR"], 0o700)
            thvs = [("thv-sandbox", thv)] + ([("thv-sandbox baseline", a.baseline)] if a.baseline else [])
            for label, binary in thvs:
                # pull (this build: downloads and unpacks, overlapped; a build before streaming: downloads only), then
                # run --pull never (starts the sandbox with /bin/true; unpacks first if the pull did not)
                cache = fresh(os.path.join(d, "thv-cache"), ids)
                sh(["sync"])
                tp, rp, _ = measure([binary, "pull", "--cache-dir", cache, ref], env, ids)
                tr, rr, err = measure([binary, "run", "--cache-dir", cache, "--pull", "never", ref, "--", "/bin/true"],
                                      dict(env, THV_SANDBOX_TIMINGS="1"), ids)
                m = re.search(r"timings: (.*)", err)
                if m:  # thv-sandbox's own phase clock (ms): `image` holds the unpack, when the pull did not do it
                    for part in m.group(1).split(", "):
                        name, val = part.rsplit(" ", 2)[0], float(part.rsplit(" ", 2)[1])
                        phases.setdefault((who, f"{label}: {name}"), []).append(val)
                results.setdefault((who, f"{label} pull / run"), []).append({"a": tp, "b": tr, "ra": rp, "rb": rr})
                checks.run(who, f"{label} pull / run", i, [thv_root(cache)])
                # pull+unpack+run in one process
                cache2 = fresh(os.path.join(d, "thv-cache1"), ids)
                sh(["sync"])
                t1, r1, _ = measure([binary, "run", "--cache-dir", cache2, ref, "--", "/bin/true"], env, ids)
                results.setdefault((who, f"{label} run (one process)"), []).append({"a": t1, "b": 0.0, "ra": r1, "rb": 0.0})
                checks.run(who, f"{label} run (one process)", i, [thv_root(cache2)])
            # skopeo copy + umoci unpack --rootless
            oci = os.path.join(fresh(os.path.join(d, "skopeo"), ids), "img")
            bundle = os.path.join(d, "skopeo", "bundle")
            sh(["sync"])
            ts, rs, _ = measure(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"oci:{oci}:{TAG}"], env, ids)
            tu, ru, _ = measure(["umoci", "unpack", "--rootless", "--image", f"{oci}:{TAG}", bundle], env, ids)
            results.setdefault((who, "skopeo copy + umoci unpack --rootless"), []).append({"a": ts, "b": tu, "ra": rs, "rb": ru})
            checks.run(who, "skopeo+umoci", i, [os.path.join(bundle, "rootfs")])
            if i == 0:
                for label, _ in thvs:
                    checks.same_tree(who, f"{label} pull / run", "skopeo+umoci")
                    checks.same_tree(who, f"{label} run (one process)", "skopeo+umoci")
            # podman pull (root only: the user has no subuid range here)
            if not ids and not a.no_podman:
                proot = fresh(os.path.join(d, "podman"))
                sh(["sync"])
                tpod, rpod, _ = measure(["podman", "--root", os.path.join(proot, "root"), "--runroot",
                                         os.path.join(proot, "runroot"), "--storage-driver", "overlay",
                                         "pull", "-q", "--tls-verify=false", ref], env)
                results.setdefault((who, "podman pull (overlay)"), []).append({"a": tpod, "b": 0.0, "ra": rpod, "rb": 0.0})
                # containers/storage may leave its overlay home mounted
                mounts = [l.split()[4] for l in open("/proc/self/mountinfo") if l.split()[4].startswith(proot)]
                for m in sorted(mounts, key=len, reverse=True):
                    subprocess.run(["umount", m])
                checks.run(who, "podman", i, podman_layers(proot))
    print("\n".join(checks.lines))
    med = statistics.median
    print(f"\nload average at the end: {os.getloadavg()}")
    print(f"runs: {a.runs} each, interleaved; {os.cpu_count()} cpus; wall s (median, min-max); peak RSS MiB (median)")
    print("| user | tool | step 1 | step 2 | total s (median) | min-max | peak RSS MiB (step 1 / step 2) |")
    print("|---|---|---|---|---|---|---|")
    for (who, tool), rs in results.items():
        tot = [r["a"] + r["b"] for r in rs]
        s2 = f"{med([r['b'] for r in rs]):.2f}" if any(r["b"] for r in rs) else ""
        rss = f"{med([r['ra'] for r in rs]):.0f}" + (f" / {med([r['rb'] for r in rs]):.0f}" if s2 else "")
        print(f"| {who} | {tool} | {med([r['a'] for r in rs]):.2f} | {s2} | **{med(tot):.2f}** | "
              f"{min(tot):.2f}-{max(tot):.2f} | {rss} |")
    for (who, name), v in phases.items():
        print(f"thv-sandbox run phase ({who}) {name}: median {med(v):.1f} ms")
    print("\nall runs (s): " + json.dumps({f"{w}/{t}": [round(r['a'] + r['b'], 3) for r in rs] for (w, t), rs in results.items()}))


if __name__ == "__main__":
    main()
