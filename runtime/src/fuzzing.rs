//! Entry points for the fuzz harnesses in `fuzz/` (issue 18): one function per parser that reads bytes from
//! outside, each taking the raw input and driving the real code as the pipeline does. Not an API: nothing else
//! calls these, and they may change with the harnesses. A function panics only when the code under test breaks
//! one of its own promises (the checks written here); every refusal of bad input is a normal return.

use std::path::Path;
use std::str::FromStr;
use std::sync::OnceLock;

use crate::image::digest::Digest;
use crate::image::reference::Reference;

/// One current-thread runtime for the async parsers, made once per process.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime")
    })
    .block_on(f)
}

/// `data` cut at the first `sep`: (before, after); all of it before when there is none.
fn split_at<'a>(data: &'a [u8], sep: &[u8]) -> (&'a [u8], &'a [u8]) {
    match data.windows(sep.len()).position(|w| w == sep) {
        Some(i) => (&data[..i], &data[i + sep.len()..]),
        None => (data, &[]),
    }
}

/// The tar reader alone, over an uncompressed stream: every entry and all of its data, within small limits.
pub fn tar(data: &[u8]) {
    use crate::rootfs::unpack::tar::{TarLimits, TarReader};
    let mut tar = TarReader::new(
        data,
        TarLimits {
            max_path_len: 4096,
            max_pax_bytes: 64 * 1024,
        },
    );
    let mut buf = [0u8; 4096];
    for _ in 0..10_000 {
        match tar.next_entry() {
            Ok(Some(_entry)) => {}
            Ok(None) | Err(_) => return,
        }
        loop {
            match tar.read_data(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }
}

/// The unpacker, into a fresh directory: the first byte picks the compression (plain, gzip, zstd), the rest is the
/// layer. Checked: nothing is written outside the root (a sibling directory stays empty), whatever the layer says.
pub fn unpack(data: &[u8]) {
    use crate::image::document::Compression;
    use crate::rootfs::unpack::{Ownership, RootBuilder, UnpackLimits, UnpackOptions};
    let Some((&selector, layer)) = data.split_first() else {
        return;
    };
    let compression = match selector % 3 {
        0 => Compression::None,
        1 => Compression::Gzip,
        _ => Compression::Zstd,
    };
    let dir = tempfile::tempdir().expect("a scratch directory");
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    std::fs::create_dir(&root).expect("the root");
    std::fs::create_dir(&outside).expect("the sibling");
    let opts = UnpackOptions {
        limits: UnpackLimits {
            max_total_bytes: 8 << 20,
            max_entries: 2_000,
            max_path_len: 4096,
            max_pax_bytes: 64 * 1024,
        },
        ownership: Ownership::Ignore,
    };
    let mut builder = RootBuilder::new(&root, opts).expect("the root opens");
    // Two layers from the same bytes: the second sees what the first made (whiteouts, opaque dirs, links).
    let mut ok = builder.apply_layer(layer, compression).is_ok();
    if ok {
        ok = builder.apply_layer(layer, compression).is_ok();
    }
    if ok {
        let _ = builder.finish();
    } else {
        drop(builder);
    }
    let escaped: Vec<_> = std::fs::read_dir(&outside)
        .expect("the sibling is still there")
        .map(|e| e.map(|e| e.file_name()))
        .collect();
    assert!(
        escaped.is_empty(),
        "the layer wrote outside the root: {escaped:?}"
    );
    assert!(
        std::fs::symlink_metadata(dir.path().join("escape")).is_err(),
        "the layer wrote next to the root"
    );
    // The scratch directory may hold entries without write permission: make it removable.
    make_removable(dir.path());
}

fn make_removable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o700));
            make_removable(&e.path());
        }
    }
}

