//! The server's seccomp filter as a BPF program (issue 14): compiled from the profile's OCI form with libseccomp
//! once per profile, kept in the cache, and loaded by the container's init just before `execve`.
//!
//! libcontainer compiles a spec's `linux.seccomp` in every container's init: ~2 ms of each start, measured (the
//! step from the runner init's `build` to the executor took 6.2 ms with it and 4.2 ms without). The spec the
//! runner gets therefore has no seccomp section; its plan carries the compiled program instead
//! (`RunnerPlan::seccomp`), which the container's init loads from its executor ([`load`]) at the point where
//! libcontainer loads a spec's filter: after the whole set-up, with no_new_privs set and no capabilities left,
//! before the server's `execve`, so no code of the server ever runs without it. A plan without a well-formed
//! program is refused by the runner ([`check`]) before anything of the sandbox is created.
//!
//! [`compile`] translates the OCI form exactly as libcontainer 0.7's `initialize_seccomp` does (a test compares the
//! two programs instruction by instruction). The cached program is named by a digest of what it is compiled from
//! (format, host architecture, libseccomp's version, the OCI form) and carries a digest of itself; a cache that a
//! sandbox was given write access around (`rootfs::mark_exposed`) is not trusted with it: the program is then
//! compiled for each run.

use std::io::{self, Read, Seek, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use sha2::{Digest, Sha256};

/// Bumped when what a cached program is compiled from, or how, changes.
const FORMAT: &str = "thv-sandbox seccomp bpf v1";

/// One classic BPF instruction (`struct sock_filter`) is 8 bytes; the kernel takes at most 4096 of them.
const INSN: usize = 8;
const MAX_INSNS: usize = 4096;

/// The profile cannot be compiled, or a program cannot be kept, read or loaded.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// libseccomp refused a step of the compilation.
    #[error("compiling the seccomp filter: {what}: {source}")]
    Compile {
        /// The step.
        what: String,
        /// libseccomp's error.
        source: libseccomp::error::SeccompError,
    },
    /// Something libcontainer's translation would accept that this one does not (no profile of ours uses it).
    #[error("seccomp profile: {0} is not supported")]
    Unsupported(String),
    /// The program is not a whole number of instructions, empty, or too long for the kernel.
    #[error("the compiled seccomp filter is malformed ({0} bytes)")]
    Malformed(usize),
    /// Reading or writing a program.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
}

/// Where compiled programs are kept, and whether they may be taken from there.
#[derive(Debug, Clone)]
pub struct FilterCache {
    dir: PathBuf,
    trusted: bool,
}

impl FilterCache {
    /// The programs kept in the cache at `cache`; not trusted when the cache is marked exposed.
    pub fn in_cache(cache: &Path) -> FilterCache {
        FilterCache {
            dir: cache.join("seccomp-v1"),
            trusted: !crate::rootfs::is_exposed(cache),
        }
    }

    /// The program for `seccomp`: the kept one if there is a sound one, else compiled (and kept, when trusted).
    pub fn program(&self, seccomp: &LinuxSeccomp) -> Result<Vec<u8>, FilterError> {
        if !self.trusted {
            return compile(seccomp);
        }
        let path = self.dir.join(format!("{}.bpf", key(seccomp)));
        if let Ok(kept) = std::fs::read(&path) {
            if let Some(program) = unseal(&kept) {
                return Ok(program);
            }
            tracing::debug!("{}: not a sound program, compiled again", path.display());
        }
        let program = compile(seccomp)?;
        // A cache that cannot be written costs a compilation per run, nothing else.
        if let Err(e) = self.keep(&path, &program) {
            tracing::debug!("keeping the seccomp program: {e}");
        }
        Ok(program)
    }

