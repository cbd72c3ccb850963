//! What an image is, before any of it is fetched or trusted: digests, references, OCI layouts on disk and the
//! image's runtime configuration. The bottom of the library's stack: it imports nothing but [`crate::dirs`].

pub mod config;
pub mod digest;
pub mod document;
pub mod layout;
pub mod reference;
