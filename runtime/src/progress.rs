//! Pull progress on stderr.
//!
//! [`Progress`] receives blob events from the pull ([`crate::distribution::PullObserver`]) and, in
//! [`ProgressMode::Terminal`], redraws one line per layer being downloaded (short digest, bytes so far of total,
//! rate) and, while the pull unpacks, how many layers are in the root, in place, at most every
//! [`REDRAW_INTERVAL`]; the lines are erased when the pull ends. Every mode but
//! `Quiet` then prints one line per image actually pulled (nothing when it came from the cache). stdout is never
//! touched. The rendering is pure functions of the state and the time, unit-tested here.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cache::human_size;
use crate::distribution::PullObserver;
use crate::image::digest::Digest;

/// Least time between two redraws.
pub const REDRAW_INTERVAL: Duration = Duration::from_millis(100);

/// What to say while pulling.
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

/// One blob being downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobLine {
    /// The first 12 hex digits of its digest.
    pub short: String,
    /// Its size.
    pub total: u64,
    /// Bytes received so far.
    pub received: u64,
    /// When its download started.
    pub started: Instant,
    /// Whether it is complete.
    pub done: bool,
}

/// `a1b2c3d4e5f6  12.0 MiB / 40.0 MiB  3.0 MiB/s` (or `… done` when complete).
pub fn render_line(line: &BlobLine, now: Instant) -> String {
    let elapsed = now.saturating_duration_since(line.started).as_secs_f64();
    if line.done {
        return format!("{}  {} done", line.short, human_size(line.total));
    }
    let rate = if elapsed >= 0.05 {
        format!(
            "  {}/s",
            human_size((line.received as f64 / elapsed) as u64)
        )
    } else {
        String::new()
    };
    format!(
        "{}  {} / {}{rate}",
        line.short,
        human_size(line.received),
        human_size(line.total)
    )
}

/// What to write to replace the `previous` lines drawn last time with `lines`: up that many lines, then each
/// line cleared and written, then anything below cleared.
pub fn redraw(previous: usize, lines: &[String]) -> String {
    let mut out = String::new();
    if previous > 0 {
        out.push_str(&format!("\x1b[{previous}A"));
    }
    for line in lines {
        out.push_str("\r\x1b[2K");
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("\x1b[J");
    out
}

/// The line for a pulled image: `pulled REF (sha256:…): N layers, SIZE in T s`.
pub fn summary_line(
    reference: &str,
    manifest: &Digest,
    blobs: u64,
    bytes: u64,
    took: Duration,
) -> String {
    let fetched = if blobs == 0 {
        "all blobs were in the cache".to_owned()
    } else {
        format!(
            "{blobs} blob{} ({}) in {:.1} s",
            if blobs == 1 { "" } else { "s" },
            human_size(bytes),
            took.as_secs_f64()
        )
    };
    format!("pulled {reference} ({manifest}): {fetched}")
}

/// `unpacked 2 of 3 layers` (or `… layer` for one).
pub fn unpack_line(applied: usize, total: usize) -> String {
    format!(
        "unpacked {applied} of {total} layer{}",
        if total == 1 { "" } else { "s" }
    )
}

#[derive(Debug)]
struct State {
    lines: Vec<(Digest, BlobLine)>,
    /// Layers applied of the total, once the unpack has applied one.
    unpacked: Option<(usize, usize)>,
    drawn: usize,
    last_draw: Option<Instant>,
    blobs: u64,
    bytes: u64,
}

/// The pull observer that writes progress to stderr.
#[derive(Debug)]
pub struct Progress {
    mode: ProgressMode,
    started: Instant,
    state: Mutex<State>,
}

impl Progress {
    /// Progress in `mode`, starting now.
    pub fn new(mode: ProgressMode) -> Progress {
        Progress {
            mode,
            started: Instant::now(),
            state: Mutex::new(State {
                lines: Vec::new(),
                unpacked: None,
                drawn: 0,
                last_draw: None,
                blobs: 0,
                bytes: 0,
            }),
        }
    }

    /// The observer to pass to the pull (`None` when quiet).
    pub fn observer(&self) -> Option<&dyn PullObserver> {
        (self.mode != ProgressMode::Quiet).then_some(self as &dyn PullObserver)
    }

    fn draw(&self, state: &mut State, now: Instant, force: bool) {
        if self.mode != ProgressMode::Terminal {
            return;
        }
        if !force
            && state
                .last_draw
                .is_some_and(|t| now.duration_since(t) < REDRAW_INTERVAL)
        {
            return;
        }
        let lines = Self::lines(state, now);
        let _ = std::io::stderr().write_all(redraw(state.drawn, &lines).as_bytes());
        state.drawn = lines.len();
        state.last_draw = Some(now);
    }

    /// What a terminal shows: a line per blob being downloaded, then the unpack's count.
    fn lines(state: &State, now: Instant) -> Vec<String> {
        let mut lines: Vec<String> = state
            .lines
            .iter()
            .map(|(_, line)| render_line(line, now))
            .collect();
        if let Some((applied, total)) = state.unpacked {
            lines.push(unpack_line(applied, total));
        }
        lines
    }

    /// Erase the layer lines and, unless quiet, say what was pulled (nothing for an image from the cache).
    pub fn finish(&self, pulled: &crate::distribution::Pulled) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if self.mode == ProgressMode::Terminal && state.drawn > 0 {
            let _ = std::io::stderr().write_all(redraw(state.drawn, &[]).as_bytes());
            state.drawn = 0;
        }
        if self.mode != ProgressMode::Quiet && !pulled.from_cache {
            eprintln!(
                "{}",
                summary_line(
                    &pulled.reference.to_string(),
                    &pulled.manifest_digest,
                    state.blobs,
                    state.bytes,
                    self.started.elapsed()
                )
            );
        }
    }

    /// Whether the pull downloaded anything (blobs fetched from a registry; always false when quiet, which
    /// observes nothing).
    pub fn downloaded(&self) -> bool {
        self.state.lock().is_ok_and(|s| s.blobs > 0)
    }

    /// Erase the layer lines (after a failed pull, before the error is printed).
    pub fn abandon(&self) {
        if let Ok(mut state) = self.state.lock() {
            if self.mode == ProgressMode::Terminal && state.drawn > 0 {
                let _ = std::io::stderr().write_all(redraw(state.drawn, &[]).as_bytes());
                state.drawn = 0;
            }
        }
    }
}