/// A document fetched from a registry: `Content-Type`, a newline, the document; then, after a line `--`, the
/// image config. Classified, parsed and checked as the puller does, down to the layers it would fetch.
pub fn oci_document(data: &[u8]) {
    use crate::distribution::document::{
        check_image, choose_platform, classify, config_blob, parse_index, parse_manifest,
    };
    use crate::image::document::Kind;
    let (content_type, rest) = split_at(data, b"\n");
    let (document, config) = split_at(rest, b"\n--\n");
    let content_type = std::str::from_utf8(content_type).ok();
    let digest = Digest::of_bytes(document);
    let Ok((kind, _declared)) = classify(document, content_type, &digest) else {
        return;
    };
    let platform = crate::image::layout::Platform::host();
    match kind {
        Kind::Index => {
            if let Ok(index) = parse_index(document, &digest) {
                let _ = choose_platform(&index, &platform, &digest);
            }
        }
        Kind::Manifest => {
            let Ok(manifest) = parse_manifest(document, &digest) else {
                return;
            };
            let Ok(blob) = config_blob(&manifest, &digest) else {
                return;
            };
            if let Ok((config, layers)) =
                check_image(&manifest, &digest, config, &blob.digest, &platform)
            {
                assert_eq!(layers.len(), manifest.layers().len());
                let _ = crate::image::config::ImageRuntimeConfig::from_image(&config);
            }
        }
    }
}

/// Image references, digests, OCI layout references and `--port` listen specs. Checked: a reference that parses
/// prints as a string that parses back to the same reference, and its cache name (`registry/repo:tag` or
/// `@digest`, the key of the cache's index) is a reference too.
pub fn reference(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = Reference::from_str(text) {
        let shown = r.to_string();
        let again = Reference::from_str(&shown)
            .unwrap_or_else(|e| panic!("{text:?} parsed, but its display {shown:?} does not: {e}"));
        assert_eq!(again, r, "{text:?} → {shown:?} is another reference");
        let name = r.cache_name();
        assert!(
            Reference::from_str(&name).is_ok(),
            "{text:?} gives the cache name {name:?}, which is not a reference"
        );
        let _ = (
            r.registry_host(),
            r.name(),
            r.pinned(&Digest::of_bytes(data)),
        );
    }
    if let Ok(d) = Digest::from_str(text) {
        assert_eq!(
            Digest::from_str(&d.to_string()).ok().as_ref(),
            Some(&d),
            "digest {text:?} does not round-trip"
        );
        assert!(d.hex().bytes().all(|b| b.is_ascii_hexdigit()));
    }
    let _ = crate::image::layout::parse_oci_ref(text);
    let _ = crate::sandbox::bridge::parse_listen(text);
    let _ = crate::settings::file::check_host(text);
}

/// A registry file, either format (ToolHive's legacy `servers` map or the upstream list). Every server is looked
/// up by its name and its egress rules are built, as `run` does.
pub fn catalog(data: &[u8]) {
    use crate::catalog::Catalog;
    use crate::sandbox::egress::rules::Rules;
    let Ok(catalog) = Catalog::parse(data, "fuzz.json") else {
        return;
    };
    for server in &catalog.servers {
        let found = catalog.find(&server.name);
        assert!(
            matches!(found, Ok(Some(_))),
            "server {:?} is listed but not found by its name",
            server.name
        );
        let _ = (
            server.short_name(),
            server.verifiability(),
            server.is_remote(),
        );
        if let Some(profile) = &server.permissions {
            let _ = profile.describe_network();
            if let Some(o) = profile.outbound() {
                // As `catalog::launch::plan` builds the proxy's rules from an entry.
                let _ = Rules::from_outbound(&crate::sandbox::egress::rules::Outbound {
                    insecure_allow_all: o.insecure_allow_all,
                    allow_host: o.allow_host.clone(),
                    allow_port: o.allow_port.iter().map(|p| i64::from(*p)).collect(),
                    allow: Vec::new(),
                });
            }
        }
    }
    let _ = catalog.search("fetch");
    let _ = catalog.typo_of("fetc");
}

