//! The server's environment: what the registry entry declares, what the user gives (`-e NAME=VALUE`, `-e NAME`
//! for the host's value, `--env-file FILE`), and the defaults — resolved by one pure function, [`resolve`].
//!
//! Nothing of thv-sandbox's own environment reaches the server unless the user names it with `-e NAME`. Values of
//! variables the registry marks secret are wrapped in [`EnvValue`], whose `Debug` prints `<redacted>`; no error
//! here ever contains a value.

use std::fmt;

use super::EnvVarSpec;

/// A variable's value. `Debug` shows it only when it is not secret.
#[derive(Clone, PartialEq, Eq)]
pub struct EnvValue {
    text: String,
    secret: bool,
}

impl EnvValue {
    /// A value; `secret` ones never show in `Debug`.
    pub fn new(text: String, secret: bool) -> EnvValue {
        EnvValue { text, secret }
    }

    /// The value itself, for delivering it to the server (never for messages).
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// Whether it is secret.
    pub fn is_secret(&self) -> bool {
        self.secret
    }
}

impl fmt::Debug for EnvValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.secret {
            f.write_str("<redacted>")
        } else {
            fmt::Debug::fmt(&self.text, f)
        }
    }
}

/// One variable of the server's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedVar {
    /// Its name.
    pub name: String,
    /// Its value (knows whether it is secret).
    pub value: EnvValue,
}

impl ResolvedVar {
    /// Whether the value is secret.
    pub fn secret(&self) -> bool {
        self.value.secret
    }
}

/// One `-e` argument.
#[derive(Clone, PartialEq, Eq)]
pub enum EnvArg {
    /// `-e NAME=VALUE`.
    Set {
        /// The name.
        name: String,
        /// The value.
        value: String,
    },
    /// `-e NAME`: the value of NAME in thv-sandbox's own environment.
    FromHost {
        /// The name.
        name: String,
    },
}

impl fmt::Debug for EnvArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The value may be a secret the registry marks as such; an `EnvArg` does not know, so it never shows.
        match self {
            EnvArg::Set { name, .. } => write!(f, "Set({name}=<value>)"),
            EnvArg::FromHost { name } => write!(f, "FromHost({name})"),
        }
    }
}

/// Why a variable the server needs was not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingVar {
    /// Its name.
    pub name: String,
    /// The registry's description.
    pub description: String,
    /// Whether it is secret.
    pub secret: bool,
    /// `-e NAME` named it but thv-sandbox's environment has no such variable.
    pub named_but_unset: bool,
}

/// Bad `-e` arguments, env files, or missing variables. Never carries a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// An `-e` argument with an invalid name.
    #[error("`-e {shown}`: `{name}` is not a valid environment variable name")]
    BadArg {
        /// The argument up to `=` (the value is not shown).
        shown: String,
        /// The name part.
        name: String,
    },
    /// A line of an env file that is not `NAME=VALUE`.
    #[error("{file}, line {line}: {problem}")]
    FileSyntax {
        /// The file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong (never the line's value).
        problem: String,
    },
    /// An env file cannot be read.
    #[error("cannot read env file {file}: {reason}")]
    FileRead {
        /// The file.
        file: String,
        /// The cause.
        reason: String,
    },
    /// Required variables were not given (all of them, in one error).
    #[error("{}", missing_message(.server, .vars))]
    Missing {
        /// The server's name.
        server: String,
        /// The variables.
        vars: Vec<MissingVar>,
    },
}

fn missing_message(server: &str, vars: &[MissingVar]) -> String {
    let mut s = format!(
        "`{server}` needs {} that {} not given:",
        if vars.len() == 1 {
            "an environment variable"
        } else {
            "environment variables"
        },
        if vars.len() == 1 { "was" } else { "were" }
    );
    let width = vars.iter().map(|v| v.name.len()).max().unwrap_or(0);
    for v in vars {
        s.push_str(&format!("\n  {:width$}  {}", v.name, v.description));
        if v.secret {
            s.push_str(" (secret)");
        }
        if v.named_but_unset {
            s.push_str(" [named with `-e`, but not set in thv-sandbox's environment]");
        }
    }
    s
}

