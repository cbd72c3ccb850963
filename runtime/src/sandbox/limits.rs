//! Resource limits of a sandbox: memory (swap included), CPU and processes, with their defaults and where each
//! value came from.
//!
//! The order of precedence: `--memory`/`--cpus`/`--pids-limit`, then the configuration file (`memory`, `cpus`,
//! `pids_limit`), then the registry entry's proposal (`resources`, see `crate::catalog`), then the default. A
//! limit the user set (flag or file) is *explicit*: where it cannot be enforced the run is refused. Defaults and
//! registry proposals that cannot be enforced give one warning and the run goes on (see
//! [`crate::sandbox::cgroup`]).

use serde::{Deserialize, Serialize};

/// Default memory limit: 2 GiB, as Docker's MCP gateway gives every server (`--memory 2Gb`). Enough for a
/// browser-driving server; a leaking or hostile one is stopped long before a laptop swaps to a halt.
pub const DEFAULT_MEMORY: u64 = 2 << 30;
/// Default CPU quota, in CPUs: one, as Docker's MCP gateway (`--cpus 1`). A server spinning in a loop takes one
/// core, never the whole machine; MCP servers wait on I/O almost all the time.
pub const DEFAULT_CPUS: f64 = 1.0;
/// Default number of processes and threads: 1024. A browser with its renderers stays well below; a fork bomb
/// stops there (the sandbox's `RLIMIT_NPROC` counts per user namespace, the pids controller per sandbox).
pub const DEFAULT_PIDS: u64 = 1024;

/// The least memory limit accepted (below it nothing starts, and the message would be confusing).
pub const MIN_MEMORY: u64 = 16 << 20;
/// The most CPUs a quota may name.
pub const MAX_CPUS: f64 = 1024.0;
/// The largest pids limit (the kernel's `pid_max` ceiling).
pub const MAX_PIDS: u64 = 4_194_304;
/// cpu.max / cfs period, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

/// Where a limit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitSource {
    /// The flag (`--memory` …).
    Flag,
    /// The configuration file.
    Config,
    /// The registry entry's proposal.
    Registry,
    /// thv-sandbox's default.
    Default,
}

impl LimitSource {
    /// The user asked for it: unenforceable means refused, not warned.
    pub fn explicit(self) -> bool {
        matches!(self, LimitSource::Flag | LimitSource::Config)
    }

    /// How `inspect` and `doctor` name it.
    pub fn describe(self) -> &'static str {
        match self {
            LimitSource::Flag => "flag",
            LimitSource::Config => "config file",
            LimitSource::Registry => "registry entry",
            LimitSource::Default => "default",
        }
    }
}

/// One limit and where it came from. `value` `None`: unlimited (the user said `--memory unlimited`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limit<T> {
    /// The value; `None` means no limit.
    pub value: Option<T>,
    /// Who set it.
    pub source: LimitSource,
}

/// The limits of one sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory in bytes; swap is not allowed beyond it (memory.swap.max 0, memsw = memory).
    pub memory: Limit<u64>,
    /// CPU quota, in CPUs (1.5 = 150 ms of CPU time per 100 ms).
    pub cpus: Limit<f64>,
    /// Processes and threads.
    pub pids: Limit<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: Limit {
                value: Some(DEFAULT_MEMORY),
                source: LimitSource::Default,
            },
            cpus: Limit {
                value: Some(DEFAULT_CPUS),
                source: LimitSource::Default,
            },
            pids: Limit {
                value: Some(DEFAULT_PIDS),
                source: LimitSource::Default,
            },
        }
    }
}

/// One limit as given as text: flag, file, registry (in that order; `None`: not given there).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitInputs {
    /// `--memory`, `--cpus`, `--pids-limit`.
    pub flag: Option<String>,
    /// The configuration file's key.
    pub config: Option<String>,
    /// The registry entry's proposal.
    pub registry: Option<String>,
}

/// A limit that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} `{value}` ({source_name}): {reason}")]
pub struct LimitError {
    /// `--memory` …
    pub what: &'static str,
    /// The text given.
    pub value: String,
    /// Where it was given.
    pub source_name: &'static str,
    /// Why it is refused, with what is accepted.
    pub reason: String,
}

impl Limits {
    /// Resolves each limit from its inputs (flag, then file, then registry, then default).
    pub fn resolve(
        memory: &LimitInputs,
        cpus: &LimitInputs,
        pids: &LimitInputs,
    ) -> Result<Limits, LimitError> {
        Ok(Limits {
            memory: pick(memory, "--memory", DEFAULT_MEMORY, parse_memory)?,
            cpus: pick(cpus, "--cpus", DEFAULT_CPUS, parse_cpus)?,
            pids: pick(pids, "--pids-limit", DEFAULT_PIDS, parse_pids)?,
        })
    }

    /// Whether any limit is set (not all `unlimited`).
    pub fn any(&self) -> bool {
        self.memory.value.is_some() || self.cpus.value.is_some() || self.pids.value.is_some()
    }