/// The configuration file (TOML), read from a file as `Config::load` reads it, with no environment; then shown as
/// `config show` shows it.
pub fn config_file(data: &[u8]) {
    use crate::settings::file::{Config, Flags};
    let dir = tempfile::tempdir().expect("a scratch directory");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, data).expect("the file is written");
    let flags = Flags {
        config: Some(path),
        ..Flags::default()
    };
    let Ok(config) = Config::load_with(&flags, &|_| None) else {
        return;
    };
    let _ = config.to_json(None);
    let _ = config.render(None);
    let _ = config.registry_access();
    let _ = config.tuf_settings();
}

/// The egress proxy's HTTP side: what a client sends on one connection (see `egress::http::fuzz`).
pub fn egress_http(data: &[u8]) {
    block_on(crate::sandbox::egress::http::fuzz(data));
}

/// The egress proxy's SOCKS5 handshake, over what a client sends.
pub fn egress_socks(data: &[u8]) {
    let mut stream = Duplex {
        input: data,
        output: Vec::new(),
    };
    let _ = block_on(crate::sandbox::egress::socks::handshake(&mut stream));
    assert!(
        stream.output.len() <= 2,
        "the handshake answered more than a method choice"
    );
}

/// Egress rules: lines of `allow_host` entries, then after a line `--` the destination to check (`host port`,
/// then resolved addresses, one a line). Checked: what the rules allow passes their own check, and an address
/// they let a name reach is public unless the rule names it.
pub fn egress_rules(data: &[u8]) {
    use crate::sandbox::egress::rules::{embedded_v4, AllowRule, Decision, Host, Outbound, Rules};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (rules, query) = text.split_once("\n--\n").unwrap_or((text, ""));
    let mut outbound = Outbound::default();
    for line in rules.lines() {
        if let Some(port) = line.strip_prefix("port ") {
            if let Ok(p) = port.parse::<i64>() {
                outbound.allow_port.push(p);
            }
        } else if let Some(rule) = line.strip_prefix("allow ") {
            if let Ok(r) = AllowRule::parse_host(rule) {
                outbound.allow.push(r);
            }
        } else if line == "all" {
            outbound.insecure_allow_all = true;
        } else {
            outbound.allow_host.push(line.to_owned());
        }
    }
    let Ok(rules) = Rules::from_outbound(&outbound) else {
        return;
    };
    let mut lines = query.lines();
    let Some((host, port)) = lines.next().and_then(|l| l.rsplit_once(' ')) else {
        return;
    };
    let (Some(host), Ok(port)) = (Host::parse(host), port.parse::<u16>()) else {
        return;
    };
    let resolved: Vec<std::net::IpAddr> = lines.filter_map(|l| l.parse().ok()).collect();
    for ip in &resolved {
        let _ = crate::sandbox::egress::rules::classify(*ip);
        if let std::net::IpAddr::V6(v6) = ip {
            let _ = embedded_v4(*v6);
        }
    }
    let _ = rules.check(&host, port);
    if let Decision::Allow(addrs) = rules.decide(&host, port, &resolved) {
        assert!(
            rules.check(&host, port).is_ok(),
            "decide allowed what check refuses"
        );
        for a in &addrs {
            assert_eq!(a.port(), port, "an allowed address has another port");
            assert!(
                resolved.contains(&a.ip()) || matches!(host, Host::Ip(_)),
                "an allowed address was not among those resolved"
            );
        }
    }
}

