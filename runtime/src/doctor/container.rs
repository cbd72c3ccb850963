//! Container detection, for fixes that only make sense inside one.

/// Evidence that we run inside a container, if there is any. Only evidence, not proof: VM images
/// built from container images keep their `/.dockerenv`, so messages say "looks like".
pub(super) fn detect_container(
    dockerenv: bool,
    containerenv: bool,
    proc_cgroup: &str,
) -> Option<&'static str> {
    if dockerenv {
        return Some("/.dockerenv exists");
    }
    if containerenv {
        return Some("/run/.containerenv exists");
    }
    let paths = proc_cgroup.lines().filter_map(|l| l.splitn(3, ':').nth(2));
    for path in paths {
        for (marker, evidence) in [
            ("docker", "our cgroup names docker"),
            ("libpod", "our cgroup names libpod"),
            ("kubepods", "our cgroup names kubepods"),
            ("containerd", "our cgroup names containerd"),
            ("/lxc", "our cgroup names lxc"),
        ] {
            if path.contains(marker) {
                return Some(evidence);
            }
        }
    }
    None
}

pub(super) const CONTAINER_USERNS_FIX: &str =
    "run with --privileged or --security-opt seccomp=unconfined, or on the host";
pub(super) const CONTAINER_MOUNT_FIX: &str =
    "run with --privileged (or --security-opt seccomp=unconfined \
     --security-opt apparmor=unconfined --security-opt systempaths=unconfined), or on the host";