    fn keep(&self, path: &Path, program: &[u8]) -> Result<(), FilterError> {
        let io = |source| FilterError::Io {
            path: path.to_owned(),
            source,
        };
        crate::dirs::private_dir(&self.dir).map_err(|e| io(io::Error::other(e.to_string())))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".bpf-")
            .tempfile_in(&self.dir)
            .map_err(io)?;
        tmp.write_all(&seal(program)).map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }
}

/// The name a program is kept under: a digest of everything it is compiled from.
fn key(seccomp: &LinuxSeccomp) -> String {
    let mut h = Sha256::new();
    h.update(FORMAT);
    h.update([0]);
    h.update(std::env::consts::ARCH);
    h.update([0]);
    if let Ok(v) = libseccomp::ScmpVersion::current() {
        h.update(format!("{}.{}.{}", v.major, v.minor, v.micro));
    }
    h.update([0]);
    h.update(serde_json::to_vec(seccomp).unwrap_or_default());
    hex::encode(h.finalize())
}

/// A kept program: the digest of the program, then the program.
fn seal(program: &[u8]) -> Vec<u8> {
    let mut out = Sha256::digest(program).to_vec();
    out.extend_from_slice(program);
    out
}

/// The program of a kept file, if its digest holds and it is well formed.
fn unseal(kept: &[u8]) -> Option<Vec<u8>> {
    let (digest, program) = kept.split_at_checked(32)?;
    (Sha256::digest(program).as_slice() == digest && check(program).is_ok())
        .then(|| program.to_vec())
}

/// A program is a whole number of instructions, at least one and at most the kernel's limit.
pub fn check(program: &[u8]) -> Result<(), FilterError> {
    let n = program.len();
    if n == 0 || !n.is_multiple_of(INSN) || n / INSN > MAX_INSNS {
        return Err(FilterError::Malformed(n));
    }
    Ok(())
}

/// Compiles `seccomp` into a BPF program with libseccomp, translating the OCI form as libcontainer 0.7 does.
pub fn compile(seccomp: &LinuxSeccomp) -> Result<Vec<u8>, FilterError> {
    let err = |what: &str| {
        let what = what.to_owned();
        move |source| FilterError::Compile { what, source }
    };
    if seccomp.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(FilterError::Unsupported("a filter flag".into()));
    }
    let notify = |a: LinuxSeccompAction| a == LinuxSeccompAction::ScmpActNotify;
    if notify(seccomp.default_action())
        || seccomp
            .syscalls()
            .iter()
            .flatten()
            .any(|s| notify(s.action()))
    {
        return Err(FilterError::Unsupported("SCMP_ACT_NOTIFY".into()));
    }
    let default = action(seccomp.default_action(), seccomp.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(err("new filter"))?;
    for &a in seccomp.architectures().iter().flatten() {
        ctx.add_arch(arch(a))
            .map_err(err(&format!("architecture {a:?}")))?;
    }
    // libcontainer leaves no_new_privs to the spec (it sets it before the filter); no effect on the program.
    ctx.set_ctl_nnp(false).map_err(err("SCMP_FLTATR_CTL_NNP"))?;
    for rule in seccomp.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            // libcontainer skips these too (libseccomp refuses a rule with the default action).
            continue;
        }
        for name in rule.names() {
            // A name libseccomp does not know is skipped, as libcontainer skips it (the profile's tests resolve
            // every name of ours against libseccomp's tables).
            let Ok(sc) = ScmpSyscall::from_name(name) else {
                tracing::debug!("seccomp: unknown syscall {name} skipped");
                continue;
            };
            let what = format!("rule for {name}");
            let Some(args) = rule.args() else {
                ctx.add_rule(act, sc).map_err(err(&what))?;
                continue;
            };
            let compares: Vec<ScmpArgCompare> = args
                .iter()
                .map(|a| {
                    ScmpArgCompare::new(a.index() as u32, op(a.op(), a.value_two()), a.value())
                })
                .collect();
            let mut seen = std::collections::HashSet::new();
            if args.iter().all(|a| seen.insert(a.index())) {
                ctx.add_rule_conditional(act, sc, &compares)
                    .map_err(err(&what))?;
            } else {
                // One argument compared twice: one rule per comparison (libseccomp allows one per argument).
                for c in &compares {
                    ctx.add_rule_conditional(act, sc, std::slice::from_ref(c))
                        .map_err(err(&what))?;
                }
            }
        }
    }
    let mut file = tempfile::tempfile().map_err(|source| FilterError::Io {
        path: "(anonymous temporary file)".into(),
        source,
    })?;
    ctx.export_bpf(file.as_fd()).map_err(err("export"))?;
    let mut program = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut program))
        .map_err(|source| FilterError::Io {
            path: "(anonymous temporary file)".into(),
            source,
        })?;
    check(&program)?;
    Ok(program)
}

