//! Seccomp variants (reviewed overlays on a base profile, embedded) and the user's own
//! override file (an overlay on whatever profile a server runs with).

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::seccomp::{
    check_group_against_default, default_seccomp, parse_seccomp, validate_group, ProfileError,
    RawGroup, Removal, SeccompProfile, SECCOMP_PROFILES,
};

/// Every embedded seccomp variant as `(name, JSON text)`. Each is an overlay on a base
/// profile of [`SECCOMP_PROFILES`] (its `extends`); the name equals the file's own `name`
/// field (a test checks it).
pub const SECCOMP_VARIANTS: &[(&str, &str)] = &[
    (
        "browser",
        include_str!("../profiles/seccomp/variants/browser.json"),
    ),
    (
        "strict",
        include_str!("../profiles/seccomp/variants/strict.json"),
    ),
];

/// The name the profile of an applied override gets: `<base>+override`. Groups an override
/// adds report this as their origin.
pub const OVERRIDE_ORIGIN: &str = "override";

/// Every name [`seccomp_variant`] accepts: the base profiles (`default` first), then the
/// variants, in embedding order.
pub fn variant_names() -> &'static [&'static str] {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    NAMES.get_or_init(|| {
        SECCOMP_PROFILES
            .iter()
            .chain(SECCOMP_VARIANTS)
            .map(|(name, _)| *name)
            .collect()
    })
}

/// The seccomp profile a registry entry selects by name: `default`, or a reviewed variant
/// such as `browser`, resolved against its base profile and validated. Each is resolved
/// once.
///
/// # Errors
///
/// [`ProfileError::UnknownVariant`] (listing the known names) for a name that is not
/// embedded. An embedded variant that does not resolve gives its error wrapped in
/// [`ProfileError::Overlay`]; the crate's tests resolve every variant, so a build that
/// passed them never returns one.
pub fn seccomp_variant(name: &str) -> Result<&'static SeccompProfile, ProfileError> {
    static RESOLVED: OnceLock<Vec<OnceLock<SeccompProfile>>> = OnceLock::new();
    if name == SECCOMP_PROFILES[0].0 {
        return Ok(default_seccomp());
    }
    let cells = RESOLVED.get_or_init(|| {
        SECCOMP_PROFILES
            .iter()
            .chain(SECCOMP_VARIANTS)
            .map(|_| OnceLock::new())
            .collect()
    });
    let Some(index) = variant_names().iter().position(|known| *known == name) else {
        return Err(ProfileError::UnknownVariant {
            name: name.to_owned(),
            known: variant_names().join(", "),
        });
    };
    let cell = &cells[index];
    if let Some(profile) = cell.get() {
        return Ok(profile);
    }
    let profile = if index < SECCOMP_PROFILES.len() {
        parse_seccomp(SECCOMP_PROFILES[index].1)?
    } else {
        resolve_variant(SECCOMP_VARIANTS[index - SECCOMP_PROFILES.len()].1)?
    };
    Ok(cell.get_or_init(|| profile))
}

/// Parses a variant file and resolves it against the embedded base profile it `extends`.
///
/// # Errors
///
/// A [`ProfileError::Overlay`] naming the variant, around the first problem found.
pub fn resolve_variant(json: &str) -> Result<SeccompProfile, ProfileError> {
    let raw: RawVariant = serde_json::from_str(json).map_err(|err| ProfileError::Overlay {
        origin: "seccomp variant".to_owned(),
        source: Box::new(err.into()),
    })?;
    let origin = format!("seccomp variant `{}`", raw.name);
    let located = |source: ProfileError| ProfileError::Overlay {
        origin: origin.clone(),
        source: Box::new(source),
    };
    if raw.name.trim().is_empty() {
        return Err(located(ProfileError::EmptyName));
    }
    let Some((_, base_json)) = SECCOMP_PROFILES
        .iter()
        .find(|(name, _)| *name == raw.extends)
    else {
        return Err(located(ProfileError::UnknownBase {
            base: raw.extends,
            known: SECCOMP_PROFILES
                .iter()
                .map(|(name, _)| *name)
                .collect::<Vec<_>>()
                .join(", "),
        }));
    };
    let base = parse_seccomp(base_json)?;
    let overlay = Overlay {
        name: raw.name.clone(),
        profile_name: raw.name,
        description: Some(raw.description),
        remove: raw.remove,
        groups: raw.groups,
    };
    overlay.apply(&base).map_err(located)
}

