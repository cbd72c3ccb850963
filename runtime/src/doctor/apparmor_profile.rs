//! The `apparmor userns` check: Ubuntu's restriction of unprivileged user namespaces, and whether this binary has
//! the AppArmor profile that lifts it.
//!
//! Since Ubuntu 23.10 the kernel knob `kernel.apparmor_restrict_unprivileged_userns = 1` makes a user namespace
//! created by an unprivileged, unconfined program worthless: the program gets no capabilities in it, so it cannot
//! write its uid map or mount anything. Programs that need one run under an AppArmor profile that allows `userns`
//! (Ubuntu ships such profiles for podman and bwrap; thv-sandbox's .deb ships `packaging/apparmor/thv-sandbox`).
//! The profile attaches by path, so a binary elsewhere (a downloaded release, `cargo install`) has none.
//!
//! What the process runs under is read from `/proc/self/attr/apparmor/current` (kernels with LSM stacking) or
//! `/proc/self/attr/current`: `unconfined`, or `NAME (MODE)`. Parsing and deciding are pure functions
//! ([`parse_confinement`], [`check`]); [`Facts::read`] is the only part that touches the host.

use std::fs;
use std::path::{Path, PathBuf};

use super::{Check, Status};

const NAME: &str = "apparmor userns";
const KNOB: &str = "/proc/sys/kernel/apparmor_restrict_unprivileged_userns";
/// Where the profile is installed (by the .deb, or by the user following the fix).
pub(crate) const PROFILE_PATH: &str = "/etc/apparmor.d/thv-sandbox";

/// What the process runs under, from `/proc/self/attr/…/current`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Confinement {
    /// No profile.
    Unconfined,
    /// A profile, by name, and its mode (`enforce`, `complain`, `unconfined`, …).
    Profile { name: String, mode: String },
}

/// `unconfined`, or `NAME (MODE)` (a profile name may itself contain spaces and parentheses: the mode is the
/// last parenthesised word). `None` for empty text.
pub(crate) fn parse_confinement(text: &str) -> Option<Confinement> {
    let text = text.trim_end_matches(['\n', '\0']).trim();
    if text.is_empty() {
        return None;
    }
    if text == "unconfined" {
        return Some(Confinement::Unconfined);
    }
    match text.strip_suffix(')').and_then(|t| t.rsplit_once(" (")) {
        Some((name, mode)) => Some(Confinement::Profile {
            name: name.to_string(),
            mode: mode.to_string(),
        }),
        None => Some(Confinement::Profile {
            name: text.to_string(),
            mode: "enforce".to_string(),
        }),
    }
}

/// What the check looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Facts {
    /// `kernel.apparmor_restrict_unprivileged_userns`; `None` where the kernel has no such knob.
    pub(crate) restrict: Option<u64>,
    /// `/sys/module/apparmor/parameters/enabled` is `Y`.
    pub(crate) apparmor_enabled: bool,
    /// What this process runs under; `None` when it cannot be read.
    pub(crate) confinement: Option<Confinement>,
    /// This binary.
    pub(crate) exe: PathBuf,
    /// [`PROFILE_PATH`] exists.
    pub(crate) profile_installed: bool,
    pub(crate) euid: u32,
}

impl Facts {
    /// Reads the facts of this host and process.
    pub(crate) fn read(euid: u32) -> Self {
        let restrict = fs::read_to_string(KNOB)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        let apparmor_enabled = fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|s| s.trim() == "Y");
        let confinement = [
            "/proc/self/attr/apparmor/current",
            "/proc/self/attr/current",
        ]
        .iter()
        .find_map(|p| {
            fs::read_to_string(p)
                .ok()
                .and_then(|t| parse_confinement(&t))
        });
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("thv-sandbox"));
        Facts {
            restrict,
            apparmor_enabled,
            confinement,
            exe,
            profile_installed: Path::new(PROFILE_PATH).exists(),
            euid,
        }
    }
}