    /// The limits that are set, without their sources: `memory 2 GiB, pids 1024` (`none` when none is).
    pub fn describe_set(&self) -> String {
        let mut v = Vec::new();
        if let Some(m) = self.memory.value {
            v.push(format!("memory {}", format_bytes(m)));
        }
        if let Some(c) = self.cpus.value {
            v.push(format!("cpus {c}"));
        }
        if let Some(p) = self.pids.value {
            v.push(format!("pids {p}"));
        }
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    }

    /// One line: `memory 2 GiB (default), cpus 1 (default), pids 1024 (default)`.
    pub fn describe(&self) -> String {
        let one = |name: &str, v: Option<String>, s: LimitSource| {
            format!(
                "{name} {} ({})",
                v.unwrap_or_else(|| "unlimited".into()),
                s.describe()
            )
        };
        [
            one(
                "memory",
                self.memory.value.map(format_bytes),
                self.memory.source,
            ),
            one(
                "cpus",
                self.cpus.value.map(|c| format!("{c}")),
                self.cpus.source,
            ),
            one(
                "pids",
                self.pids.value.map(|p| p.to_string()),
                self.pids.source,
            ),
        ]
        .join(", ")
    }
}

fn pick<T: Copy>(
    inputs: &LimitInputs,
    what: &'static str,
    default: T,
    parse: fn(&str) -> Result<Option<T>, String>,
) -> Result<Limit<T>, LimitError> {
    for (text, source, name) in [
        (&inputs.flag, LimitSource::Flag, "flag"),
        (&inputs.config, LimitSource::Config, "config file"),
        (&inputs.registry, LimitSource::Registry, "registry entry"),
    ] {
        if let Some(text) = text {
            let value = parse(text.trim()).map_err(|reason| LimitError {
                what,
                value: text.chars().take(64).collect(),
                source_name: name,
                reason,
            })?;
            return Ok(Limit { value, source });
        }
    }
    Ok(Limit {
        value: Some(default),
        source: LimitSource::Default,
    })
}

fn unlimited(s: &str) -> bool {
    matches!(s, "unlimited" | "max" | "none")
}

/// `512m`, `2g`, `2GiB`, `1.5G`, `1048576` (bytes), `unlimited`. Suffixes are binary (k = KiB), as Docker's.
pub fn parse_memory(s: &str) -> Result<Option<u64>, String> {
    const HINT: &str =
        "expected a size such as 512m, 2g or 1.5GiB (binary units; a bare number is bytes), or `unlimited`";
    if unlimited(s) {
        return Ok(None);
    }
    let lower = s.to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(digits_end);
    let unit = unit.trim();
    let shift = match unit {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(HINT.into()),
    };
    if num.is_empty() || num.matches('.').count() > 1 {
        return Err(HINT.into());
    }
    let bytes = if num.contains('.') {
        let f: f64 = num.parse().map_err(|_| HINT.to_string())?;
        let b = f * (1u64 << shift) as f64;
        if !b.is_finite() || b >= u64::MAX as f64 {
            return Err("too large".into());
        }
        b as u64
    } else {
        let n: u64 = num.parse().map_err(|_| "too large".to_string())?;
        n.checked_mul(1u64 << shift)
            .ok_or_else(|| "too large".to_string())?
    };
    if bytes < MIN_MEMORY {
        return Err(format!("at least {} (16m)", format_bytes(MIN_MEMORY)));
    }
    Ok(Some(bytes))
}

/// `1`, `0.5`, `2.25`, `unlimited`: CPUs of quota (at least 0.01).
pub fn parse_cpus(s: &str) -> Result<Option<f64>, String> {
    if unlimited(s) {
        return Ok(None);
    }
    let v: f64 = s.parse().map_err(|_| {
        "expected a number of CPUs such as 1, 0.5 or 2.5, or `unlimited`".to_string()
    })?;
    if !v.is_finite() || !(0.01..=MAX_CPUS).contains(&v) {
        return Err(format!("from 0.01 to {MAX_CPUS}"));
    }
    Ok(Some(v))
}

/// `512`, `unlimited`: processes and threads (at least 8: a server needs a few threads).
pub fn parse_pids(s: &str) -> Result<Option<u64>, String> {
    if unlimited(s) {
        return Ok(None);
    }
    let v: u64 = s
        .parse()
        .map_err(|_| "expected a number of processes such as 512, or `unlimited`".to_string())?;
    if !(8..=MAX_PIDS).contains(&v) {
        return Err(format!("from 8 to {MAX_PIDS}"));
    }
    Ok(Some(v))
}

/// `512 MiB`, `2 GiB`, `1.5 GiB`, `1000 bytes`.
pub fn format_bytes(b: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        let one = 1u64 << shift;
        if b >= one {
            let v = b as f64 / one as f64;
            return if b.is_multiple_of(one) {
                format!("{} {unit}", b / one)
            } else {
                format!("{:.1} {unit}", v)
            };
        }
    }
    format!("{b} bytes")
}

