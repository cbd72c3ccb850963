#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ from real data: the shared fixtures (registry files, Sigstore
bundles, a cosign signature), the real-server test layout when it is on this machine (manifests, index, configs),
tar layers packed by Python's tarfile from files of this repository in each tar format, and requests and answers
as real clients and helpers send them. Run from anywhere: python3 fuzz/seeds.py [SHARED_FIXTURES]. The output is
committed; rerun it only to refresh the seeds."""
import gzip, io, json, os, struct, sys, tarfile, pathlib, shutil

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
FIX = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else REPO.parent / "shared" / "fixtures")
OUT = HERE / "corpus"
LAYOUT = pathlib.Path("/var/cache/thv-e2e-real/layout")


def put(target, name, data):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)


shutil.rmtree(OUT, ignore_errors=True)

# Registry files: a few real entries of each format (whole files are 40-200 KB, too big to mutate well).
legacy = json.loads((FIX / "toolhive-registry.json").read_text())
names = sorted(legacy["servers"])
with_net = [n for n in names if (legacy["servers"][n].get("permissions") or {}).get("network")]
for i, pick in enumerate([names[:2], with_net[:3], names[-1:]]):
    doc = dict(legacy, servers={n: legacy["servers"][n] for n in pick})
    doc.pop("remote_servers", None)
    put("catalog", f"legacy-{i}.json", json.dumps(doc, indent=1))
rs = legacy.get("remote_servers") or {}
if rs:
    k = sorted(rs)[0]
    put("catalog", "legacy-remote.json", json.dumps({"version": legacy.get("version", "1"), "servers": {}, "remote_servers": {k: rs[k]}}))
up = json.loads((FIX / "toolhive-registry-upstream.example.json").read_text())
servers = up["data"]["servers"]
for i in range(min(3, len(servers))):
    put("catalog", f"upstream-{i}.json", json.dumps(dict(up, data=dict(up["data"], servers=servers[i:i + 1])), indent=1))

# Egress rules: the registry's own allow lists, each with a destination and resolved addresses.
for i, n in enumerate(with_net[:6]):
    o = ((legacy["servers"][n]["permissions"]["network"] or {}).get("outbound") or {})
    lines = list(o.get("allow_host") or []) + [f"port {p}" for p in (o.get("allow_port") or [])]
    host = (o.get("allow_host") or ["example.com"])[0].lstrip(".")
    put("egress_rules", f"{n}.txt", "\n".join(lines) + f"\n--\n{host} 443\n93.184.215.14\n2606:2800:21f:cb07:6820:80da:af6b:8b2c\n127.0.0.1\n")
put("egress_rules", "local.txt", "localhost:8080\nallow 10.0.0.0:22\n--\nlocalhost 8080\n127.0.0.1\n::1\n")
put("egress_rules", "all.txt", "all\n--\n[::ffff:127.0.0.1] 80\n::ffff:127.0.0.1\n")

# References: every image of the real registry, plus the other spellings users type.
refs = sorted({s["image"] for s in legacy["servers"].values() if s.get("image")})
for i, r in enumerate(refs[:12]):
    put("reference", f"ref-{i}", r)
for i, r in enumerate(["localhost:5000/a/b:t", "[::1]:5000/r@sha256:" + "a" * 64, "busybox", "oci:/tmp/layout:tag",
                       "127.0.0.1:8080", "sha256:" + "0" * 64, "ghcr.io/o/r:v1@sha256:" + "f" * 64]):
    put("reference", f"form-{i}", r)

# Evidence: real bundles (every version), the cosign signature layer's parts, a GitHub attestation bundle URL body.
for p in sorted((FIX / "sigstore" / "conformance").glob("*/bundle.sigstore.json")):
    if p.stat().st_size < 12000:
        put("evidence", p.parent.name + ".json", p.read_bytes())
cos = FIX / "sigstore" / "cosign-oci" / "salrashid123-server_image"
sig = json.loads((cos / "signature-manifest.json").read_text())
ann = sig["layers"][0].get("annotations", {})
put("evidence", "cosign-layer", "\n--\n".join([
    "", (cos / "simplesigning-payload.json").read_text(), ann.get("dev.cosignproject.cosign/signature", ""),
    ann.get("dev.sigstore.cosign/certificate", ""), ann.get("dev.sigstore.cosign/bundle", ""),
    ann.get("dev.sigstore.cosign/rfc3161timestamp", "")]))
put("evidence", "cosign-bundle.json", (cos / "derived.bundle-v0.1.sigstore.json").read_bytes())
put("evidence", "bundle-url", json.dumps({"attestations": [{"bundle_url": "https://example.com/b.json.sn"}]}))

# OCI documents: Content-Type line, document, and for manifests the config after `--`.
put("oci_document", "cosign-index", "application/vnd.oci.image.index.v1+json\n" + (cos / "image-index.json").read_text())
put("oci_document", "cosign-sig-manifest", "application/vnd.oci.image.manifest.v1+json\n" + (cos / "signature-manifest.json").read_text())
if LAYOUT.is_dir():
    blobs = LAYOUT / "blobs" / "sha256"
    idx = json.loads((LAYOUT / "index.json").read_text())
    put("oci_document", "layout-index", "application/vnd.oci.image.index.v1+json\n" + json.dumps(idx))
    for d in idx["manifests"][:2]:
        m = (blobs / d["digest"].split(":")[1]).read_text()
        cfg = (blobs / json.loads(m)["config"]["digest"].split(":")[1]).read_text()
        put("oci_document", "layout-manifest-" + d["digest"][7:19], "application/vnd.oci.image.manifest.v1+json\n" + m + "\n--\n" + cfg)
        put("oci_document", "layout-manifest-generic-" + d["digest"][7:19], "application/json\n" + m + "\n--\n" + cfg)


# Tar layers: files of this repository packed in each format, with the entry kinds layers carry.
def layer(fmt, extra=()):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        def add(name, kind=tarfile.REGTYPE, data=b"", **kw):
            ti = tarfile.TarInfo(name)
            ti.type = kind
            ti.size = len(data) if kind == tarfile.REGTYPE else 0
            ti.mode = kw.get("mode", 0o755 if kind == tarfile.DIRTYPE else 0o644)
            ti.uid, ti.gid, ti.mtime = kw.get("uid", 0), 0, 1700000000
            ti.linkname = kw.get("link", "")
            if "pax" in kw:
                ti.pax_headers = kw["pax"]
            t.addfile(ti, io.BytesIO(data) if data else None)
        add("./", tarfile.DIRTYPE)
        add("etc/", tarfile.DIRTYPE)
        add("etc/os-release", data=b'ID=debian\nVERSION_ID="12"\n')
        add("bin/", tarfile.DIRTYPE)
        add("bin/sh", tarfile.SYMTYPE, link="busybox")
        add("bin/busybox", data=(REPO / "sandbox-profiles" / "Cargo.toml").read_bytes(), mode=0o755, uid=1000)
        add("bin/ls", tarfile.LNKTYPE, link="bin/busybox")
        for e in extra:
            add(*e[:2], **e[2] if len(e) > 2 else {})
    return buf.getvalue()


long = "usr/lib/python3/dist-packages/" + "very-long-directory-name/" * 5 + "module.py"
tars = {
    "ustar": layer(tarfile.USTAR_FORMAT),
    "gnu-long": layer(tarfile.GNU_FORMAT, [(long, tarfile.REGTYPE, {"data": b"x = 1\n"})]),
    "pax": layer(tarfile.PAX_FORMAT, [("app/é-file", tarfile.REGTYPE, {"data": b"hi\n", "pax": {"mtime": "1700000000.5"}})]),
    "whiteouts": layer(tarfile.PAX_FORMAT, [("etc/.wh.os-release", tarfile.REGTYPE), ("bin/.wh..wh..opq", tarfile.REGTYPE),
                                             ("tmp/", tarfile.DIRTYPE, {"mode": 0o1777}), ("run/fifo", tarfile.FIFOTYPE)]),
    "dev-and-escape": layer(tarfile.USTAR_FORMAT, [("dev/null", tarfile.CHRTYPE), ("lib", tarfile.SYMTYPE, {"link": "../../.."}),
                                                   ("lib/escape", tarfile.REGTYPE, {"data": b"no"}), ("../escape", tarfile.REGTYPE)]),
}
for n, t in tars.items():
    put("tar", n + ".tar", t)
    put("unpack", n + ".tar", b"\x00" + t)
put("unpack", "ustar.tar.gz", b"\x01" + gzip.compress(tars["ustar"], mtime=0))
put("unpack", "pax.tar.gz", b"\x01" + gzip.compress(tars["pax"], mtime=0))

# The config file: the keys the README documents.
put("config_file", "full.toml", """cache_dir = "~/.cache/thv"
insecure_registries = ["localhost:5000", "127.0.0.1:5001"]
ca_certs = ["certs/ca.pem"]
bytecode_at_unpack = false
registry = "https://example.com/registry.json"