/// The stdio bridge's client side (JSON-RPC lines) and its SSE reader: the bytes as lines of client messages, and
/// the same bytes as an event stream cut into pieces at each `\0`.
pub fn bridge(data: &[u8]) {
    use crate::sandbox::bridge::jsonrpc::{classify, normalise, read_message, ClientMessage};
    block_on(async {
        let mut reader = tokio::io::BufReader::with_capacity(64, data);
        for _ in 0..1000 {
            match read_message(&mut reader, 4096).await {
                Ok(ClientMessage::Message(line, msg)) => {
                    assert!(line.len() <= 4096, "a line over the limit was passed on");
                    let c = classify(&msg);
                    let _ = c.is_initialize();
                }
                Ok(ClientMessage::Refused(reply)) => {
                    assert!(
                        !reply.contains(&b'\n'),
                        "an error response is more than one line"
                    );
                }
                Ok(ClientMessage::Eof) | Err(_) => break,
            }
        }
    });
    if let Some((_, line)) = normalise(data) {
        assert!(!line.contains(&b'\n') && !line.contains(&b'\r'));
    }
    let mut parser = crate::sandbox::bridge::sse::Parser::new(1024);
    for piece in data.split(|&b| b == 0) {
        match parser.push(piece) {
            Ok(events) => {
                for e in events {
                    assert!(
                        e.data.len() <= 1024,
                        "an event over the limit was passed on"
                    );
                }
            }
            Err(_) => break,
        }
    }
}

/// A credential helper's answer: the first byte is its exit status (0: success), the rest its stdout, and after
/// a `\0` its stderr.
pub fn credential_helper(data: &[u8]) {
    let Some((&status, rest)) = data.split_first() else {
        return;
    };
    let (out, err) = split_at(rest, b"\0");
    let status_text = format!("exit status: {status}");
    if let Ok(Some(cred)) =
        crate::distribution::auth::read_answer(status == 0, &status_text, out, err)
    {
        assert!(
            !cred.username.is_empty() || !cred.password.is_empty(),
            "an empty credential is used"
        );
    }
}

/// Verification evidence before the verifier sees it: Sigstore bundles (one, or JSON Lines), a cosign signature
/// layer's annotations and payload, the GitHub attestation API's bundle URLs and their snappy-compressed bodies.
/// Sections are separated by lines `--`: bundle text, payload, signature, certificate, Rekor bundle, RFC 3161
/// timestamp.
pub fn evidence(data: &[u8]) {
    use crate::provenance::{Bundle, CosignSignature};
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split("\n--\n");
    let bundle_text = parts.next().unwrap_or("");
    let _ = Bundle::parse_all(bundle_text);
    let payload = parts.next().unwrap_or("");
    let signature = parts.next().unwrap_or("");
    let certificate = parts.next();
    let rekor_bundle = parts.next();
    let rfc3161_timestamp = parts.next();
    let digest = Digest::of_bytes(data);
    let _ = crate::provenance::check_cosign_payload(payload.as_bytes(), digest.hex());
    for dsse in [false, true] {
        let _ = crate::provenance::bundle_from_cosign_annotations(&CosignSignature {
            payload: payload.as_bytes(),
            signature,
            certificate,
            rekor_bundle,
            rfc3161_timestamp,
            dsse,
        });
    }
    let _ = crate::trust::evidence::bundle_url_body(data);
    if let Some(out) = crate::trust::evidence::snappy_decompress(data, 1 << 20) {
        assert!(out.len() <= 1 << 20, "snappy output over its limit");
    }
}