impl EnvError {
    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            EnvError::BadArg { .. } => Some(
                "write `-e NAME=VALUE`, or `-e NAME` to pass NAME's value from thv-sandbox's environment".into(),
            ),
            EnvError::FileSyntax { .. } => Some(
                "an env file has one NAME=VALUE per line; lines starting with # and blank lines are ignored".into(),
            ),
            EnvError::FileRead { .. } => None,
            EnvError::Missing { vars, .. } => {
                let example = vars.first().map_or("NAME", |v| v.name.as_str());
                Some(format!(
                    "give each with `-e {example}` (its value taken from thv-sandbox's environment, e.g. the MCP \
                     client's `env` for this server — best for secrets), `-e {example}=VALUE`, or `--env-file FILE`"
                ))
            }
        }
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses one `-e` argument.
pub fn parse_arg(arg: &str) -> Result<EnvArg, EnvError> {
    let (name, value) = match arg.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (arg, None),
    };
    if !valid_name(name) {
        return Err(EnvError::BadArg {
            shown: if value.is_some() {
                format!("{name}=…")
            } else {
                name.to_owned()
            },
            name: name.to_owned(),
        });
    }
    Ok(match value {
        Some(v) => EnvArg::Set {
            name: name.to_owned(),
            value: v.to_owned(),
        },
        None => EnvArg::FromHost {
            name: name.to_owned(),
        },
    })
}

/// Parses an env file's text (`file` names it in errors): `NAME=VALUE` lines; blank lines and lines starting
/// with `#` are skipped; an optional `export ` prefix is accepted; a value wholly in matching single or double
/// quotes loses them (nothing else is interpreted: no escapes, no `$` expansion). Later lines win.
pub fn parse_file(file: &str, text: &str) -> Result<Vec<(String, String)>, EnvError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let err = |problem: String| EnvError::FileSyntax {
            file: file.to_owned(),
            line: i + 1,
            problem,
        };
        let body = trimmed.strip_prefix("export ").unwrap_or(trimmed);
        let Some((name, value)) = body.split_once('=') else {
            return Err(err("expected NAME=VALUE (no `=` on this line)".into()));
        };
        let name = name.trim_end();
        if !valid_name(name) {
            return Err(err(format!(
                "`{name}` is not a valid environment variable name"
            )));
        }
        let value = unquote(value);
        out.push((name.to_owned(), value.to_owned()));
    }
    Ok(out)
}

/// The largest env file read (as the configuration file).
pub const MAX_ENV_FILE: u64 = 1024 * 1024;

