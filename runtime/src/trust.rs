//! Whether an image may run: provenance evidence found at the registry ([`evidence`]) and the verification
//! gate that decides on it against the policy ([`verification`]). Above [`crate::distribution`], whose
//! connection evidence discovery uses; below everything that runs an image.

pub mod accept;
pub mod evidence;
pub mod verification;