/// The check, from the facts.
pub(crate) fn check(f: &Facts) -> Check {
    let knob = "kernel.apparmor_restrict_unprivileged_userns";
    match f.restrict {
        None => return Check::new(NAME, Status::Ok, format!("no {knob} on this kernel")),
        Some(0) => return Check::new(NAME, Status::Ok, format!("{knob} = 0")),
        Some(_) => {}
    }
    if !f.apparmor_enabled {
        return Check::new(
            NAME,
            Status::Ok,
            format!("{knob} = 1, but AppArmor is not enabled"),
        );
    }
    if let Some(Confinement::Profile { name, mode }) = &f.confinement {
        return Check::new(
            NAME,
            Status::Ok,
            format!("{knob} = 1; this binary runs under the AppArmor profile `{name}` ({mode})"),
        );
    }
    let mut detail = format!(
        "{knob} = 1 and no AppArmor profile applies to {}",
        f.exe.display()
    );
    if f.profile_installed {
        detail.push_str(&format!(
            " ({PROFILE_PATH} exists but is not loaded, or names another path)"
        ));
    }
    let status = if f.euid == 0 {
        detail.push_str(": root is not affected, unprivileged users cannot create sandboxes");
        Status::Warn
    } else {
        detail.push_str(
            ": the kernel gives this unprivileged program no capabilities in its user namespaces",
        );
        Status::Fail
    };
    Check::new(NAME, status, detail).with_fix(fix(&f.exe))
}

/// Both fixes: a profile for this binary, or the sysctl. For the packaged binary, the package's own profile first.
fn fix(exe: &Path) -> String {
    let lines: Vec<String> = profile_text(exe).lines().map(shell_quote).collect();
    let package = if exe == Path::new("/usr/bin/thv-sandbox") {
        "install and load the package's profile again: `sudo dpkg-reconfigure thv-sandbox`; or "
    } else {
        ""
    };
    format!(
        "{package}allow user namespaces for this binary with an AppArmor profile (the .deb installs it for \
         /usr/bin/thv-sandbox): `printf '%s\\n' {} | sudo tee {PROFILE_PATH} >/dev/null && sudo apparmor_parser -r \
         {PROFILE_PATH}`; or lift the restriction for every program: `sudo sysctl -w \
         kernel.apparmor_restrict_unprivileged_userns=0` (persist it in /etc/sysctl.d/)",
        lines.join(" ")
    )
}