/// Reads and parses env files, in order. Each is read up to [`MAX_ENV_FILE`] bytes (`/dev/zero` ends there).
pub fn read_files(paths: &[std::path::PathBuf]) -> Result<Vec<(String, String)>, EnvError> {
    use std::io::Read;
    let mut out = Vec::new();
    for p in paths {
        let file = p.display().to_string();
        let err = |reason: String| EnvError::FileRead {
            file: file.clone(),
            reason,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(p)
            .and_then(|f| f.take(MAX_ENV_FILE + 1).read_to_end(&mut bytes))
            .map_err(|e| err(e.to_string()))?;
        if bytes.len() as u64 > MAX_ENV_FILE {
            return Err(err(format!("larger than {MAX_ENV_FILE} bytes")));
        }
        let text = String::from_utf8(bytes).map_err(|_| err("not UTF-8 text".into()))?;
        if text.contains('\0') {
            return Err(err("contains a NUL byte".into()));
        }
        out.extend(parse_file(&file, &text)?);
    }
    Ok(out)
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

/// What [`resolve`] works from.
#[derive(Debug, Clone, Copy)]
pub struct EnvInputs<'a> {
    /// The server's name, for the missing-variables error.
    pub server: &'a str,
    /// What the registry entry declares (empty for a plain image).
    pub specs: &'a [EnvVarSpec],
    /// The env files' variables, in order (later ones win).
    pub files: &'a [(String, String)],
    /// The `-e` arguments, in order (they win over env files; later ones win).
    pub args: &'a [EnvArg],
}

/// Resolves the server's environment: `-e` over env files over thv-sandbox's own environment over defaults.
/// Declared variables come first in the registry's order, then the others in the order given. `host` looks a name
/// up in thv-sandbox's own environment: only names the entry declares and names given as `-e NAME` are looked up,
/// so an MCP client's `env` block for the server works as it is, and nothing undeclared leaks from the host. Required variables not given, and `-e NAME` of a name the host
/// environment lacks, are reported all together as [`EnvError::Missing`].
pub fn resolve(
    inputs: &EnvInputs<'_>,
    host: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<ResolvedVar>, EnvError> {
    let (out, missing) = resolve_partly(inputs, host);
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(EnvError::Missing {
            server: inputs.server.to_owned(),
            vars: missing,
        })
    }
}

/// [`resolve`], with what is missing returned beside what was given instead of as an error (`inspect` lists the
/// missing variables; `run` refuses).
pub fn resolve_partly(
    inputs: &EnvInputs<'_>,
    host: &dyn Fn(&str) -> Option<String>,
) -> (Vec<ResolvedVar>, Vec<MissingVar>) {
    // name → (value as given, whether it came from somewhere private), in first-given order. Values from env
    // files and from thv-sandbox's own environment (`-e NAME`) are how users pass tokens: like declared secrets,
    // they are handed over in memory and never written to disk. A `-e NAME=VALUE` value is on the command line
    // already.
    let mut given: Vec<(String, (String, bool))> = Vec::new();
    let mut unset: Vec<String> = Vec::new();
    let set =
        |name: &str, value: String, private: bool, given: &mut Vec<(String, (String, bool))>| {
            match given.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = (value, private),
                None => given.push((name.to_owned(), (value, private))),
            }
        };
    for (n, v) in inputs.files {
        set(n, v.clone(), true, &mut given);
    }
    for a in inputs.args {
        match a {
            EnvArg::Set { name, value } => set(name, value.clone(), false, &mut given),
            EnvArg::FromHost { name } => match host(name) {
                Some(v) => set(name, v, true, &mut given),
                None => {
                    if !given.iter().any(|(n, _)| n == name) && !unset.contains(name) {
                        unset.push(name.clone());
                    }
                }
            },
        }
    }
    let secret_of = |name: &str| inputs.specs.iter().any(|s| s.name == name && s.secret);

    let mut out = Vec::new();
    let mut missing = Vec::new();
    for spec in inputs.specs {
        if let Some((_, (v, private))) = given.iter().find(|(n, _)| *n == spec.name) {
            out.push(var(&spec.name, v.clone(), spec.secret || *private));
        } else if let Some(v) = host(&spec.name) {
            // A variable the entry declares, set in thv-sandbox's own environment (as an MCP client's `env`
            // block sets it): taken as if given with `-e NAME`. Undeclared names never are.
            out.push(var(&spec.name, v, true));
        } else if let (false, Some(d)) = (spec.required, &spec.default) {
            out.push(var(&spec.name, d.clone(), spec.secret));
        } else if spec.required {
            missing.push(MissingVar {
                name: spec.name.clone(),
                description: spec.description.clone(),
                secret: spec.secret,
                named_but_unset: unset.contains(&spec.name),
            });
        }
    }
    for (n, (v, private)) in &given {
        if !inputs.specs.iter().any(|s| s.name == *n) {
            out.push(var(n, v.clone(), secret_of(n) || *private));
        }
    }
    // `-e NAME` of an undeclared (or optional) variable the host lacks: the user asked for it explicitly.
    for n in &unset {
        let declared = inputs.specs.iter().find(|s| s.name == *n);
        let already = missing.iter().any(|m: &MissingVar| m.name == *n)
            || out.iter().any(|r: &ResolvedVar| r.name == *n);
        if !already {
            missing.push(MissingVar {
                name: n.clone(),
                description: declared.map_or_else(
                    || "(not declared by the MCP server registry)".to_owned(),
                    |s| s.description.clone(),
                ),
                secret: declared.is_some_and(|s| s.secret),
                named_but_unset: true,
            });
        }
    }
    (out, missing)
}

