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

/// What a token given by the user must be.
const TOKEN_RULE: &str =
    "a token must be 32 to 256 characters of A-Z, a-z, 0-9, '.', '_', '~', '-' \
                          (e.g. the output of `openssl rand -hex 32`)";

/// Why a token cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The text is not a token.
    #[error("{}", TOKEN_RULE)]
    Malformed,
    /// The token file holds something that is not a token.
    #[error("{}: {}", .path.display(), TOKEN_RULE)]
    MalformedIn {
        /// The file.
        path: PathBuf,
    },
    /// The token file cannot be read.
    #[error("{}: {error}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The token file is not a regular file.
    #[error("{} is not a regular file", .path.display())]
    NotAFile {
        /// The file.
        path: PathBuf,
    },
    /// The token file is a symlink.
    #[error("{} is a symlink; give the file itself", .path.display())]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// The token file is someone else's.
    #[error("{} belongs to uid {owner}, not to you (uid {me})", .path.display())]
    NotYours {
        /// The file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        me: u32,
    },
    /// Others may read or write the token file.
    #[error("{} may be read or written by others (mode {mode:o}): chmod 600 it", .path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// No random token could be made.
    #[error("a random token: {0}")]
    Random(std::io::Error),
    /// The new token file could not be created.
    #[error("creating {}: {error}", .path.display())]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The new token could not be written.
    #[error("writing {}: {error}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file came and went while we looked.
    #[error("{}: created and removed again meanwhile", .path.display())]
    Raced {
        /// The file.
        path: PathBuf,
    },
}

