//! Check 1: `user` — who we run as. Root is fine: the sandbox always uses a user namespace.

use nix::unistd::{Uid, User};

use super::report::{Check, Status};

pub(super) fn user_name(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

pub(super) fn user_check(euid: u32, user: &str) -> Check {
    if euid == 0 {
        Check::new(
            "user",
            Status::Ok,
            "root (uid 0): the sandbox still uses a user namespace; container root is never host root",
        )
    } else {
        Check::new("user", Status::Ok, format!("uid {euid} ({user}): rootless"))
    }
}
