//! Who may use the `--port` bridge: the per-run token (or the user's own, from a file), and the unix-socket
//! listener whose peers must be the owner's uid (or root).
//!
//! - TCP: every request carries the token, either as the last path segment of the endpoint
//!   (`http://127.0.0.1:PORT/mcp/TOKEN`, so a client configuration holds one URL) or as
//!   `Authorization: Bearer TOKEN` to `http://127.0.0.1:PORT/mcp`. Compared in constant time.
//! - Unix socket (`--socket PATH`): the socket file is 0600 in a directory of the owner's that nobody else may
//!   enter (0700), and each peer's `SO_PEERCRED` uid must be the owner's or root; no token is needed there.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Shortest token accepted from a file: 32 characters (a hex token of 128 bits).
const TOKEN_MIN: usize = 32;
/// Longest token accepted from a file.
const TOKEN_MAX: usize = 256;

/// The secret a TCP client must present. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    value: String,
    /// Where it came from (`--port-token-file`), if not made for this run.
    file: Option<PathBuf>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// A fresh token for this run: 256 bits from the kernel's random source, as hex.
    pub fn generate() -> std::io::Result<Token> {
        Ok(Token {
            value: crate::dirs::random_hex(32)?,
            file: None,
        })
    }

    /// A token given by the user: 32 to 256 characters of `A-Z a-z 0-9 . _ ~ -` (what a URL path segment carries
    /// unescaped).
    pub fn parse(s: &str) -> Result<Token, String> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-');
        if !(TOKEN_MIN..=TOKEN_MAX).contains(&s.len()) || !s.chars().all(ok_char) {
            return Err(format!(
                "a token must be {TOKEN_MIN} to {TOKEN_MAX} characters of A-Z, a-z, 0-9, '.', '_', '~', '-' \
                 (e.g. the output of `openssl rand -hex 32`)"
            ));
        }
        Ok(Token {
            value: s.to_owned(),
            file: None,
        })
    }

    /// The token in `path`; when there is no such file, a fresh token written there (mode 0600). An existing
    /// file must be a regular file (not a symlink) of ours that nobody else may read.
    pub fn from_file(path: &Path) -> Result<Token, String> {
        let show = path.display();
        for _ in 0..2 {
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(path);
            match opened {
                Ok(f) => {
                    let meta = f.metadata().map_err(|e| format!("{show}: {e}"))?;
                    if !meta.is_file() {
                        return Err(format!("{show} is not a regular file"));
                    }
                    let me = nix::unistd::geteuid().as_raw();
                    if meta.uid() != me {
                        return Err(format!(
                            "{show} belongs to uid {}, not to you (uid {me})",
                            meta.uid()
                        ));
                    }
                    if meta.mode() & 0o077 != 0 {
                        return Err(format!(
                            "{show} may be read or written by others (mode {:o}): chmod 600 it",
                            meta.mode() & 0o7777
                        ));
                    }
                    let mut s = String::new();
                    f.take(TOKEN_MAX as u64 + 2)
                        .read_to_string(&mut s)
                        .map_err(|e| format!("{show}: {e}"))?;
                    let token = Token::parse(s.trim()).map_err(|e| format!("{show}: {e}"))?;
                    return Ok(Token {
                        file: Some(path.to_owned()),
                        ..token
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let token = Token::generate().map_err(|e| format!("a random token: {e}"))?;
                    let created = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                        .open(path);
                    match created {
                        Ok(mut f) => {
                            f.write_all(format!("{}\n", token.value).as_bytes())
                                .and_then(|()| f.sync_all())
                                .map_err(|e| format!("writing {show}: {e}"))?;
                            return Ok(Token {
                                file: Some(path.to_owned()),
                                ..token
                            });
                        }
                        // Another run made it meanwhile: read theirs.
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                        Err(e) => return Err(format!("creating {show}: {e}")),
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                    return Err(format!("{show} is a symlink; give the file itself"))
                }
                Err(e) => return Err(format!("{show}: {e}")),
            }
        }
        Err(format!("{show}: created and removed again meanwhile"))
    }

    /// The token's text.
    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// The file it was read from or written to, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Whether `given` is this token, in time independent of where they differ.
    pub(crate) fn matches(&self, given: &[u8]) -> bool {
        let ours = self.value.as_bytes();
        if ours.len() != given.len() {
            return false;
        }
        let diff = ours
            .iter()
            .zip(given)
            .fold(0u8, |acc, (a, b)| acc | std::hint::black_box(a ^ b));
        std::hint::black_box(diff) == 0
    }
}

/// What `run --port`/`--socket` expose, before anything is bound.
#[derive(Debug, Clone)]
pub struct Expose {
    /// `--port [HOST:]PORT`.
    pub tcp: Option<SocketAddr>,
    /// `--socket PATH`.
    pub socket: Option<PathBuf>,
    /// The token TCP clients must present.
    pub token: Token,
}

impl Expose {
    /// From the flags: `None` when neither `--port` nor `--socket` is given (then a token file is an error).
    pub fn from_flags(
        port: Option<&str>,
        socket: Option<&Path>,
        token_file: Option<&Path>,
    ) -> Result<Option<Expose>, String> {
        let tcp = port
            .map(super::parse_listen)
            .transpose()
            .map_err(|e| format!("--port: {e}"))?;
        if tcp.is_none() && socket.is_none() {
            return match token_file {
                Some(_) => Err("--port-token-file goes with --port".into()),
                None => Ok(None),
            };
        }
        let token = match token_file {
            Some(f) => Token::from_file(f).map_err(|e| format!("--port-token-file: {e}"))?,
            None => Token::generate().map_err(|e| format!("--port: a random token: {e}"))?,
        };
        Ok(Some(Expose {
            tcp,
            socket: socket.map(Path::to_owned),
            token,
        }))
    }
}

/// The bound listeners `serve_http` serves, and the token.
#[derive(Debug)]
pub struct Listening {
    /// The TCP listener (`--port`): every request needs the token.
    pub tcp: Option<std::net::TcpListener>,
    /// The unix-socket listener (`--socket`): peers must be the owner's uid or root.
    pub unix: Option<std::os::unix::net::UnixListener>,
    /// The unix socket's file, removed when the serving ends (and by every other clone's drop).
    pub socket_file: Option<SocketFile>,
    /// The token.
    pub token: Token,
}

impl Listening {
    /// The lines that tell the user how to connect (for stderr: they carry the token when it was made for this
    /// run; a token from a file is named by its file, not repeated).
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(addr) = self.tcp.as_ref().and_then(|l| l.local_addr().ok()) {
            match self.token.file() {
                None => out.push(format!(
                    "serving MCP (streamable HTTP) at http://{addr}/mcp/{}",
                    self.token.as_str()
                )),
                Some(f) => out.push(format!(
                    "serving MCP (streamable HTTP) at http://{addr}/mcp/TOKEN, TOKEN being the contents of {}",
                    f.display()
                )),
            }
            out.push(format!(
                "(or send `Authorization: Bearer TOKEN` to http://{addr}/mcp; requests without the token get 401)"
            ));
        }
        if let Some(path) = self
            .unix
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .and_then(|a| a.as_pathname().map(Path::to_owned))
        {
            out.push(format!(
                "serving MCP (streamable HTTP) at /mcp on the unix socket {} (uid {} only, no token)",
                path.display(),
                nix::unistd::geteuid()
            ));
        }
        out
    }
}

/// Binds what `expose` names. The socket file, if any, is removed when the serving ends, or when the returned
/// [`SocketFile`] is dropped, whichever comes first.
pub fn listen(expose: &Expose) -> Result<(Listening, Option<SocketFile>), String> {
    let tcp = match expose.tcp {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .map_err(|e| format!("--port: cannot listen on {addr}: {e}"))?,
        ),
        None => None,
    };
    let (unix, socket_file) = match &expose.socket {
        Some(path) => {
            let (l, f) = bind_socket(path)?;
            (Some(l), Some(f))
        }
        None => (None, None),
    };
    Ok((
        Listening {
            tcp,
            unix,
            socket_file: socket_file.clone(),
            token: expose.token.clone(),
        },
        socket_file,
    ))
}