impl PullObserver for Progress {
    fn blob_started(&self, digest: &Digest, size: u64) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let now = Instant::now();
        state.lines.push((
            digest.clone(),
            BlobLine {
                short: digest.hex().chars().take(12).collect(),
                total: size,
                received: 0,
                started: now,
                done: false,
            },
        ));
        self.draw(&mut state, now, true);
    }

    fn blob_progress(&self, digest: &Digest, received: u64) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if let Some((_, line)) = state.lines.iter_mut().find(|(d, _)| d == digest) {
            line.received = received;
        }
        self.draw(&mut state, Instant::now(), false);
    }

    fn blob_finished(&self, digest: &Digest) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let mut size = 0;
        if let Some((_, line)) = state.lines.iter_mut().find(|(d, _)| d == digest) {
            line.done = true;
            line.received = line.total;
            size = line.total;
        }
        state.blobs += 1;
        state.bytes += size;
        self.draw(&mut state, Instant::now(), true);
    }

    fn layers_applied(&self, applied: usize, total: usize) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        state.unpacked = Some((applied, total));
        self.draw(&mut state, Instant::now(), true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(received: u64, total: u64, started: Instant, done: bool) -> BlobLine {
        BlobLine {
            short: "0123456789ab".into(),
            total,
            received,
            started,
            done,
        }
    }

    #[test]
    fn a_line_has_bytes_total_and_rate() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(4);
        assert_eq!(
            render_line(&line(12 << 20, 40 << 20, t0, false), now),
            "0123456789ab  12.0 MiB / 40.0 MiB  3.0 MiB/s"
        );
        // No rate before there is time to measure one.
        assert_eq!(
            render_line(&line(100, 4096, t0, false), t0),
            "0123456789ab  100 B / 4.0 KiB"
        );
        assert_eq!(
            render_line(&line(40 << 20, 40 << 20, t0, true), now),
            "0123456789ab  40.0 MiB done"
        );
    }

    #[test]
    fn redraw_goes_back_over_what_was_drawn_and_clears_the_rest() {
        let lines = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(redraw(0, &lines), "\r\x1b[2Ka\n\r\x1b[2Kb\n\x1b[J");
        assert_eq!(redraw(3, &lines), "\x1b[3A\r\x1b[2Ka\n\r\x1b[2Kb\n\x1b[J");
        // Erasing: up, clear below.
        assert_eq!(redraw(2, &[]), "\x1b[2A\x1b[J");
        assert_eq!(redraw(0, &[]), "\x1b[J");
    }

    #[test]
    fn the_summary_line_counts_what_was_downloaded() {
        let d: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        assert_eq!(
            summary_line("ghcr.io/o/i:1", &d, 3, 5 << 20, Duration::from_millis(1500)),
            format!("pulled ghcr.io/o/i:1 ({d}): 3 blobs (5.0 MiB) in 1.5 s")
        );
        assert_eq!(
            summary_line("ghcr.io/o/i:1", &d, 0, 0, Duration::ZERO),
            format!("pulled ghcr.io/o/i:1 ({d}): all blobs were in the cache")
        );
    }

    #[test]
    fn events_update_the_lines_and_count_finished_blobs() {
        let p = Progress::new(ProgressMode::Summary);
        let a: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let b: Digest = format!("sha256:{}", "b".repeat(64)).parse().unwrap();
        p.blob_started(&a, 100);
        p.blob_started(&b, 50);
        p.blob_progress(&a, 60);
        p.blob_finished(&b);
        let state = p.state.lock().unwrap();
        assert_eq!(state.lines[0].1.received, 60);
        assert!(!state.lines[0].1.done);
        assert!(state.lines[1].1.done);
        assert_eq!((state.blobs, state.bytes), (1, 50));
        // Not a terminal: nothing was drawn.
        assert_eq!(state.drawn, 0);
        drop(state);
        // The unpack's count follows the blob lines once a layer is in the root.
        let now = Instant::now();
        assert_eq!(Progress::lines(&p.state.lock().unwrap(), now).len(), 2);
        p.layers_applied(1, 3);
        p.layers_applied(2, 3);
        let lines = Progress::lines(&p.state.lock().unwrap(), now);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2], "unpacked 2 of 3 layers");
        assert_eq!(unpack_line(1, 1), "unpacked 1 of 1 layer");
        assert!(Progress::new(ProgressMode::Quiet).observer().is_none());
    }
}