/// The guard's relay (issue 17), facing an untrusted server and an untrusted-ish client. The first byte picks the
/// setting: line limit (bits 0-3: 32 << n bytes, 32 B to 64 KiB), pin mode (bits 4-5: enforce, warn, off, enforce), a `--tools`
/// filter with a rename (bit 6 clear) or none, a pin of four tools made beforehand (bit 7 clear) or none (the first
/// list is pinned). The rest is what the client writes, a line `--`, what the server writes; both are cut into
/// lines by [`crate::guard::frame::LineReader`] over reads of varying sizes, and the lines go through the guard in
/// turns, as the relay's two threads would pass them. Checked:
/// - the lines are those of the input: each line within the limit whole, each one over it dropped whole (never a
///   prefix), the next one read from its start;
/// - nothing that reaches the server names, to any JSON decoder (duplicate members, case-folded spellings, batches),
///   a `tools/call` of a tool the filter leaves out or the guard withholds; what reaches it is one JSON object;
/// - no list that reaches the client shows, to any decoder, a tool the filter leaves out or the guard withholds,
///   and under `enforce` none that differs from the pin; JSON-looking text reaching the client is one JSON object
///   (or a bare value), never a batch.
pub fn guard_frame(data: &[u8]) {
    use crate::guard::filter::{ToolFilter, ToolOverride};
    use crate::guard::frame::{cut_short, fold_key, looks_like_json, trimmed};
    use crate::guard::pin::{canonical, ListKind, Pin, PinMode, PinStore};
    use crate::guard::relay::{Forward, Guard, Setup};
    use crate::guard::GuardRequest;
    use serde_json::{json, Value};
    use std::collections::BTreeMap;

    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let max = 32 << (flags as usize & 0x0f).min(11);
    let mode = match (flags >> 4) & 3 {
        1 => PinMode::Warn,
        2 => PinMode::Off,
        _ => PinMode::Enforce,
    };
    let (client, server) = split_at(rest, b"\n--\n");
    let client_lines = guard_lines(client, max, flags as usize);
    let server_lines = guard_lines(server, max, flags as usize >> 3);

    let filter = if flags & 0x40 == 0 {
        ToolFilter {
            allow: Some(["echo", "say", "add"].map(String::from).into()),
            overrides: BTreeMap::from([
                (
                    "probe".to_string(),
                    ToolOverride {
                        name: Some("say".into()),
                        description: None,
                    },
                ),
                (
                    "add".to_string(),
                    ToolOverride {
                        name: None,
                        description: Some("Adds.".into()),
                    },
                ),
            ]),
        }
    } else {
        ToolFilter::default()
    };
    // Pins on tmpfs when there is one: a pin is written with fsync.
    let dir = match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm"),
        false => tempfile::tempdir(),
    }
    .expect("a scratch directory");
    let store = PinStore::new(dir.path());
    if flags & 0x80 == 0 && mode != PinMode::Off {
        let tool = |name: &str, description: &str| {
            json!({"name": name, "description": description,
                   "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}})
        };
        let mut pin = Pin {
            name: "srv".into(),
            digests: vec!["sha256:pinned".into()],
            pinned_at: "2026-01-01T00:00:00Z".into(),
            ..Pin::default()
        };
        let tools = [
            tool("echo", "Echoes the text."),
            tool("probe", "Probes."),
            tool("add", "Adds two numbers."),
            tool("crash", "Exits."),
        ];
        pin.lists
            .set(ListKind::Tools, canonical(ListKind::Tools, &tools));
        store.save(&pin).expect("the pin is written");
    }
    let guard = Guard::new(Setup {
        server: "srv".into(),
        digest: "sha256:fuzz".into(),
        request: GuardRequest {
            filter: filter.clone(),
            pin: mode,
            audit_log: None,
            ..GuardRequest::default()
        },
        pins: store.clone(),
        audit: None,
        reporter: std::sync::Arc::new(crate::report::Silent),
    });

    // Every value a JSON decoder could take for member `key` of an object: any member spelled so, or folding
    // alike (duplicates included: decoders take the first, or the last).
    fn picks<'a>(j: &'a J, key: &str) -> Vec<&'a J> {
        match j {
            J::Obj(members) => members
                .iter()
                .filter(|(k, _)| k == key || fold_key(k) == fold_key(key))
                .map(|(_, v)| v)
                .collect(),
            _ => Vec::new(),
        }
    }
    let reachable =
        |original: &str| filter.callable(filter.exposed(original)).as_deref() == Some(original);

    for i in 0..client_lines.len().max(server_lines.len()) {
        if let Some(Some(line)) = client_lines.get(i) {
            let out = match guard.from_client(line) {
                Forward::Same => Some(line.clone()),
                Forward::Rewritten(b) => Some(b),
                Forward::Answer(a) => {
                    assert!(
                        a.ends_with(b"\n") && !a[..a.len() - 1].contains(&b'\n'),
                        "an answer is one line"
                    );
                    None
                }
                Forward::Drop => None,
            };
            if let Some(out) = out {
                // Plain text (what does not open like JSON: a log line) passes as without the guard: no decoder
                // reads a message from it. JSON-looking text that is no JSON does not pass.
                let Ok(j) = J::lenient(&out) else {
                    assert!(
                        !looks_like_json(trimmed(&out)),
                        "the server was sent JSON-looking text that is no JSON: {}",
                        String::from_utf8_lossy(&out[..out.len().min(300)])
                    );
                    continue;
                };
                assert!(!matches!(j, J::Arr(_)), "the server was sent a batch");
                // A bare value (`"text"`, `7`) carries no message.
                if !matches!(j, J::Obj(_)) {
                    continue;
                }
                let withheld = guard.withheld();
                for m in picks(&j, "method") {
                    if !matches!(m, J::Str(s) if s == "tools/call") {
                        continue;
                    }
                    for p in picks(&j, "params") {
                        for n in picks(p, "name") {
                            if let J::Str(name) = n {
                                assert!(
                                    reachable(name),
                                    "a call of `{name}`, which the filter leaves out, reached the server"
                                );
                                assert!(
                                    !withheld.contains(name),
                                    "a call of the withheld `{name}` reached the server"
                                );
                            }
                        }
                    }
                }
            }
        }
        if let Some(Some(line)) = server_lines.get(i) {
            let out = match guard.from_server(line) {
                Forward::Same => Some(line.clone()),
                Forward::Rewritten(b) => Some(b),
                Forward::Answer(_) => panic!("the guard answered the server"),
                Forward::Drop => None,
            };
            let Some(out) = out else { continue };
            let Ok(j) = J::lenient(&out) else {
                // Plain text passes, and so does JSON cut short by the line's end (a pretty-printed document's
                // lines): no decoder reads a message from either. Anything else that opens like JSON is dropped.
                assert!(
                    !looks_like_json(trimmed(&out)) || cut_short(trimmed(&out)),
                    "JSON-looking text that is no JSON reached the client: {}",
                    String::from_utf8_lossy(&out[..out.len().min(300)])
                );
                continue;
            };
            // A bare value (`"text"`, `7`) is plain text to the guard and carries no message; a batch is refused.
            assert!(!matches!(j, J::Arr(_)), "the client was sent a batch");
            let withheld = guard.withheld();
            let pinned = match mode {
                PinMode::Enforce => store
                    .load("srv")
                    .expect("the pin reads")
                    .and_then(|p| p.lists.tools),
                _ => None,
            };
            for r in picks(&j, "result") {
                for t in picks(r, "tools") {
                    let J::Arr(entries) = t else { continue };
                    assert!(
                        j.unambiguous(),
                        "a list with a member twice, or in two spellings, reached the client: {}",
                        String::from_utf8_lossy(&out[..out.len().min(2000)])
                    );
                    for e in entries {
                        for n in picks(e, "name") {
                            let J::Str(exposed) = n else { continue };
                            let original = filter.callable(exposed).unwrap_or_else(|| {
                                panic!(
                                    "the client was shown `{exposed}`, which the filter leaves out"
                                )
                            });
                            assert!(
                                !withheld.contains(&original),
                                "the client was shown the withheld `{original}`"
                            );
                            let Some(pinned) = &pinned else { continue };
                            let pin_entry = pinned
                                .iter()
                                .find(|p| p["name"] == original.as_str())
                                .unwrap_or_else(|| panic!("the client was shown `{original}`, not pinned, under enforce"));
                            let shown = e.to_value();
                            let want_description = match filter
                                .overrides
                                .get(&original)
                                .and_then(|o| o.description.clone())
                            {
                                Some(d) => Value::String(d),
                                None => {
                                    pin_entry.get("description").cloned().unwrap_or(Value::Null)
                                }
                            };
                            assert_eq!(
                                shown.get("description").cloned().unwrap_or(Value::Null),
                                want_description,
                                "the client was shown a description of `{original}` that is not pinned"
                            );
                            assert_eq!(
                                shown.get("inputSchema"),
                                pin_entry.get("inputSchema"),
                                "the client was shown a schema of `{original}` that is not pinned"
                            );
                        }
                    }
                }
            }
        }
    }
    guard.finish();
}