/// A program in a run plan: base64 (a JSON array of numbers would be four times as long).
pub mod as_base64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `program` as a base64 string.
    pub fn serialize<S: Serializer>(program: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(program))
    }

    /// Reads a program back from its base64 string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <&str>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// Loads `program` as this thread's seccomp filter (`SECCOMP_SET_MODE_FILTER`, no flags: libseccomp's own load
/// of a filter without attributes). The caller must have set no_new_privs or hold CAP_SYS_ADMIN.
pub fn load(program: &[u8]) -> io::Result<()> {
    check(program).map_err(io::Error::other)?;
    let prog = libc::sock_fprog {
        len: (program.len() / INSN) as libc::c_ushort,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points to `len` instructions of `program`, which outlives the call; the kernel copies them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, FilterError> {
    let errno = errno.map_or(libc::EPERM, |e| e as i32);
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(
            u16::try_from(errno)
                .map_err(|_| FilterError::Unsupported(format!("SCMP_ACT_TRACE with {errno}")))?,
        ),
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(FilterError::Unsupported("SCMP_ACT_NOTIFY".into()))
        }
    })
}

fn op(op: LinuxSeccompOperator, mask: Option<u64>) -> ScmpCompareOp {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        // libcontainer 0.7 reads `valueTwo` as the mask (see `sandbox_profiles`' conversion).
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(mask.unwrap_or(0)),
    }
}