/// A bound socket file, removed on drop of any clone (if it is still the one we bound).
#[derive(Debug, Clone)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if m.dev() == self.dev && m.ino() == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Binds a unix socket at `path`, mode 0600. Its directory must be the owner's and closed to everyone else
/// (0700; created so when missing). A stale socket of ours that nobody listens on is replaced.
pub fn bind_socket(path: &Path) -> Result<(std::os::unix::net::UnixListener, SocketFile), String> {
    let show = path.display();
    let path = std::path::absolute(path).map_err(|e| format!("--socket {show}: {e}"))?;
    let (Some(dir), Some(_)) = (path.parent(), path.file_name()) else {
        return Err(format!("--socket {show}: not a file path"));
    };
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("--socket: creating {}: {e}", dir.display())),
    }
    let me = nix::unistd::geteuid().as_raw();
    let meta =
        std::fs::symlink_metadata(dir).map_err(|e| format!("--socket: {}: {e}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o077 != 0 {
        return Err(format!(
            "--socket: the socket's directory {} must be a directory of yours (uid {me}) that nobody else may \
             enter; it is {}, uid {}, mode {:o} (hint: mkdir -m 700 a directory of your own, e.g. under \
             $XDG_RUNTIME_DIR)",
            dir.display(),
            if meta.is_dir() { "a directory" } else { "not a directory" },
            meta.uid(),
            meta.mode() & 0o7777
        ));
    }
    if let Ok(m) = std::fs::symlink_metadata(&path) {
        use std::os::unix::fs::FileTypeExt;
        let stale = m.file_type().is_socket()
            && m.uid() == me
            && std::os::unix::net::UnixStream::connect(&path)
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
        if !stale {
            return Err(format!(
                "--socket: {} exists (and is not a stale socket of yours)",
                path.display()
            ));
        }
        std::fs::remove_file(&path).map_err(|e| format!("--socket: {}: {e}", path.display()))?;
    }
    let listener = std::os::unix::net::UnixListener::bind(&path)
        .map_err(|e| format!("--socket: cannot listen on {}: {e}", path.display()))?;
    let file = std::fs::symlink_metadata(&path)
        .map(|m| SocketFile {
            path: path.clone(),
            dev: m.dev(),
            ino: m.ino(),
        })
        .map_err(|e| format!("--socket: {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("--socket: chmod {}: {e}", path.display()))?;
    Ok((listener, file))
}

/// Whether a unix-socket peer of this uid may use the bridge: the owner (our effective uid) or root.
pub(crate) fn peer_allowed(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_long_and_compared_whole() {
        let a = Token::generate().unwrap();
        assert_eq!(a.as_str().len(), 64);
        assert_ne!(a, Token::generate().unwrap());
        assert!(a.matches(a.as_str().as_bytes()));
        assert!(!a.matches(&a.as_str().as_bytes()[..63]));
        assert!(!a.matches(b""));
        let mut other = a.as_str().as_bytes().to_vec();
        other[0] ^= 1;
        assert!(!a.matches(&other));
        assert!(!format!("{a:?}").contains(a.as_str()));
    }

    #[test]
    fn user_tokens_must_be_long_and_url_safe() {
        assert!(Token::parse(&"a".repeat(32)).is_ok());
        assert!(Token::parse("0123456789abcdef0123456789ABCDEF._~-").is_ok());
        for bad in [
            "a".repeat(31),
            "a".repeat(257),
            format!("{}/", "a".repeat(32)),
            format!("{} ", "a".repeat(32)),
            format!("{}?", "a".repeat(32)),
            format!("{}%41", "a".repeat(32)),
        ] {
            assert!(Token::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_token_file_is_created_private_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        let t = Token::from_file(&f).unwrap();
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(Token::from_file(&f).unwrap().as_str(), t.as_str());
        assert_eq!(t.file(), Some(&*f));
        // Readable by others: refused.
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Token::from_file(&f).unwrap_err().contains("chmod 600"));
        // A symlink: refused.
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(Token::from_file(&link).is_err());
        // Junk: refused.
        let junk = dir.path().join("junk");
        std::fs::write(&junk, "short\n").unwrap();
        std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Token::from_file(&junk).is_err());
    }

    #[test]
    fn the_socket_is_private_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        // The tempdir is 0700 and ours.
        let path = dir.path().join("sub/mcp.sock");
        let (l, file) = bind_socket(&path).unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("sub"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        assert_eq!(
            std::fs::symlink_metadata(&path)
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        // In use: refused.
        assert!(bind_socket(&path).is_err());
        drop(l);
        drop(file);
        assert!(!path.exists());
        // A stale socket of ours (nobody listening) is replaced.
        let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(stale);
        let (_l, _f) = bind_socket(&path).unwrap();
        // A directory others may enter: refused.
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(bind_socket(&open.join("s"))
            .unwrap_err()
            .contains("nobody else"));
        // A file in the way: refused, left alone.
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "x").unwrap();
        assert!(bind_socket(&plain).is_err());
        assert!(plain.exists());
    }

    #[test]
    fn flags() {
        assert!(Expose::from_flags(None, None, None).unwrap().is_none());
        assert!(Expose::from_flags(None, None, Some(Path::new("/x"))).is_err());
        let e = Expose::from_flags(Some("0"), None, None).unwrap().unwrap();
        assert_eq!(e.tcp, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(e.token.as_str().len(), 64);
        assert!(Expose::from_flags(Some("x"), None, None).is_err());
    }
}
