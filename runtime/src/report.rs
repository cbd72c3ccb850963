//! What the library tells the user while it works, and the one interface it goes through.
//!
//! The library never writes to the terminal: warnings (an unverified image, an old trust root), pull progress,
//! the lines of the helpers that serve a running sandbox (the HTTP bridge, the egress proxy) and `--timings` are
//! [`Event`]s handed to a [`Reporter`], which the caller implements. The CLI's reporter (cli/src/report.rs) owns
//! every byte written to the terminal: it decides the wording prefix, draws the progress display, and keeps
//! warnings out of its live region. Errors are not events: they are returned.
//!
//! The runner (`__runner`) is a child process with no reporter above it: its failures go back to the supervisor
//! over the sync channel (`sandbox::sync`), which returns them as errors. Diagnostics (`tracing`, `-v`) are logs,
//! not reports: the binary's subscriber decides where they go.

use std::time::Duration;

use crate::image::digest::Digest;

/// Receives the library's events. Called from the pipeline's thread, the pull's download threads (blob events for
/// different blobs interleave) and the bridge's and egress proxy's threads, hence `Send + Sync`.
pub trait Reporter: Send + Sync {
    /// One event; it should not block for long (downloads wait for it).
    fn report(&self, event: Event<'_>);
}

/// Something the user may want to know while the library works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// Something is not as it should be, but the run goes on (an image run unverified, an old trust root). One
    /// sentence, without a prefix.
    Warning(&'a str),
    /// A line from a helper that serves the sandbox while it runs (the HTTP bridge's URL or why it stopped, a
    /// refusal of the egress proxy). Without a prefix.
    Note(&'a str),
    /// How long a run's steps took (`--timings`), once the server has been started.
    Timings(&'a RunTimings),
    /// A pull starts (resolving the reference comes first; blob events follow for what is downloaded).
    PullStarted,
    /// A blob download starts (blobs already in the cache are not downloaded and not reported).
    BlobStarted {
        /// The blob.
        digest: &'a Digest,
        /// Its size.
        size: u64,
    },
    /// `received` bytes of a blob have arrived so far.
    BlobProgress {
        /// The blob.
        digest: &'a Digest,
        /// Bytes so far.
        received: u64,
    },
    /// A blob arrived whole and matched its digest.
    BlobFinished {
        /// The blob.
        digest: &'a Digest,
    },
    /// `applied` of the image's `total` layers are in the root being built (each applied, its diff_id and its
    /// blob's digest matched). Only a pull that unpacks while it downloads reports this.
    LayersApplied {
        /// Layers in the root so far.
        applied: usize,
        /// The image's layers.
        total: usize,
    },
    /// A pull ended with the image named in the cache.
    Pulled {
        /// The reference as pulled.
        reference: &'a str,
        /// Its manifest digest.
        manifest: &'a Digest,
        /// Whether it was in the cache already (nothing was downloaded).
        from_cache: bool,
    },
    /// A pull ended without an image (an error or a refusal follows): any live progress display goes.
    PullAbandoned,
}

/// The times of a run, from its start (`--timings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunTimings {
    /// Until the image's root was ready (resolved, verified, pulled, unpacked).
    pub image: Duration,
    /// Building the spec and the run directory.
    pub spec: Duration,
    /// The runner's namespaces.
    pub namespaces: Duration,
    /// libcontainer's create.
    pub create: Duration,
    /// libcontainer's start.
    pub start: Duration,
    /// From the start of the run to the server's exec.
    pub to_exec: Duration,
}

/// A reporter that drops every event (library callers and tests that want no output).
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Reporter for Silent {
    fn report(&self, _: Event<'_>) {}
}

/// What to show while pulling (the reporter's business; the settings layer records the user's choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// Nothing at all (`--quiet`).
    Quiet,
    /// One line per pulled image (stderr is not a terminal).
    #[default]
    Summary,
    /// Per-layer lines updated in place, then the summary line (stderr is a terminal).
    Terminal,
}

impl ProgressMode {
    /// `Quiet` if asked, else `Terminal` when stderr is a terminal, else `Summary`.
    pub fn detect(quiet: bool) -> ProgressMode {
        if quiet {
            ProgressMode::Quiet
        } else if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            ProgressMode::Terminal
        } else {
            ProgressMode::Summary
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Keeps every event as text, for tests that check what the library said.
    #[derive(Debug, Default)]
    pub(crate) struct Recorder(pub Mutex<Vec<String>>);

    impl Reporter for Recorder {
        fn report(&self, event: Event<'_>) {
            self.0.lock().unwrap().push(format!("{event:?}"));
        }
    }

    #[test]
    fn silent_drops_everything_and_a_recorder_keeps_it() {
        Silent.report(Event::Warning("x"));
        let r = Recorder::default();
        r.report(Event::Warning("old trust root"));
        r.report(Event::LayersApplied {
            applied: 1,
            total: 2,
        });
        assert_eq!(
            *r.0.lock().unwrap(),
            [
                "Warning(\"old trust root\")",
                "LayersApplied { applied: 1, total: 2 }"
            ]
        );
    }
}