/// The quota and period of `cpu.max` (v2) / `cpu.cfs_quota_us` (v1) for `cpus`.
pub fn cpu_quota_us(cpus: f64) -> u64 {
    ((cpus * CPU_PERIOD_US as f64).round() as u64).max(1_000)
}

/// The CFS burst for a quota of `cpus`: as much as the quota itself (the kernel's upper bound). A server that has
/// used less than its quota (MCP servers wait on I/O nearly all the time, and a fresh cgroup starts with unused
/// quota) may run on up to twice its CPUs for as long as that saved time lasts, at most one period's quota; on
/// average it still gets `cpus`, so a server spinning in a loop is held to them as before. Measured on a Node.js
/// server's start, which runs V8's compiler and GC threads beside its main thread: a 1-CPU quota without burst added
/// ~25–64 ms to a ~360 ms start; with it, none (BENCHMARKS.md, real servers).
pub fn cpu_burst_us(cpus: f64) -> u64 {
    cpu_quota_us(cpus)
}

/// What the sandbox's tmpfs mounts may hold in total, in MiB, under a memory limit: half of it. tmpfs pages are
/// charged to the sandbox's memory cgroup, so together with the server's own memory they count against the limit;
/// sized this way, filling the tmpfs mounts fails with ENOSPC before it alone reaches the limit, and what does
/// reach it is an out-of-memory stop that is reported.
pub fn tmpfs_budget_mib(memory: Option<u64>) -> Option<u64> {
    memory.map(|m| (m >> 20) / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse_in_binary_units() {
        assert_eq!(parse_memory("512m"), Ok(Some(512 << 20)));
        assert_eq!(parse_memory("512MiB"), Ok(Some(512 << 20)));
        assert_eq!(parse_memory("2g"), Ok(Some(2 << 30)));
        assert_eq!(parse_memory("2 GB"), Ok(Some(2 << 30)));
        assert_eq!(parse_memory("1.5g"), Ok(Some(3 << 29)));
        assert_eq!(parse_memory("16777216"), Ok(Some(16 << 20)));
        assert_eq!(parse_memory("unlimited"), Ok(None));
        for bad in [
            "",
            "m",
            "12x",
            "1.2.3g",
            "-5m",
            "1m",
            "99999999999999999999g",
            "1e3m",
        ] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cpus_and_pids_parse_within_bounds() {
        assert_eq!(parse_cpus("1"), Ok(Some(1.0)));
        assert_eq!(parse_cpus("0.5"), Ok(Some(0.5)));
        assert_eq!(parse_cpus("max"), Ok(None));
        for bad in ["0", "0.001", "-1", "NaN", "inf", "2000", "one"] {
            assert!(parse_cpus(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_pids("512"), Ok(Some(512)));
        assert_eq!(parse_pids("unlimited"), Ok(None));
        for bad in ["0", "7", "-1", "1.5", "99999999"] {
            assert!(parse_pids(bad).is_err(), "{bad}");
        }
        assert_eq!(cpu_quota_us(1.0), 100_000);
        assert_eq!(cpu_quota_us(0.5), 50_000);
        assert_eq!(cpu_quota_us(0.001), 1_000);
    }

    #[test]
    fn the_flag_wins_then_the_file_then_the_registry_then_the_default() {
        let i = |f: Option<&str>, c: Option<&str>, r: Option<&str>| LimitInputs {
            flag: f.map(str::to_owned),
            config: c.map(str::to_owned),
            registry: r.map(str::to_owned),
        };
        let none = LimitInputs::default();
        let l = Limits::resolve(&i(Some("1g"), Some("2g"), Some("3g")), &none, &none).unwrap();
        assert_eq!(l.memory.value, Some(1 << 30));
        assert_eq!(l.memory.source, LimitSource::Flag);
        assert!(l.memory.source.explicit());
        let l = Limits::resolve(&i(None, Some("2g"), Some("3g")), &none, &none).unwrap();
        assert_eq!(
            (l.memory.value, l.memory.source),
            (Some(2 << 30), LimitSource::Config)
        );
        let l = Limits::resolve(&i(None, None, Some("3g")), &none, &none).unwrap();
        assert_eq!(
            (l.memory.value, l.memory.source),
            (Some(3 << 30), LimitSource::Registry)
        );
        assert!(!l.memory.source.explicit());
        let l = Limits::resolve(&none, &none, &none).unwrap();
        assert_eq!(l, Limits::default());
        assert_eq!(
            l.describe(),
            "memory 2 GiB (default), cpus 1 (default), pids 1024 (default)"
        );
        let e = Limits::resolve(&none, &none, &i(None, None, Some("lots"))).unwrap_err();
        assert_eq!(e.what, "--pids-limit");
        assert!(e.to_string().contains("registry entry"), "{e}");
    }

    #[test]
    fn sizes_are_shown_in_binary_units() {
        assert_eq!(format_bytes(512 << 20), "512 MiB");
        assert_eq!(format_bytes(3 << 29), "1.5 GiB");
        assert_eq!(format_bytes(1000), "1000 bytes");
        assert_eq!(tmpfs_budget_mib(Some(512 << 20)), Some(256));
    }
}