/// The profile for the binary at `exe`: allows `userns`, confines nothing else. For `/usr/bin/thv-sandbox` it is
/// the rules of `packaging/apparmor/thv-sandbox`, which the .deb installs.
pub(crate) fn profile_text(exe: &Path) -> String {
    let path = exe.display().to_string();
    let attach = if path.chars().any(|c| c.is_whitespace() || c == '"') {
        format!("\"{}\"", path.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        path
    };
    format!(
        "abi <abi/4.0>,\n\
         include <tunables/global>\n\
         profile thv-sandbox {attach} flags=(unconfined) {{\n  \
         userns,\n  \
         include if exists <local/thv-sandbox>\n\
         }}\n"
    )
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ubuntu(confinement: Option<Confinement>, euid: u32) -> Facts {
        Facts {
            restrict: Some(1),
            apparmor_enabled: true,
            confinement,
            exe: PathBuf::from("/home/u/.local/bin/thv-sandbox"),
            profile_installed: false,
            euid,
        }
    }

    #[test]
    fn confinement_is_parsed_as_the_kernel_writes_it() {
        assert_eq!(
            parse_confinement("unconfined\n"),
            Some(Confinement::Unconfined)
        );
        assert_eq!(
            parse_confinement("thv-sandbox (unconfined)\n"),
            Some(Confinement::Profile {
                name: "thv-sandbox".into(),
                mode: "unconfined".into()
            })
        );
        assert_eq!(
            parse_confinement("/usr/bin/man (enforce)\0"),
            Some(Confinement::Profile {
                name: "/usr/bin/man".into(),
                mode: "enforce".into()
            })
        );
        // A name with a space; the mode is the last parenthesised word.
        assert_eq!(
            parse_confinement("my app (x) (complain)"),
            Some(Confinement::Profile {
                name: "my app (x)".into(),
                mode: "complain".into()
            })
        );
        assert_eq!(parse_confinement("\n"), None);
    }

    #[test]
    fn restricted_unconfined_user_gets_both_fixes_for_its_own_path() {
        let c = check(&ubuntu(Some(Confinement::Unconfined), 1000));
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.detail
                .contains("no AppArmor profile applies to /home/u/.local/bin/thv-sandbox"),
            "{}",
            c.detail
        );
        let fix = c.fix.unwrap();
        assert!(
            fix.contains(
                "'profile thv-sandbox /home/u/.local/bin/thv-sandbox flags=(unconfined) {'"
            ),
            "{fix}"
        );
        assert!(fix.contains("'  userns,'"), "{fix}");
        assert!(
            fix.contains("sudo apparmor_parser -r /etc/apparmor.d/thv-sandbox"),
            "{fix}"
        );
        assert!(
            fix.contains("sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"),
            "{fix}"
        );
    }

    #[test]
    fn the_packaged_binary_is_told_to_reconfigure_the_package_first() {
        let mut f = ubuntu(Some(Confinement::Unconfined), 1000);
        f.exe = PathBuf::from("/usr/bin/thv-sandbox");
        let fix = check(&f).fix.unwrap();
        assert!(
            fix.starts_with(
                "install and load the package's profile again: `sudo dpkg-reconfigure thv-sandbox`"
            ),
            "{fix}"
        );
        let elsewhere = check(&ubuntu(Some(Confinement::Unconfined), 1000))
            .fix
            .unwrap();
        assert!(!elsewhere.contains("dpkg-reconfigure"), "{elsewhere}");
    }

    #[test]
    fn the_fix_is_a_shell_command_that_writes_the_profile() {
        // Run the printf part of the fix through a real shell: it must print exactly the profile.
        let exe = PathBuf::from("/opt/it's here/thv-sandbox");
        let fix = fix(&exe);
        let start = fix.find("`printf").unwrap() + 1;
        let end = fix[start..].find(" | sudo").unwrap() + start;
        let out = std::process::Command::new("sh")
            .args(["-c", &fix[start..end]])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8(out.stdout).unwrap(), profile_text(&exe));
        assert!(
            profile_text(&exe).contains("profile thv-sandbox \"/opt/it's here/thv-sandbox\" flags")
        );
    }

    #[test]
    fn a_profile_or_no_restriction_passes() {
        let confined = Confinement::Profile {
            name: "thv-sandbox".into(),
            mode: "unconfined".into(),
        };
        let c = check(&ubuntu(Some(confined), 1000));
        assert_eq!(c.status, Status::Ok);
        assert!(c.detail.contains("profile `thv-sandbox`"), "{}", c.detail);
        assert_eq!(c.fix, None);

        let mut f = ubuntu(Some(Confinement::Unconfined), 1000);
        f.restrict = Some(0);
        assert_eq!(check(&f).status, Status::Ok);
        f.restrict = None;
        assert_eq!(check(&f).status, Status::Ok);
        f.restrict = Some(1);
        f.apparmor_enabled = false;
        assert_eq!(check(&f).status, Status::Ok);
    }

    #[test]
    fn root_is_warned_for_its_users_and_a_stray_profile_is_named() {
        let mut f = ubuntu(Some(Confinement::Unconfined), 0);
        f.profile_installed = true;
        let c = check(&f);
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.detail
                .contains("/etc/apparmor.d/thv-sandbox exists but is not loaded"),
            "{}",
            c.detail
        );
        assert!(c.fix.is_some());
    }

    #[test]
    fn the_packaged_profile_is_the_one_doctor_prints_for_usr_bin() {
        let packaged = include_str!("../../../packaging/apparmor/thv-sandbox");
        let rules: String = packaged
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(rules, profile_text(Path::new("/usr/bin/thv-sandbox")));
    }
}
