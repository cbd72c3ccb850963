//! The doctor's report: a status, a detail and a fix per check, rendered as text or as JSON.

use std::fmt;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Works.
    Ok,
    /// Sandboxes run, but with less isolation or fewer features than they could have.
    Warn,
    /// Sandboxes cannot be created.
    Fail,
}

impl Status {
    /// Its name in JSON: `ok`, `warn`, `fail`.
    pub fn key(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        })
    }
}

/// One diagnosed aspect of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Short name, for example `user namespaces`.
    pub name: &'static str,
    /// The outcome.
    pub status: Status,
    /// What was found, in one or two sentences.
    pub detail: String,
    /// What the user can do about it; `None` when nothing needs doing (or another check's fix applies).
    pub fix: Option<String>,
}

impl Check {
    pub(super) fn new(name: &'static str, status: Status, detail: impl Into<String>) -> Self {
        Check {
            name,
            status,
            detail: detail.into(),
            fix: None,
        }
    }

    pub(super) fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// The outcome of all checks, in the order they ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The checks, in the order of the module documentation.
    pub checks: Vec<Check>,
}

impl Report {
    /// No check failed: sandboxes can be created (possibly with warnings).
    pub fn ok(&self) -> bool {
        self.failures().next().is_none()
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> + '_ {
        self.checks.iter().filter(|c| c.status == Status::Fail)
    }

    /// The report as JSON: `{"ok": bool, "checks": [{"name", "status": "ok"|"warn"|"fail", "detail", "hint"}]}`,
    /// the checks in the order they ran, `hint` (the fix) `null` when nothing needs doing.
    pub fn to_json(&self) -> serde_json::Value {
        let checks: Vec<serde_json::Value> = self
            .checks
            .iter()
            .map(|c| {
                serde_json::json!({
                    "name": c.name,
                    "status": c.status.key(),
                    "detail": c.detail,
                    "hint": c.fix,
                })
            })
            .collect();
        serde_json::json!({ "ok": self.ok(), "checks": checks })
    }

    /// Human-readable text: one line per check, a `fix:` line under each check that has one, and a
    /// summary line. No colour; the caller decides where it goes.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for check in &self.checks {
            let tag = format!("[{}]", check.status);
            out.push_str(&format!("{tag:<7}{}: {}\n", check.name, check.detail));
            if let Some(fix) = &check.fix {
                out.push_str(&format!("       fix: {fix}\n"));
            }
        }
        let count = |s: Status| self.checks.iter().filter(|c| c.status == s).count();
        let (oks, warns, fails) = (count(Status::Ok), count(Status::Warn), count(Status::Fail));
        let verdict = if fails == 0 {
            "this host can run sandboxes"
        } else {
            "this host cannot run sandboxes"
        };
        out.push_str(&format!(
            "{oks} ok, {warns} {}, {fails} {}: {verdict}\n",
            plural(warns, "warning"),
            plural(fails, "failure"),
        ));
        out
    }
}

pub(super) fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}