/// `data` cut into lines by the guard's reader (limit `max`, reads of varying sizes from `seed`), checked against
/// the lines of `data` cut here: `Some(line)` for each line within the limit, `None` for each dropped.
fn guard_lines(data: &[u8], max: usize, seed: usize) -> Vec<Option<Vec<u8>>> {
    use crate::guard::frame::{Line, LineReader};
    struct Chunks<'a> {
        data: &'a [u8],
        n: usize,
    }
    impl std::io::Read for Chunks<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            const SIZES: [usize; 7] = [1, 7, 64, 300, 1, 4096, 33];
            self.n += 1;
            let k = SIZES[self.n % SIZES.len()]
                .min(out.len())
                .min(self.data.len());
            out[..k].copy_from_slice(&self.data[..k]);
            self.data = &self.data[k..];
            Ok(k)
        }
    }
    let mut expected = Vec::new();
    let mut pieces = data.split(|&b| b == b'\n').peekable();
    while let Some(piece) = pieces.next() {
        let last = pieces.peek().is_none();
        if last && piece.is_empty() {
            break;
        }
        expected.push(if piece.len() > max {
            Err(piece.len())
        } else if last {
            Ok(piece.to_vec())
        } else {
            Ok([piece, b"\n"].concat())
        });
    }
    let mut reader = LineReader::new(Chunks { data, n: seed }, max);
    let mut got = Vec::new();
    while let Some(line) = reader.next_line().expect("reads from memory do not fail") {
        got.push(match line {
            Line::Message(m) => {
                assert!(m.len() <= max + 1, "a line over the limit was passed on");
                Ok(m.to_vec())
            }
            Line::TooLong(n) => Err(n),
        });
        assert!(got.len() <= expected.len(), "more lines than the input has");
    }
    assert_eq!(got, expected, "the lines read are not the input's lines");
    got.into_iter().map(Result::ok).collect()
}