/// Applies the user's own override file to `base` (the profile the server would otherwise
/// run with). The override is the only place where rules may be added or removed beyond the
/// reviewed variants: it has the variant format without `name` and `extends`.
///
/// ```json
/// { "description": "why (optional)",
///   "remove": [ { "syscalls": ["io_setup"], "reason": "why" } ],
///   "groups": [ { "reason": "why", "action": "SCMP_ACT_ALLOW", "syscalls": ["ptrace"] } ] }
/// ```
///
/// Every `remove` entry and every group needs a reason; a removed syscall must have a rule
/// in `base`; an added syscall must not (remove it first to replace its rule); nothing on
/// [`crate::NEVER_ALLOWED`] may be allowed. The result is named `<base>+override`.
///
/// # Errors
///
/// A [`ProfileError::Overlay`] with origin `seccomp override` around the first problem,
/// located as `groups[N]` / `remove[N]` (JSON errors carry line and column).
pub fn apply_override(
    base: &SeccompProfile,
    override_json: &str,
) -> Result<SeccompProfile, ProfileError> {
    let located = |source: ProfileError| ProfileError::Overlay {
        origin: "seccomp override".to_owned(),
        source: Box::new(source),
    };
    let raw: RawOverride =
        serde_json::from_str(override_json).map_err(|err| located(err.into()))?;
    if raw.extends.is_some() {
        return Err(located(ProfileError::OverrideExtends));
    }
    let overlay = Overlay {
        name: OVERRIDE_ORIGIN.to_owned(),
        profile_name: format!("{}+{OVERRIDE_ORIGIN}", base.name()),
        description: raw.description,
        remove: raw.remove,
        groups: raw.groups,
    };
    overlay.apply(base).map_err(located)
}

/// A variant or override, before it is applied.
struct Overlay {
    /// The origin recorded on what it adds and removes.
    name: String,
    /// The resulting profile's name.
    profile_name: String,
    /// The resulting profile's description; `None` keeps the base's.
    description: Option<String>,
    remove: Vec<RawRemoval>,
    groups: Vec<RawGroup>,
}

impl Overlay {
    fn apply(self, base: &SeccompProfile) -> Result<SeccompProfile, ProfileError> {
        if self.remove.is_empty() && self.groups.is_empty() {
            return Err(ProfileError::EmptyOverlay);
        }

        // Removals: every name must have a rule in the base, once.
        let mut removed: Vec<&str> = Vec::new();
        for (entry, removal) in self.remove.iter().enumerate() {
            if removal.reason.trim().is_empty() {
                return Err(ProfileError::EmptyRemoveReason { entry });
            }
            if removal.syscalls.is_empty() {
                return Err(ProfileError::EmptyRemove { entry });
            }
            for name in &removal.syscalls {
                if removed.contains(&name.as_str()) {
                    return Err(ProfileError::RemovedTwice {
                        entry,
                        name: name.clone(),
                    });
                }
                if base.group_of(name).is_none() {
                    return Err(ProfileError::RemoveNotInBase {
                        entry,
                        name: name.clone(),
                        base: base.name().to_owned(),
                    });
                }
                removed.push(name);
            }
        }

        // The base's groups without the removed syscalls; groups left empty disappear.
        let mut groups: Vec<_> = base
            .groups
            .iter()
            .filter_map(|group| {
                let mut group = group.clone();
                group
                    .syscalls
                    .retain(|name| !removed.contains(&name.as_str()));
                (!group.syscalls.is_empty()).then_some(group)
            })
            .collect();

        // Added groups, validated like a profile's own and located by their index here.
        let mut first_seen: HashMap<String, usize> = HashMap::new();
        for (index, raw) in self.groups.into_iter().enumerate() {
            let group = validate_group(index, raw, &base.architectures, &self.name)?;
            check_group_against_default(index, &group, base.default_action, base.default_errno)?;
            for name in &group.syscalls {
                if let Some(&first) = first_seen.get(name) {
                    return Err(ProfileError::DuplicateSyscall {
                        name: name.clone(),
                        first,
                        second: index,
                    });
                }
                if !removed.contains(&name.as_str()) {
                    if let Some(base_group) = base
                        .groups
                        .iter()
                        .position(|g| g.syscalls.iter().any(|n| n == name))
                    {
                        return Err(ProfileError::AlreadyInBase {
                            group: index,
                            name: name.clone(),
                            base: base.name().to_owned(),
                            base_group,
                        });
                    }
                }
                first_seen.insert(name.clone(), index);
            }
            groups.push(group);
        }

        let mut removals = base.removals.clone();
        removals.extend(self.remove.into_iter().map(|removal| Removal {
            origin: self.name.clone(),
            syscalls: removal.syscalls,
            reason: removal.reason,
        }));
        Ok(SeccompProfile {
            name: self.profile_name,
            description: self
                .description
                .filter(|text| !text.trim().is_empty())
                .unwrap_or_else(|| base.description.clone()),
            extends: Some(base.name.clone()),
            removals,
            default_action: base.default_action,
            default_errno: base.default_errno,
            architectures: base.architectures.clone(),
            groups,
        })
    }
}