fn arch(a: Arch) -> ScmpArch {
    match a {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every profile thv-sandbox ships: the default and each variant, for this host.
    fn profiles() -> Vec<(&'static str, LinuxSeccomp)> {
        sandbox_profiles::variant_names()
            .iter()
            .map(|n| (*n, sandbox_profiles::seccomp_variant(n).unwrap().to_oci()))
            .collect()
    }

    /// Runs `child` in a forked child and returns its exit code (the child must only make system calls: it is a
    /// fork of the multi-threaded test process).
    fn in_child(child: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child runs `child` (system calls, no locks of other threads) and exits at once.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = child();
                // SAFETY: _exit ends the child without running anything of the parent's.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => match nix::sys::wait::waitpid(child, None)
            {
                Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => c,
                other => panic!("child: {other:?}"),
            },
        }
    }

    /// The filter libcontainer 0.7 itself loads for `seccomp`, read back from a child it loaded it in
    /// (`PTRACE_SECCOMP_GET_FILTER`: needs CAP_SYS_ADMIN).
    fn loaded_by_libcontainer(seccomp: &LinuxSeccomp) -> Vec<u8> {
        let (r, w) = nix::unistd::pipe().unwrap();
        // The child waits on a pipe of its own (on the first it would read back what it wrote).
        let (hold_r, hold_w) = nix::unistd::pipe().unwrap();
        // SAFETY: the child loads the filter (libcontainer allocates: glibc's malloc is usable in a forked child),
        // reports, and blocks in read(2) until it is killed.
        let child = match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // SAFETY: plain prctl; then libcontainer's own load, as in a container's init.
                unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
                let ok = std::panic::catch_unwind(|| {
                    libcontainer::seccomp::initialize_seccomp(seccomp).map_err(|e| e.to_string())
                });
                let ok = match ok {
                    Ok(Ok(_)) => 1u8,
                    Ok(Err(e)) => {
                        let _ = nix::unistd::write(std::io::stderr(), e.as_bytes());
                        2
                    }
                    Err(_) => 3,
                };
                let _ = nix::unistd::write(&w, &[ok]);
                let mut b = [0u8; 1];
                let _ = nix::unistd::read(hold_r.as_raw_fd(), &mut b);
                // SAFETY: as above.
                unsafe { libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => child,
        };
        drop(w);
        drop(hold_r);
        let mut ok = [0u8; 1];
        let n = nix::unistd::read(r.as_raw_fd(), &mut ok).unwrap();
        if n != 1 || ok[0] != 1 {
            let status = nix::sys::wait::waitpid(child, None);
            panic!("libcontainer could not load the filter: {n} bytes, {ok:?}, child {status:?}");
        }
        // SAFETY: PTRACE_ATTACH to our own child; it stops it (reaped below).
        let attached = unsafe { libc::ptrace(libc::PTRACE_ATTACH, child.as_raw(), 0, 0) };
        assert_eq!(attached, 0, "PTRACE_ATTACH: {}", io::Error::last_os_error());
        nix::sys::wait::waitpid(child, None).unwrap();
        // SAFETY: PTRACE_SECCOMP_GET_FILTER with a null buffer returns the number of instructions; with a buffer
        // of that many, fills it. The tracee is stopped.
        let n = unsafe {
            libc::ptrace(
                PTRACE_SECCOMP_GET_FILTER,
                child.as_raw(),
                0,
                std::ptr::null_mut::<libc::c_void>(),
            )
        };
        assert!(
            n > 0,
            "PTRACE_SECCOMP_GET_FILTER: {}",
            io::Error::last_os_error()
        );
        let mut program = vec![0u8; n as usize * INSN];
        // SAFETY: `program` holds `n` instructions.
        let got = unsafe {
            libc::ptrace(
                PTRACE_SECCOMP_GET_FILTER,
                child.as_raw(),
                0,
                program.as_mut_ptr(),
            )
        };
        assert_eq!(got, n);
        nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL).unwrap();
        nix::sys::wait::waitpid(child, None).unwrap();
        drop(hold_w);
        program
    }

    use std::os::fd::AsRawFd;

    /// `<linux/ptrace.h>`; not in the libc crate.
    const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;

    #[test]
    fn every_profile_compiles_to_the_program_libcontainer_would_load() {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "needs root (PTRACE_SECCOMP_GET_FILTER)"
            );
            eprintln!("skipped: needs root (PTRACE_SECCOMP_GET_FILTER)");
            return;
        }
        for (name, oci) in profiles() {
            let ours = compile(&oci).unwrap();
            assert!(
                ours.len() / INSN > 50,
                "{name}: {} instructions",
                ours.len() / INSN
            );
            assert!(
                ours == loaded_by_libcontainer(&oci),
                "{name}: the programs differ"
            );
        }
    }

    #[test]
    fn a_loaded_program_refuses_what_the_profile_refuses() {
        let program = compile(&profiles()[0].1).unwrap();
        let code = in_child(|| {
            // SAFETY: plain prctl and unshare calls.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            if load(&program).is_err() {
                return 2;
            }
            // A new user namespace: allowed to this unprivileged-capable process before, refused by the profile.
            // SAFETY: plain unshare call.
            match unsafe { libc::unshare(libc::CLONE_NEWUSER) } {
                0 => 3,
                _ if io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) => 0,
                _ => 4,
            }
        });
        assert_eq!(
            code, 0,
            "2: load failed, 3: unshare allowed, 4: other error"
        );
        // Without the load the same call works here (the test above is not vacuous).
        // SAFETY: plain unshare call.
        let code = in_child(|| match unsafe { libc::unshare(libc::CLONE_NEWUSER) } {
            0 => 0,
            _ => 1,
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn a_malformed_program_is_refused_and_never_loaded() {
        for bad in [
            &[][..],
            &[0u8; 7][..],
            &vec![0u8; (MAX_INSNS + 1) * INSN][..],
        ] {
            assert!(matches!(check(bad), Err(FilterError::Malformed(_))));
            assert!(load(bad).is_err());
        }
    }

    #[test]
    fn a_plan_carries_its_program_and_one_without_it_is_not_read() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Plan {
            #[serde(default, with = "as_base64")]
            seccomp: Vec<u8>,
        }
        let program = compile(&profiles()[0].1).unwrap();
        let text = serde_json::to_string(&Plan {
            seccomp: program.clone(),
        })
        .unwrap();
        assert!(text.len() < program.len() * 2, "{} bytes", text.len());
        assert_eq!(
            serde_json::from_str::<Plan>(&text).unwrap().seccomp,
            program
        );
        assert!(serde_json::from_str::<Plan>(r#"{"seccomp": "not base64!"}"#).is_err());
        // The runner checks what it got before it creates anything (`runner::init_main`): a plan without a program
        // (another version's) parses, and is refused there.
        for plan in ["{}", r#"{"seccomp": ""}"#] {
            let plan = serde_json::from_str::<Plan>(plan).unwrap();
            assert!(matches!(
                check(&plan.seccomp),
                Err(FilterError::Malformed(0))
            ));
        }
    }

    #[test]
    fn a_kept_program_is_used_and_a_damaged_one_is_compiled_again() {
        let cache = tempfile::tempdir().unwrap();
        let filters = FilterCache::in_cache(cache.path());
        let (_, oci) = &profiles()[0];
        let compiled = filters.program(oci).unwrap();
        let kept = filters.dir.join(format!("{}.bpf", key(oci)));
        assert_eq!(std::fs::read(&kept).unwrap(), seal(&compiled));
        // Another sound program in its place is what the next run gets: proof that the kept one is used.
        let other = compile(&profiles()[1].1).unwrap();
        assert_ne!(other, compiled);
        std::fs::write(&kept, seal(&other)).unwrap();
        assert_eq!(filters.program(oci).unwrap(), other);
        // A damaged one (its digest does not hold) is not: compiled again and kept again.
        let mut damaged = seal(&other);
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        std::fs::write(&kept, damaged).unwrap();
        assert_eq!(filters.program(oci).unwrap(), compiled);
        assert_eq!(std::fs::read(&kept).unwrap(), seal(&compiled));
        // Each profile has its own.
        assert_ne!(key(oci), key(&profiles()[1].1));
    }

    #[test]
    fn an_exposed_cache_is_not_trusted_with_programs() {
        let cache = tempfile::tempdir().unwrap();
        let (_, oci) = &profiles()[0];
        let compiled = FilterCache::in_cache(cache.path()).program(oci).unwrap();
        let kept = cache
            .path()
            .join("seccomp-v1")
            .join(format!("{}.bpf", key(oci)));
        let other = compile(&profiles()[1].1).unwrap();
        std::fs::write(&kept, seal(&other)).unwrap();
        crate::rootfs::mark_exposed(cache.path()).unwrap();
        assert_eq!(
            FilterCache::in_cache(cache.path()).program(oci).unwrap(),
            compiled
        );
    }

    #[test]
    fn what_no_profile_uses_is_refused() {
        let mut oci = profiles()[0].1.clone();
        oci.set_default_action(LinuxSeccompAction::ScmpActNotify);
        assert!(matches!(compile(&oci), Err(FilterError::Unsupported(_))));
        let mut oci = profiles()[0].1.clone();
        oci.set_flags(Some(vec![
            oci_spec::runtime::LinuxSeccompFilterFlag::SeccompFilterFlagLog,
        ]));
        assert!(matches!(compile(&oci), Err(FilterError::Unsupported(_))));
    }
}