/// A JSON value as any decoder may read it: objects keep every member, in order, duplicates included.
#[derive(Debug)]
enum J {
    Obj(Vec<(String, J)>),
    Arr(Vec<J>),
    Str(String),
    Other(serde_json::Value),
}

impl J {
    /// `bytes` as a lenient decoder reads them: bytes that are not UTF-8 and escapes of lone surrogates (both
    /// within JSON's grammar, and passed by the guard inside what it skips) become U+FFFD, as JavaScript's and
    /// Go's decoders make them.
    fn lenient(bytes: &[u8]) -> serde_json::Result<J> {
        let text = String::from_utf8_lossy(bytes);
        let b = text.as_bytes();
        let hex = |i: usize| {
            b.get(i..i + 4)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u16::from_str_radix(h, 16).ok())
        };
        let mut out = String::with_capacity(b.len());
        let mut i = 0;
        let mut last = 0;
        while i < b.len() {
            if b[i] != b'\\' {
                i += 1;
                continue;
            }
            if b.get(i + 1) != Some(&b'u') {
                i += 2;
                continue;
            }
            match hex(i + 2) {
                Some(0xD800..=0xDBFF)
                    if b.get(i + 6..i + 8) == Some(&b"\\u"[..])
                        && matches!(hex(i + 8), Some(0xDC00..=0xDFFF)) =>
                {
                    i += 12
                }
                Some(0xD800..=0xDFFF) => {
                    out.push_str(&text[last..i]);
                    out.push_str("\\ufffd");
                    i += 6;
                    last = i;
                }
                _ => i += 6,
            }
        }
        out.push_str(&text[last.min(text.len())..]);
        serde_json::from_str(&out)
    }

    /// No object with a member twice, or two that fold alike.
    fn unambiguous(&self) -> bool {
        match self {
            J::Obj(m) => {
                let mut seen = std::collections::HashSet::new();
                m.iter().all(|(k, v)| {
                    seen.insert(crate::guard::frame::fold_key(k).into_owned()) && v.unambiguous()
                })
            }
            J::Arr(a) => a.iter().all(J::unambiguous),
            _ => true,
        }
    }

    /// As `serde_json` reads it (the last of duplicate members).
    fn to_value(&self) -> serde_json::Value {
        match self {
            J::Obj(m) => serde_json::Value::Object(
                m.iter().map(|(k, v)| (k.clone(), v.to_value())).collect(),
            ),
            J::Arr(a) => serde_json::Value::Array(a.iter().map(J::to_value).collect()),
            J::Str(s) => serde_json::Value::String(s.clone()),
            J::Other(v) => v.clone(),
        }
    }
}