// ---- The file formats as written. ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariant {
    name: String,
    extends: String,
    description: String,
    #[serde(default)]
    remove: Vec<RawRemoval>,
    #[serde(default)]
    groups: Vec<RawGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    #[serde(default)]
    description: Option<String>,
    /// Present only to answer it with [`ProfileError::OverrideExtends`].
    #[serde(default)]
    extends: Option<IgnoredAny>,
    #[serde(default)]
    remove: Vec<RawRemoval>,
    #[serde(default)]
    groups: Vec<RawGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemoval {
    reason: String,
    syscalls: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::Location;
    use oci_spec::runtime::LinuxSeccompAction;

    fn rejected(json: &str) -> ProfileError {
        match apply_override(default_seccomp(), json) {
            Ok(profile) => panic!("override was accepted: {}", profile.name()),
            Err(ProfileError::Overlay { origin, source }) => {
                assert_eq!(origin, "seccomp override");
                *source
            }
            Err(other) => panic!("not located as an override: {other}"),
        }
    }

    #[test]
    fn override_removes_and_adds() {
        let profile = apply_override(
            default_seccomp(),
            r#"{
                "description": "debugging server",
                "remove": [ { "reason": "no native AIO here", "syscalls": ["io_setup", "io_submit"] } ],
                "groups": [ { "reason": "a debugger", "action": "SCMP_ACT_ALLOW", "syscalls": ["ptrace"] } ]
            }"#,
        )
        .unwrap();
        assert_eq!(profile.name(), "default+override");
        assert_eq!(profile.extends(), Some("default"));
        assert_eq!(profile.description(), "debugging server");
        assert!(profile.group_of("io_setup").is_none());
        assert!(profile.group_of("io_submit").is_none());
        assert_eq!(profile.group_of("io_destroy").unwrap().origin(), "default");
        let ptrace = profile.group_of("ptrace").unwrap();
        assert_eq!(ptrace.origin(), OVERRIDE_ORIGIN);
        assert_eq!(ptrace.action(), LinuxSeccompAction::ScmpActAllow);
        assert_eq!(profile.removals().len(), 1);
        assert_eq!(profile.removals()[0].origin(), OVERRIDE_ORIGIN);
        // The base is untouched.
        assert!(default_seccomp().group_of("io_setup").is_some());
        assert!(default_seccomp().group_of("ptrace").is_none());
    }

    #[test]
    fn override_replaces_a_rule_after_removing_it() {
        let profile = apply_override(
            default_seccomp(),
            r#"{ "remove": [ { "reason": "answer ENOSYS", "syscalls": ["inotify_init1"] } ],
                 "groups": [ { "reason": "file watchers fall back to polling", "action": "SCMP_ACT_ERRNO",
                               "errno": "ENOSYS", "syscalls": ["inotify_init1"] } ] }"#,
        )
        .unwrap();
        assert_eq!(
            profile.group_of("inotify_init1").unwrap().errno_ret(),
            Some(38)
        );
        // A removal that empties a group drops the group.
        let profile = apply_override(
            default_seccomp(),
            r#"{ "remove": [ { "reason": "r", "syscalls": ["arch_prctl"] } ] }"#,
        )
        .unwrap();
        assert_eq!(profile.groups().len(), default_seccomp().groups().len() - 1);
    }

    #[test]
    fn bad_overrides_are_located() {
        let err = rejected(
            r#"{ "groups": [ { "reason": "x", "action": "SCMP_ACT_ALLOW", "syscalls": ["ptrace"] },
                                              { "reason": " ", "action": "SCMP_ACT_ALLOW", "syscalls": ["kcmp"] } ] }"#,
        );
        assert!(
            matches!(err, ProfileError::EmptyReason { group: 1 }),
            "{err}"
        );

        let err =
            rejected(r#"{ "groups": [ { "action": "SCMP_ACT_ALLOW", "syscalls": ["kcmp"] } ] }"#);
        assert!(err.to_string().contains("missing field `reason`"), "{err}");
        assert!(err.to_string().contains("line 1"), "{err}");

        let err = rejected(r#"{ "remove": [ { "reason": "x", "syscalls": ["ptrace"] } ] }"#);
        assert_eq!(
            err.to_string(),
            "remove[0]: `ptrace` has no rule in base profile `default`, so there is nothing to \
             remove (syscalls without a rule are already denied)"
        );

        let err = rejected(r#"{ "remove": [ { "reason": "", "syscalls": ["read"] } ] }"#);
        assert!(matches!(err, ProfileError::EmptyRemoveReason { entry: 0 }));

        let err = rejected(
            r#"{ "remove": [ { "reason": "a", "syscalls": ["read"] }, { "reason": "b", "syscalls": ["read"] } ] }"#,
        );
        assert!(matches!(err, ProfileError::RemovedTwice { entry: 1, .. }));

        let err = rejected(
            r#"{ "groups": [ { "reason": "x", "action": "SCMP_ACT_ALLOW", "syscalls": ["clone"] } ] }"#,
        );
        assert!(
            matches!(err, ProfileError::AlreadyInBase { group: 0, ref name, .. } if name == "clone"),
            "{err}"
        );
        assert!(
            err.to_string().contains("add it to `remove` first"),
            "{err}"
        );

        let err = rejected(
            r#"{ "groups": [ { "reason": "x", "action": "SCMP_ACT_ALLOW", "syscalls": ["kcmp"] },
                                              { "reason": "y", "action": "SCMP_ACT_LOG", "syscalls": ["kcmp"] } ] }"#,
        );
        assert!(matches!(
            err,
            ProfileError::DuplicateSyscall {
                first: 0,
                second: 1,
                ..
            }
        ));

        let err = rejected(
            r#"{ "groups": [ { "reason": "x", "action": "SCMP_ACT_ERRNO", "errno": "EPERM", "syscalls": ["kcmp"] } ] }"#,
        );
        assert!(matches!(err, ProfileError::RedundantGroup { group: 0 }));

        let err = rejected(
            r#"{ "groups": [ { "reason": "x", "action": "SCMP_ACT_ALLOW", "only_on": ["riscv64"], "syscalls": ["kcmp"] } ] }"#,
        );
        assert!(matches!(err, ProfileError::UnknownHost { group: 0, .. }));

        let err = rejected(r#"{ "extends": "default", "groups": [] }"#);
        assert!(matches!(err, ProfileError::OverrideExtends));

        let err = rejected(r#"{ "name": "mine", "groups": [] }"#);
        assert!(err.to_string().contains("unknown field `name`"), "{err}");

        let err = rejected(r#"{ "description": "nothing" }"#);
        assert!(matches!(err, ProfileError::EmptyOverlay));
    }

    #[test]
    fn the_floor_holds_for_overrides() {
        for name in [
            "mount",
            "bpf",
            "kexec_load",
            "init_module",
            "keyctl",
            "perf_event_open",
        ] {
            let json = format!(
                r#"{{ "groups": [ {{ "reason": "x", "action": "SCMP_ACT_ALLOW", "syscalls": ["{name}"] }} ] }}"#
            );
            let err = rejected(&json);
            assert!(
                matches!(err, ProfileError::NeverAllowed { group: 0, name: ref n } if n == name),
                "{name}: {err}"
            );
        }
        // Conditional allowing does not get around it; denying with another errno is fine.
        let err = rejected(
            r#"{ "groups": [ { "reason": "x", "action": "SCMP_ACT_LOG", "syscalls": ["mount"],
                 "when_any_of": [[ { "arg": 3, "op": "SCMP_CMP_EQ", "value": 0 } ]] } ] }"#,
        );
        assert!(matches!(err, ProfileError::NeverAllowed { .. }));
        let profile = apply_override(
            default_seccomp(),
            r#"{ "groups": [ { "reason": "x", "action": "SCMP_ACT_ERRNO", "errno": "ENOSYS", "syscalls": ["mount"] } ] }"#,
        )
        .unwrap();
        assert_eq!(profile.group_of("mount").unwrap().errno_ret(), Some(38));
    }

    #[test]
    fn override_errors_read_well() {
        let err = apply_override(
            default_seccomp(),
            r#"{ "groups": [ { "reason": "x", "action": "SCMP_ACT_ALLOW", "syscalls": ["bpf"] } ] }"#,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("seccomp override: groups[0]: `bpf` may never be allowed"),
            "{err}"
        );
        assert_eq!(Location::Remove(3).to_string(), "remove[3]");
    }

    #[test]
    fn unknown_variant_lists_the_known_names() {
        let err = seccomp_variant("chrome").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown seccomp variant `chrome` (known: default, browser, strict)"
        );
    }

    #[test]
    fn variants_name_their_base_and_bad_bases_are_named() {
        let err = resolve_variant(
            r#"{ "name": "x", "extends": "nonesuch", "description": "d",
                 "remove": [ { "reason": "r", "syscalls": ["read"] } ] }"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "seccomp variant `x`: `extends` names `nonesuch`, which is not an embedded base \
             profile (known: default)"
        );
        let err = resolve_variant(r#"{ "name": "x", "description": "d" }"#).unwrap_err();
        assert!(err.to_string().contains("missing field `extends`"), "{err}");
    }
}