/// Why `--port`/`--socket` cannot be served (each message names its flag).
#[derive(Debug, thiserror::Error)]
pub enum ExposeError {
    /// `--port` is not an address.
    #[error("--port: {0}")]
    Listen(#[from] super::ListenSpecError),
    /// A token file without anything to serve.
    #[error("--port-token-file goes with --port")]
    TokenFileAlone,
    /// The token file cannot be used.
    #[error("--port-token-file: {0}")]
    TokenFile(TokenError),
    /// No random token could be made.
    #[error("--port: a random token: {0}")]
    RandomToken(std::io::Error),
    /// The TCP port cannot be bound.
    #[error("--port: cannot listen on {addr}: {error}")]
    BindTcp {
        /// The address.
        addr: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// The socket path cannot be used.
    #[error("--socket {}: {error}", .path.display())]
    SocketPath {
        /// The path as given.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The socket path names no file.
    #[error("--socket {}: not a file path", .path.display())]
    NotAFilePath {
        /// The path as given.
        path: PathBuf,
    },
    /// The socket's directory cannot be created.
    #[error("--socket: creating {}: {error}", .dir.display())]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The socket's directory is not private to us.
    #[error(
        "--socket: the socket's directory {} must be a directory of yours (uid {me}) that nobody else may \
         enter; it is {}, uid {uid}, mode {mode:o} (hint: mkdir -m 700 a directory of your own, e.g. under \
         $XDG_RUNTIME_DIR)",
        .dir.display(),
        .what
    )]
    DirNotPrivate {
        /// The directory.
        dir: PathBuf,
        /// Our effective uid.
        me: u32,
        /// "a directory", or "not a directory".
        what: &'static str,
        /// Its owner.
        uid: u32,
        /// Its permission bits.
        mode: u32,
    },
    /// Something other than a stale socket of ours is at the path.
    #[error("--socket: {} exists (and is not a stale socket of yours)", .path.display())]
    InTheWay {
        /// The path.
        path: PathBuf,
    },
    /// The socket cannot be bound.
    #[error("--socket: cannot listen on {}: {error}", .path.display())]
    BindSocket {
        /// The path.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The socket's permissions cannot be set.
    #[error("--socket: chmod {}: {error}", .path.display())]
    Chmod {
        /// The path.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Another filesystem operation on the socket or its directory failed.
    #[error("--socket: {}: {error}", .path.display())]
    Socket {
        /// The path.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
}

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
    pub fn parse(s: &str) -> Result<Token, TokenError> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-');
        if !(TOKEN_MIN..=TOKEN_MAX).contains(&s.len()) || !s.chars().all(ok_char) {
            return Err(TokenError::Malformed);
        }
        Ok(Token {
            value: s.to_owned(),
            file: None,
        })
    }

    /// The token in `path`; when there is no such file, a fresh token written there (mode 0600). An existing
    /// file must be a regular file (not a symlink) of ours that nobody else may read.
    pub fn from_file(path: &Path) -> Result<Token, TokenError> {
        let read = |error| TokenError::Read {
            path: path.to_owned(),
            error,
        };
        for _ in 0..2 {
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(path);
            match opened {
                Ok(f) => {
                    let meta = f.metadata().map_err(read)?;
                    if !meta.is_file() {
                        return Err(TokenError::NotAFile {
                            path: path.to_owned(),
                        });
                    }
                    let me = nix::unistd::geteuid().as_raw();
                    if meta.uid() != me {
                        return Err(TokenError::NotYours {
                            path: path.to_owned(),
                            owner: meta.uid(),
                            me,
                        });
                    }
                    if meta.mode() & 0o077 != 0 {
                        return Err(TokenError::Open {
                            path: path.to_owned(),
                            mode: meta.mode() & 0o7777,
                        });
                    }
                    let mut s = String::new();
                    f.take(TOKEN_MAX as u64 + 2)
                        .read_to_string(&mut s)
                        .map_err(read)?;
                    let token = Token::parse(s.trim()).map_err(|_| TokenError::MalformedIn {
                        path: path.to_owned(),
                    })?;
                    return Ok(Token {
                        file: Some(path.to_owned()),
                        ..token
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let token = Token::generate().map_err(TokenError::Random)?;
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
                                .map_err(|error| TokenError::Write {
                                    path: path.to_owned(),
                                    error,
                                })?;
                            return Ok(Token {
                                file: Some(path.to_owned()),
                                ..token
                            });
                        }
                        // Another run made it meanwhile: read theirs.
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                        Err(error) => {
                            return Err(TokenError::Create {
                                path: path.to_owned(),
                                error,
                            })
                        }
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                    return Err(TokenError::Symlink {
                        path: path.to_owned(),
                    })
                }
                Err(e) => return Err(read(e)),
            }
        }
        Err(TokenError::Raced {
            path: path.to_owned(),
        })
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
    ) -> Result<Option<Expose>, ExposeError> {
        let tcp = port.map(super::parse_listen).transpose()?;
        if tcp.is_none() && socket.is_none() {
            return match token_file {
                Some(_) => Err(ExposeError::TokenFileAlone),
                None => Ok(None),
            };
        }
        let token = match token_file {
            Some(f) => Token::from_file(f).map_err(ExposeError::TokenFile)?,
            None => Token::generate().map_err(ExposeError::RandomToken)?,
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
pub fn listen(expose: &Expose) -> Result<(Listening, Option<SocketFile>), ExposeError> {
    let tcp = match expose.tcp {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .map_err(|error| ExposeError::BindTcp { addr, error })?,
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
pub fn bind_socket(
    path: &Path,
) -> Result<(std::os::unix::net::UnixListener, SocketFile), ExposeError> {
    let given = path;
    let path = std::path::absolute(given).map_err(|error| ExposeError::SocketPath {
        path: given.to_owned(),
        error,
    })?;
    let (Some(dir), Some(_)) = (path.parent(), path.file_name()) else {
        return Err(ExposeError::NotAFilePath {
            path: given.to_owned(),
        });
    };
    let fs_error = |path: &Path| {
        let path = path.to_owned();
        move |error| ExposeError::Socket { path, error }
    };
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => {
            return Err(ExposeError::CreateDir {
                dir: dir.to_owned(),
                error,
            })
        }
    }
    let me = nix::unistd::geteuid().as_raw();
    let meta = std::fs::symlink_metadata(dir).map_err(fs_error(dir))?;
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o077 != 0 {
        return Err(ExposeError::DirNotPrivate {
            dir: dir.to_owned(),
            me,
            what: if meta.is_dir() {
                "a directory"
            } else {
                "not a directory"
            },
            uid: meta.uid(),
            mode: meta.mode() & 0o7777,
        });
    }
    if let Ok(m) = std::fs::symlink_metadata(&path) {
        use std::os::unix::fs::FileTypeExt;
        let stale = m.file_type().is_socket()
            && m.uid() == me
            && std::os::unix::net::UnixStream::connect(&path)
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
        if !stale {
            return Err(ExposeError::InTheWay { path });
        }
        std::fs::remove_file(&path).map_err(fs_error(&path))?;
    }
    let listener =
        std::os::unix::net::UnixListener::bind(&path).map_err(|error| ExposeError::BindSocket {
            path: path.clone(),
            error,
        })?;
    let file = std::fs::symlink_metadata(&path)
        .map(|m| SocketFile {
            path: path.clone(),
            dev: m.dev(),
            ino: m.ino(),
        })
        .map_err(fs_error(&path))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|error| {
        ExposeError::Chmod {
            path: path.clone(),
            error,
        }
    })?;
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
        assert!(Token::from_file(&f)
            .unwrap_err()
            .to_string()
            .contains("chmod 600"));
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
            .to_string()
            .contains("nobody else"));
        // A file in the way: refused, left alone.
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "x").unwrap();
        assert!(bind_socket(&plain).is_err());
        assert!(plain.exists());
    }

    #[test]
    fn access_errors_name_the_flag_the_file_and_the_fix() {
        let p = PathBuf::from("/run/t");
        let io = || std::io::Error::from_raw_os_error(libc::EACCES);
        for (e, want) in [
            (
                ExposeError::TokenFile(TokenError::Open {
                    path: p.clone(),
                    mode: 0o644,
                }),
                "--port-token-file: /run/t may be read or written by others (mode 644): chmod 600 it",
            ),
            (
                ExposeError::TokenFile(TokenError::MalformedIn { path: p.clone() }),
                "--port-token-file: /run/t: a token must be 32 to 256 characters of A-Z, a-z, 0-9, '.', '_', \
                 '~', '-' (e.g. the output of `openssl rand -hex 32`)",
            ),
            (
                ExposeError::TokenFile(TokenError::NotYours {
                    path: p.clone(),
                    owner: 0,
                    me: 1000,
                }),
                "--port-token-file: /run/t belongs to uid 0, not to you (uid 1000)",
            ),
            (
                ExposeError::TokenFileAlone,
                "--port-token-file goes with --port",
            ),
            (
                ExposeError::BindTcp {
                    addr: "127.0.0.1:80".parse().unwrap(),
                    error: io(),
                },
                "--port: cannot listen on 127.0.0.1:80: Permission denied (os error 13)",
            ),
            (
                ExposeError::DirNotPrivate {
                    dir: p.clone(),
                    me: 1000,
                    what: "a directory",
                    uid: 1000,
                    mode: 0o755,
                },
                "--socket: the socket's directory /run/t must be a directory of yours (uid 1000) that nobody \
                 else may enter; it is a directory, uid 1000, mode 755 (hint: mkdir -m 700 a directory of \
                 your own, e.g. under $XDG_RUNTIME_DIR)",
            ),
            (
                ExposeError::InTheWay { path: p.clone() },
                "--socket: /run/t exists (and is not a stale socket of yours)",
            ),
        ] {
            assert_eq!(e.to_string(), want);
        }
        assert_eq!(
            Expose::from_flags(Some("x"), None, None)
                .unwrap_err()
                .to_string(),
            "--port: bad listen address \"x\": expected PORT or HOST:PORT (e.g. 8080, 127.0.0.1:8080, \
             [::1]:8080)"
        );
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