impl<'de> serde::Deserialize<'de> for J {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<J, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = J;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<J, A::Error> {
                let mut m = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, J>()? {
                    m.push((k, v));
                }
                Ok(J::Obj(m))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<J, A::Error> {
                let mut a = Vec::new();
                while let Some(v) = seq.next_element()? {
                    a.push(v);
                }
                Ok(J::Arr(a))
            }
            fn visit_str<E>(self, v: &str) -> Result<J, E> {
                Ok(J::Str(v.to_owned()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<J, E> {
                Ok(J::Other(v.into()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<J, E> {
                Ok(J::Other(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<J, E> {
                Ok(J::Other(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<J, E> {
                Ok(J::Other(v.into()))
            }
            fn visit_unit<E>(self) -> Result<J, E> {
                Ok(J::Other(serde_json::Value::Null))
            }
        }
        d.deserialize_any(V)
    }
}

/// An in-memory stream: reads `input`, collects what is written.
struct Duplex<'a> {
    input: &'a [u8],
    output: Vec<u8>,
}

impl tokio::io::AsyncRead for Duplex<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.input).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Duplex<'_> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.output).poll_write(cx, buf)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    /// Every entry over its committed seeds (`fuzz/corpus/<target>/`): the harnesses' code paths are compiled and
    /// run by the ordinary test suite, and a seed that breaks an entry's check fails here, not only under the fuzzer.
    /// A target's name (its directory under `fuzz/corpus/`) and its entry.
    type Target = (&'static str, fn(&[u8]));

    #[test]
    fn every_entry_accepts_its_seed_corpus() {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let entries: &[Target] = &[
            ("tar", super::tar),
            ("unpack", super::unpack),
            ("oci_document", super::oci_document),
            ("reference", super::reference),
            ("catalog", super::catalog),
            ("config_file", super::config_file),
            ("egress_http", super::egress_http),
            ("egress_socks", super::egress_socks),
            ("egress_rules", super::egress_rules),
            ("bridge", super::bridge),
            ("credential_helper", super::credential_helper),
            ("evidence", super::evidence),
            ("guard_frame", super::guard_frame),
        ];
        for (name, entry) in entries {
            let dir = corpus.join(name);
            let mut seeds = 0;
            for file in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            {
                let path = file.unwrap().path();
                entry(&std::fs::read(&path).unwrap());
                seeds += 1;
            }
            assert!(seeds > 0, "no seeds for {name}");
        }
    }
}
