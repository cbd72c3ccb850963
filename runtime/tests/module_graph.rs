//! The library's modules depend on each other one way, at two levels:
//! - **groups** (a folder of `runtime/src`, or a top-level file) import only groups below them in [`LAYERS`], the
//!   stack `runtime/src/lib.rs` documents: a new edge that goes up, or a group missing from the list, fails;
//! - **modules** (a group's direct submodules, e.g. `sandbox::runner`) form no cycle, inside a group or across.
//!
//! The graph is read from the source: every `crate::NAME[::SUB]` in a file's code (comments and the
//! `#[cfg(test)]` part at the end of a file do not count). See it with
//! `cargo test -p thv-sandbox-runtime --test module_graph -- --nocapture` (on stderr).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The groups, bottom first: a group may import only groups before it.
const LAYERS: &[&str] = &[
    "chain",
    "dirs",
    "trace",
    "image",
    "report",
    "rootfs",
    "distribution",
    "trust",
    "sandbox",
    "guard",
    "packages",
    "catalog",
    "doctor",
    "cache",
    "settings",
    "pipeline",
    "inspect",
    "fuzzing",
];

/// The module a file belongs to: `GROUP` for a top-level file, `GROUP::SUB` for a file in a group's folder.
fn module_of(rel: &Path) -> (String, String) {
    let parts: Vec<String> = rel
        .components()
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_owned()
        })
        .collect();
    let group = parts[0].clone();
    let module = match parts.get(1) {
        Some(sub) => format!("{group}::{sub}"),
        None => group.clone(),
    };
    (group, module)
}

/// Module → the modules its code names (`group` or `group::sub`), over the whole tree.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read src").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(src).unwrap();
            let (group, top) = module_of(rel);
            if group == "lib" || group == "testing" {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let code: String = code
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let deps = g.entry(top.clone()).or_default();
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + 7..];
                // `crate::{a, b::C}` names several modules.
                let items: Vec<&str> = match rest.strip_prefix('{') {
                    Some(group) => group
                        .split('}')
                        .next()
                        .unwrap_or_default()
                        .split(',')
                        .collect(),
                    None => vec![rest],
                };
                for item in items {
                    let path: String = item
                        .trim_start()
                        .chars()
                        .take_while(|c| {
                            c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == ':'
                        })
                        .collect();
                    let mut segs = path.split("::").filter(|s| !s.is_empty());
                    let Some(first) = segs.next() else { continue };
                    // `group::sub` when `group` has a folder of submodules, else `group`.
                    let name = match segs.next() {
                        Some(sub) if src.join(first).join(format!("{sub}.rs")).is_file() => {
                            format!("{first}::{sub}")
                        }
                        _ => first.to_owned(),
                    };
                    if name != top {
                        deps.insert(name);
                    }
                }
            }
        }
    }
    // Only edges between modules of the crate.
    let names: BTreeSet<String> = g.keys().cloned().collect();
    for deps in g.values_mut() {
        deps.retain(|d| names.contains(d));
    }
    g
}

fn group_of(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

/// The group-level graph of a module graph.
fn groups(g: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, deps) in g {
        let from = group_of(m).to_owned();
        let entry = out.entry(from.clone()).or_default();
        for d in deps {
            if group_of(d) != from {
                entry.insert(group_of(d).to_owned());
            }
        }
    }
    out
}

/// Edges that go up the stack, and groups the stack does not name.
fn against_layers(groups: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let rank = |g: &str| LAYERS.iter().position(|l| *l == g);
    let mut wrong = Vec::new();
    for (g, deps) in groups {
        let Some(rg) = rank(g) else {
            wrong.push(format!("{g} is not in LAYERS: add it where it belongs"));
            continue;
        };
        for d in deps {
            if rank(d).is_some_and(|rd| rd > rg) {
                wrong.push(format!("{g} -> {d} goes up the stack"));
            }
        }
    }
    wrong
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on.insert(v);
        for w in &s.g[v] {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn the_groups_import_only_groups_below_them() {
    let g = groups(&graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src")));
    for l in LAYERS.iter().rev() {
        if let Some(deps) = g.get(*l) {
            eprintln!(
                "{l} -> {}",
                deps.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
    }
    let wrong = against_layers(&g);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_check_finds_an_edge_that_goes_up() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("sandbox".into())
        .or_default()
        .insert("rootfs".into());
    assert!(against_layers(&g).is_empty());
    g.entry("rootfs".into())
        .or_default()
        .insert("sandbox".into());
    assert_eq!(
        against_layers(&g),
        vec!["rootfs -> sandbox goes up the stack"]
    );
    g.entry("newthing".into()).or_default();
    assert_eq!(against_layers(&g).len(), 2);
}

#[test]
fn the_library_has_no_module_cycle() {
    let g = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    for (m, deps) in &g {
        eprintln!(
            "{m} -> {}",
            deps.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let found = cycles(&g);
    let shown: Vec<String> = found
        .iter()
        .map(|c| {
            let edges: Vec<String> = c
                .iter()
                .flat_map(|m| {
                    g[m].iter()
                        .filter(|d| c.contains(d))
                        .map(move |d| format!("{m} -> {d}"))
                })
                .collect();
            format!("{} ({})", c.join(", "), edges.join("; "))
        })
        .collect();
    assert!(found.is_empty(), "module cycles: {}", shown.join(" | "));
}

#[test]
fn the_check_finds_a_cycle() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let edge = |g: &mut BTreeMap<String, BTreeSet<String>>, a: &str, b: &str| {
        g.entry(a.into()).or_default().insert(b.into());
        g.entry(b.into()).or_default();
    };
    edge(&mut g, "pipeline", "distribution");
    edge(&mut g, "distribution", "evidence");
    edge(&mut g, "spec", "user");
    assert!(cycles(&g).is_empty());
    edge(&mut g, "evidence", "pipeline");
    assert_eq!(
        cycles(&g),
        vec![vec![
            "distribution".to_owned(),
            "evidence".to_owned(),
            "pipeline".to_owned()
        ]]
    );
}