fn var(name: &str, value: String, secret: bool) -> ResolvedVar {
    ResolvedVar {
        name: name.to_owned(),
        value: EnvValue::new(value, secret),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, required: bool, secret: bool, default: Option<&str>) -> EnvVarSpec {
        EnvVarSpec {
            name: name.into(),
            description: format!("the {name}"),
            required,
            secret,
            default: default.map(Into::into),
        }
    }

    fn no_host(_: &str) -> Option<String> {
        None
    }

    fn pairs(v: &[ResolvedVar]) -> Vec<(&str, &str, bool)> {
        v.iter()
            .map(|r| (r.name.as_str(), r.value.expose(), r.secret()))
            .collect()
    }

    #[test]
    fn flags_win_over_files_over_defaults_and_declared_come_first() {
        let specs = [
            spec("TOKEN", true, true, None),
            spec("HOST", false, false, Some("example.com")),
            spec("MODE", false, false, Some("ro")),
            spec("UNUSED", false, false, None),
        ];
        let files = parse_file("f.env", "MODE=rw\nEXTRA=1\nTOKEN=from-file\n").unwrap();
        let args = [
            parse_arg("TOKEN=from-flag").unwrap(),
            parse_arg("OTHER=x").unwrap(),
        ];
        let got = resolve(
            &EnvInputs {
                server: "s",
                specs: &specs,
                files: &files,
                args: &args,
            },
            &no_host,
        )
        .unwrap();
        assert_eq!(
            pairs(&got),
            vec![
                ("TOKEN", "from-flag", true),
                ("HOST", "example.com", false),
                // From the env file: kept off disk like a secret.
                ("MODE", "rw", true),
                ("EXTRA", "1", true),
                ("OTHER", "x", false),
            ]
        );
    }

    #[test]
    fn only_declared_or_named_host_variables_pass() {
        let host = |n: &str| match n {
            "TOKEN" => Some("host-token".to_owned()),
            "LEVEL" => Some("debug".to_owned()),
            "HOME" => Some("/root".to_owned()),
            "EXTRA" => Some("named".to_owned()),
            _ => None,
        };
        let specs = [
            spec("TOKEN", true, true, None),
            spec("LEVEL", false, false, Some("info")),
            spec("ABSENT", false, false, Some("dflt")),
        ];
        // Declared and set in thv-sandbox's environment (an MCP client's `env` block): taken, kept off disk like
        // a secret, over the entry's default; undeclared host variables (HOME) never pass.
        let got = resolve(
            &EnvInputs {
                server: "s",
                specs: &specs,
                files: &[],
                args: &[],
            },
            &host,
        )
        .unwrap();
        assert_eq!(
            pairs(&got),
            vec![
                ("TOKEN", "host-token", true),
                ("LEVEL", "debug", true),
                ("ABSENT", "dflt", false),
            ]
        );
        // `-e` still wins over the host's value; an undeclared name passes only when named.
        let args = [
            parse_arg("TOKEN=flag").unwrap(),
            parse_arg("EXTRA").unwrap(),
        ];
        let got = resolve(
            &EnvInputs {
                server: "s",
                specs: &specs,
                files: &[],
                args: &args,
            },
            &host,
        )
        .unwrap();
        assert_eq!(
            pairs(&got),
            vec![
                ("TOKEN", "flag", true),
                ("LEVEL", "debug", true),
                ("ABSENT", "dflt", false),
                ("EXTRA", "named", true),
            ]
        );
    }

    #[test]
    fn all_missing_variables_are_listed_with_descriptions_in_one_error() {
        let specs = [
            spec("A_TOKEN", true, true, None),
            spec("B_URL", true, false, Some("ignored for required")),
            spec("C_OPT", false, false, None),
        ];
        let args = [
            parse_arg("B_URL").unwrap(),
            parse_arg("NOT_DECLARED").unwrap(),
        ];
        let err = resolve(
            &EnvInputs {
                server: "github",
                specs: &specs,
                files: &[],
                args: &args,
            },
            &no_host,
        )
        .unwrap_err();
        let EnvError::Missing { vars, .. } = &err else {
            panic!("{err}")
        };
        let names: Vec<_> = vars.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["A_TOKEN", "B_URL", "NOT_DECLARED"]);
        let msg = err.to_string();
        assert!(
            msg.starts_with("`github` needs environment variables"),
            "{msg}"
        );
        let line = |n: &str| {
            msg.lines()
                .find(|l| l.trim_start().starts_with(n))
                .unwrap_or("")
        };
        assert!(line("A_TOKEN").ends_with(" the A_TOKEN (secret)"), "{msg}");
        assert!(
            line("B_URL").contains(" the B_URL [named with `-e`"),
            "{msg}"
        );
        assert!(
            line("NOT_DECLARED").contains("(not declared by the MCP server registry)"),
            "{msg}"
        );
        assert!(!msg.contains("C_OPT"), "{msg}");
        assert!(err.hint().unwrap().contains("-e A_TOKEN"));
    }

    #[test]
    fn secret_values_never_show_in_debug_or_errors() {
        let specs = [
            spec("TOKEN", true, true, None),
            spec("PLAIN", false, false, None),
        ];
        let args = [
            parse_arg("TOKEN=s3cr3t-value").unwrap(),
            parse_arg("PLAIN=visible").unwrap(),
        ];
        let got = resolve(
            &EnvInputs {
                server: "s",
                specs: &specs,
                files: &[],
                args: &args,
            },
            &no_host,
        )
        .unwrap();
        let dbg = format!("{got:?} {args:?}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
        assert!(
            dbg.contains("<redacted>") && dbg.contains("\"visible\""),
            "{dbg}"
        );
        let err = parse_arg("1BAD=s3cr3t").unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        let err = parse_file("f", "# c\nTOKEN s3cr3t\n").unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        let err = parse_file("f", "BAD NAME=s3cr3t\n").unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }

    #[test]
    fn env_files_skip_comments_and_blanks_and_say_which_line_is_wrong() {
        let text = "# comment\n\n  \nA=1\r\nexport B=two words\nC=\"quoted\"\nD='single'\nE=a=b\nF=\n   # indented\n";
        let got = parse_file("x.env", text).unwrap();
        let expect: Vec<(String, String)> = [
            ("A", "1"),
            ("B", "two words"),
            ("C", "quoted"),
            ("D", "single"),
            ("E", "a=b"),
            ("F", ""),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(got, expect);
        let err = parse_file("x.env", "A=1\n\nnot a line\n").unwrap_err();
        assert_eq!(
            err,
            EnvError::FileSyntax {
                file: "x.env".into(),
                line: 3,
                problem: "expected NAME=VALUE (no `=` on this line)".into()
            }
        );
        assert!(err.to_string().starts_with("x.env, line 3:"), "{err}");
        let err = parse_file("x.env", "A=1\n9X=2\n").unwrap_err();
        assert!(err.to_string().contains("line 2: `9X`"), "{err}");
    }

    #[test]
    fn arg_forms() {
        assert_eq!(
            parse_arg("A=b=c").unwrap(),
            EnvArg::Set {
                name: "A".into(),
                value: "b=c".into()
            }
        );
        assert_eq!(
            parse_arg("_A1").unwrap(),
            EnvArg::FromHost { name: "_A1".into() }
        );
        assert!(parse_arg("=x").is_err());
        assert!(parse_arg("").is_err());
        assert!(parse_arg("A-B=1").is_err());
    }

    #[test]
    fn an_empty_value_counts_as_given() {
        let specs = [spec("T", true, false, None)];
        let args = [parse_arg("T=").unwrap()];
        let got = resolve(
            &EnvInputs {
                server: "s",
                specs: &specs,
                files: &[],
                args: &args,
            },
            &no_host,
        )
        .unwrap();
        assert_eq!(pairs(&got), vec![("T", "", false)]);
    }

    #[test]
    fn values_from_files_and_the_host_environment_are_kept_off_disk() {
        let files = parse_file("f.env", "FROM_FILE=f\nLATER=file\n").unwrap();
        let args = [
            parse_arg("FROM_HOST").unwrap(),
            parse_arg("ON_ARGV=a").unwrap(),
            parse_arg("LATER=argv").unwrap(),
        ];
        let host = |n: &str| (n == "FROM_HOST").then(|| "h".to_owned());
        let got = resolve(
            &EnvInputs {
                server: "s",
                specs: &[],
                files: &files,
                args: &args,
            },
            &host,
        )
        .unwrap();
        assert_eq!(
            pairs(&got),
            vec![
                ("FROM_FILE", "f", true),
                // `-e NAME=VALUE` wins over the file and is on the command line anyway.
                ("LATER", "argv", false),
                ("FROM_HOST", "h", true),
                ("ON_ARGV", "a", false),
            ]
        );
    }

    #[test]
    fn env_files_are_bounded_and_text() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.env");
        std::fs::write(&big, "A=".repeat(MAX_ENV_FILE as usize)).unwrap();
        let e = read_files(&[big]).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
        let e = read_files(&["/dev/zero".into()]).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
        let nul = dir.path().join("nul.env");
        std::fs::write(&nul, "A=x\0y\n").unwrap();
        let e = read_files(&[nul]).unwrap_err().to_string();
        assert!(e.contains("NUL"), "{e}");
    }
}
