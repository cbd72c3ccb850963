//! Secret environment variables: values that reach the server's environment and nothing else.
//!
//! libcontainer builds the server's environment from `config.json` in the bundle, a file on disk. Secret values
//! therefore never go there: the supervisor sends them to the runner over the in-memory channel
//! ([`crate::sandbox::sync`]), and the runner's executor adds them to the environment in the container's init process,
//! after the spec's environment is set and just before `execve`. They are never logged: `Debug` prints the name
//! only, and nothing serializes them except that channel.

use serde::{Deserialize, Serialize};

/// One secret variable.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretEnv {
    /// The variable's name (not secret).
    pub name: String,
    value: String,
}

impl SecretEnv {
    /// A secret variable.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> SecretEnv {
        SecretEnv {
            name: name.into(),
            value: value.into(),
        }
    }

    /// The value, for the one place that hands it to the server.
    pub fn expose(&self) -> &str {
        &self.value
    }
}

impl std::fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretEnv({}=<redacted>)", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = SecretEnv::new("TOKEN", "hunter2-very-secret");
        let shown = format!("{s:?} {:?} {:#?}", vec![s.clone()], Some(&s));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("TOKEN"));
        assert_eq!(s.expose(), "hunter2-very-secret");
    }
}