[mirrors]
"docker.io" = "mirror.example.com"
"ghcr.io" = "localhost:5000"

[verification]
mode = "warn"

[tuf]
refresh = false
""")
put("config_file", "empty.toml", "")
put("config_file", "unknown.toml", "cache_dirr = 1\n")
readme = (REPO / "README.md").read_text()
for i, block in enumerate(readme.split("```toml")[1:6]):
    put("config_file", f"readme-{i}.toml", block.split("```")[0])

# The egress proxy: what curl and Python's urllib send through a proxy.
put("egress_http", "connect", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nUser-Agent: curl/7.88.1\r\nProxy-Connection: Keep-Alive\r\n\r\n")
put("egress_http", "get", "GET http://example.com/a?b=c HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\nProxy-Connection: Keep-Alive\r\n\r\n")
put("egress_http", "post-chunked", "POST http://example.com:8080/x HTTP/1.1\r\nHost: example.com:8080\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive, x-hop\r\nx-hop: 1\r\n\r\n5;ext=1\r\nhello\r\n0\r\nTrailer: t\r\n\r\nGET http://[::1]:81/ HTTP/1.0\r\n\r\n")
put("egress_http", "post-length", "POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
put("egress_socks", "curl-socks5h-domain", bytes([5, 1, 0, 5, 1, 0, 3, 11]) + b"example.com" + struct.pack(">H", 443))
put("egress_socks", "v4", bytes([5, 2, 0, 2, 5, 1, 0, 1, 127, 0, 0, 1, 0, 80]))
put("egress_socks", "v6-bind", bytes([5, 1, 0, 5, 2, 0, 4]) + bytes(15) + b"\x01" + struct.pack(">H", 22))

# The bridge: an MCP client's first messages, and an SSE stream as a server sends it (pieces split at NUL).
init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "c", "version": "1"}}}
put("bridge", "session", "\n".join(json.dumps(m) for m in [init, {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, [{"jsonrpc": "2.0", "id": 2, "result": {}}]]) + "\n\r\n{bad\n")
put("bridge", "sse", ": ping\r\nevent: endpoint\r\ndata: /messages?session=1\r\n\r\nid: 7\nretry: 1000\ndata: {\"jsonrpc\":\"2.0\",\0\"id\":1,\"result\":{}}\n\n")

# Credential helper answers (docker-credential-* protocol).
put("credential_helper", "ok", b"\x00" + json.dumps({"ServerURL": "ghcr.io", "Username": "u", "Secret": "s"}).encode())
put("credential_helper", "token", b"\x00" + json.dumps({"ServerURL": "ghcr.io", "Username": "<token>", "Secret": "t"}).encode())
put("credential_helper", "not-found", b"\x01\x00credentials not found in native keychain\n")
# The guard's relay (issue 17): MCP sessions with the test probe server, and the spellings a filter must not miss.
sys.path.insert(0, str(HERE))
import seeds_guard  # noqa: E402
seeds_guard.main()

print("seeds written to", OUT)
