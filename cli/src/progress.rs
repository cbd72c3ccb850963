//! What the user sees on stderr while the runtime works: the CLI's [`Reporter`].
//!
//! [`Terminal`] receives the runtime's events. Warnings (`thv-sandbox: warning: …`), the notes of the bridge and
//! the egress proxy (`thv-sandbox: …`) and `--timings` become lines. Pull progress, in [`ProgressMode::Terminal`],
//! is a live region at the bottom: one line per layer being downloaded (short digest, bytes so far of total, rate)
//! and, while the pull unpacks, how many layers are in the root, redrawn in place at most every
//! [`REDRAW_INTERVAL`] and erased when the pull ends. Every mode but `Quiet` then prints one line per image
//! actually pulled (nothing when it came from the cache). stdout is never touched.
//!
//! A line said while the region is live goes out above it: the region is erased, the line written, the region
//! drawn again below, so nothing said is ever overwritten. The region is erased by moving up the rows it took,
//! counted at the terminal's width (a line wider than the terminal wraps onto several rows), not its lines. The
//! rendering is pure functions of the state, the time and the width, unit-tested here.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use thv_sandbox_runtime::cache::human_size;
use thv_sandbox_runtime::image::digest::Digest;
use thv_sandbox_runtime::report::{Event, ProgressMode, Reporter, RunTimings};

/// Least time between two redraws.
pub(crate) const REDRAW_INTERVAL: Duration = Duration::from_millis(100);

/// One blob being downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlobLine {
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
pub(crate) fn render_line(line: &BlobLine, now: Instant) -> String {
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

/// The rows `line` takes on a terminal `width` columns wide (`None`: unknown, one row). A line exactly as wide as
/// the terminal takes one row: the cursor waits at its end, and the newline moves it down once.
pub(crate) fn rows(line: &str, width: Option<usize>) -> usize {
    let chars = line.chars().count();
    match width {
        Some(w) if w > 0 => chars.div_ceil(w).max(1),
        _ => 1,
    }
}

/// What to write to replace what was drawn last time (`previous_rows` rows, ending at the cursor) with `lines`:
/// up that many rows, then each line cleared and written, then anything below cleared.
pub(crate) fn redraw(previous_rows: usize, lines: &[String]) -> String {
    let mut out = String::new();
    if previous_rows > 0 {
        out.push_str(&format!("\x1b[{previous_rows}A"));
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
pub(crate) fn summary_line(
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
pub(crate) fn unpack_line(applied: usize, total: usize) -> String {
    format!(
        "unpacked {applied} of {total} layer{}",
        if total == 1 { "" } else { "s" }
    )
}

/// `thv-sandbox: timings: image 1.0 ms, …`.
pub(crate) fn timings_line(t: &RunTimings) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "thv-sandbox: timings: image {:.1} ms, spec {:.1} ms, runner namespaces {:.1} ms, create {:.1} ms, start \
         {:.1} ms, to exec {:.1} ms",
        ms(t.image),
        ms(t.spec),
        ms(t.namespaces),
        ms(t.create),
        ms(t.start),
        ms(t.to_exec),
    )
}

#[derive(Debug)]
struct State<W> {
    out: W,
    lines: Vec<(Digest, BlobLine)>,
    /// Layers applied of the total, once the unpack has applied one.
    unpacked: Option<(usize, usize)>,
    /// The lines of the live region as last drawn, and the rows they took.
    drawn: Vec<String>,
    drawn_rows: usize,
    last_draw: Option<Instant>,
    started: Instant,
    blobs: u64,
    bytes: u64,
}

/// The reporter that writes to stderr (or, in tests, to any writer at a given width).
#[derive(Debug)]
pub(crate) struct Terminal<W: Write + Send = std::io::Stderr> {
    mode: ProgressMode,
    /// The terminal's width: `None` to ask the terminal at each draw.
    width: Option<usize>,
    state: Mutex<State<W>>,
}

impl Terminal<std::io::Stderr> {
    /// Reports on stderr; pull progress per `mode`.
    pub(crate) fn stderr(mode: ProgressMode) -> Self {
        Terminal::new(mode, std::io::stderr(), None)
    }
}

impl<W: Write + Send> Terminal<W> {
    /// Reports to `out`, `width` columns wide (`None`: stderr's width, asked at each draw).
    pub(crate) fn new(mode: ProgressMode, out: W, width: Option<usize>) -> Self {
        Terminal {
            mode,
            width,
            state: Mutex::new(State {
                out,
                lines: Vec::new(),
                unpacked: None,
                drawn: Vec::new(),
                drawn_rows: 0,
                last_draw: None,
                started: Instant::now(),
                blobs: 0,
                bytes: 0,
            }),
        }
    }

    fn width(&self) -> Option<usize> {
        self.width.or_else(stderr_width)
    }

    /// The rows `lines` take at the terminal's width now.
    fn rows_of(&self, lines: &[String]) -> usize {
        let width = self.width();
        lines.iter().map(|l| rows(l, width)).sum()
    }

    /// Draws the live region again (a terminal only; at most every [`REDRAW_INTERVAL`] unless `force`).
    fn draw(&self, state: &mut State<W>, now: Instant, force: bool) {
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
        let text = redraw(state.drawn_rows, &lines);
        let _ = state.out.write_all(text.as_bytes());
        let _ = state.out.flush();
        state.drawn_rows = self.rows_of(&lines);
        state.drawn = lines;
        state.last_draw = Some(now);
    }

    /// What a terminal shows: a line per blob being downloaded, then the unpack's count.
    fn lines(state: &State<W>, now: Instant) -> Vec<String> {
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

    /// Writes `line` above the live region: the region is erased, the line written, the region drawn again.
    fn say(&self, line: &str) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let mut text = String::new();
        if state.drawn_rows > 0 {
            text.push_str(&redraw(state.drawn_rows, &[]));
        }
        text.push_str(line);
        text.push('\n');
        if state.drawn_rows > 0 {
            let lines = state.drawn.clone();
            text.push_str(&redraw(0, &lines));
            state.drawn_rows = self.rows_of(&lines);
        }
        let _ = state.out.write_all(text.as_bytes());
        let _ = state.out.flush();
    }

    /// Erases the live region and forgets the pull.
    fn end_pull(&self, state: &mut State<W>) {
        if state.drawn_rows > 0 {
            let text = redraw(state.drawn_rows, &[]);
            let _ = state.out.write_all(text.as_bytes());
            let _ = state.out.flush();
        }
        state.drawn.clear();
        state.drawn_rows = 0;
        state.lines.clear();
        state.unpacked = None;
        state.last_draw = None;
    }

    fn pull_event(&self, event: Event<'_>) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let now = Instant::now();
        match event {
            Event::PullStarted => {
                self.end_pull(&mut state);
                state.started = now;
                state.blobs = 0;
                state.bytes = 0;
            }
            Event::BlobStarted { digest, size } => {
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
            Event::BlobProgress { digest, received } => {
                if let Some((_, line)) = state.lines.iter_mut().find(|(d, _)| d == digest) {
                    line.received = received;
                }
                self.draw(&mut state, now, false);
            }
            Event::BlobFinished { digest } => {
                let mut size = 0;
                if let Some((_, line)) = state.lines.iter_mut().find(|(d, _)| d == digest) {
                    line.done = true;
                    line.received = line.total;
                    size = line.total;
                }
                state.blobs += 1;
                state.bytes += size;
                self.draw(&mut state, now, true);
            }
            Event::LayersApplied { applied, total } => {
                state.unpacked = Some((applied, total));
                self.draw(&mut state, now, true);
            }
            Event::Pulled {
                reference,
                manifest,
                from_cache,
            } => {
                self.end_pull(&mut state);
                if self.mode != ProgressMode::Quiet && !from_cache {
                    let line = summary_line(
                        reference,
                        manifest,
                        state.blobs,
                        state.bytes,
                        state.started.elapsed(),
                    );
                    let _ = writeln!(state.out, "{line}");
                }
            }
            Event::PullAbandoned => self.end_pull(&mut state),
            Event::Warning(_) | Event::Note(_) | Event::Timings(_) => {}
        }
    }
}

impl<W: Write + Send> Reporter for Terminal<W> {
    fn report(&self, event: Event<'_>) {
        match event {
            Event::Warning(w) => self.say(&format!("thv-sandbox: warning: {w}")),
            Event::Note(n) => self.say(&format!("thv-sandbox: {n}")),
            Event::Timings(t) => self.say(&timings_line(t)),
            pull => self.pull_event(pull),
        }
    }
}

/// The width of the terminal on stderr, if it is one.
fn stderr_width() -> Option<usize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which points at a live, writable one; fd 2 is
    // only queried (an fd that is not a terminal makes the call fail, which is handled).
    let rc = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col > 0).then_some(usize::from(size.ws_col))
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

    fn digest(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    }

    /// A terminal of `width` columns and `height` rows that interprets what the reporter writes (the few
    /// sequences it uses: CR, LF, cursor up, erase line, erase below; printable text wraps at the width).
    struct Screen {
        width: usize,
        rows: Vec<Vec<char>>,
        row: usize,
        col: usize,
        pending_wrap: bool,
    }

    impl Screen {
        fn new(width: usize) -> Screen {
            Screen {
                width,
                rows: vec![Vec::new()],
                row: 0,
                col: 0,
                pending_wrap: false,
            }
        }

        fn line_feed(&mut self) {
            self.row += 1;
            if self.row == self.rows.len() {
                self.rows.push(Vec::new());
            }
        }

        fn feed(&mut self, text: &str) {
            let mut chars = text.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '\r' => {
                        self.col = 0;
                        self.pending_wrap = false;
                    }
                    '\n' => {
                        self.line_feed();
                        self.col = 0;
                        self.pending_wrap = false;
                    }
                    '\x1b' => {
                        assert_eq!(chars.next(), Some('['));
                        let mut arg = String::new();
                        let cmd = loop {
                            let c = chars.next().unwrap();
                            if c.is_ascii_digit() {
                                arg.push(c);
                            } else {
                                break c;
                            }
                        };
                        let n: usize = arg.parse().unwrap_or(0);
                        self.pending_wrap = false;
                        match cmd {
                            'A' => self.row = self.row.saturating_sub(n.max(1)),
                            'K' => self.rows[self.row].clear(),
                            'J' => {
                                self.rows[self.row].truncate(self.col);
                                self.rows.truncate(self.row + 1);
                            }
                            other => panic!("unexpected sequence {other}"),
                        }
                    }
                    c => {
                        if self.pending_wrap {
                            self.line_feed();
                            self.col = 0;
                            self.pending_wrap = false;
                        }
                        let row = &mut self.rows[self.row];
                        if row.len() <= self.col {
                            row.resize(self.col + 1, ' ');
                        }
                        row[self.col] = c;
                        if self.col + 1 == self.width {
                            self.pending_wrap = true;
                        } else {
                            self.col += 1;
                        }
                    }
                }
            }
        }

        /// The screen's rows (empty ones at the bottom dropped).
        fn text(&self) -> Vec<String> {
            let mut out: Vec<String> = self
                .rows
                .iter()
                .map(|r| r.iter().collect::<String>())
                .collect();
            while out.last().is_some_and(|l| l.is_empty()) {
                out.pop();
            }
            out
        }
    }

    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
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
    fn rows_count_wrapping_at_the_width() {
        assert_eq!(rows("", Some(10)), 1);
        assert_eq!(rows("0123456789", Some(10)), 1);
        assert_eq!(rows("0123456789a", Some(10)), 2);
        assert_eq!(rows(&"x".repeat(25), Some(10)), 3);
        assert_eq!(rows(&"x".repeat(25), None), 1);
        // Characters, not bytes.
        assert_eq!(rows("ééééé", Some(5)), 1);
    }

    #[test]
    fn the_summary_line_counts_what_was_downloaded() {
        let d = digest('a');
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
        let out = Shared::default();
        let p = Terminal::new(ProgressMode::Summary, out.clone(), Some(80));
        let (a, b) = (digest('a'), digest('b'));
        p.report(Event::PullStarted);
        p.report(Event::BlobStarted {
            digest: &a,
            size: 100,
        });
        p.report(Event::BlobStarted {
            digest: &b,
            size: 50,
        });
        p.report(Event::BlobProgress {
            digest: &a,
            received: 60,
        });
        p.report(Event::BlobFinished { digest: &b });
        let state = p.state.lock().unwrap();
        assert_eq!(state.lines[0].1.received, 60);
        assert!(!state.lines[0].1.done);
        assert!(state.lines[1].1.done);
        assert_eq!((state.blobs, state.bytes), (1, 50));
        // Not a terminal: nothing was drawn.
        assert_eq!(state.drawn_rows, 0);
        drop(state);
        assert_eq!(out.text(), "");
        // The unpack's count follows the blob lines once a layer is in the root.
        let now = Instant::now();
        assert_eq!(Terminal::lines(&p.state.lock().unwrap(), now).len(), 2);
        p.report(Event::LayersApplied {
            applied: 1,
            total: 3,
        });
        p.report(Event::LayersApplied {
            applied: 2,
            total: 3,
        });
        let lines = Terminal::lines(&p.state.lock().unwrap(), now);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2], "unpacked 2 of 3 layers");
        assert_eq!(unpack_line(1, 1), "unpacked 1 of 1 layer");
        // The summary once the image is in the cache; none for an image that was there already.
        p.report(Event::Pulled {
            reference: "r:1",
            manifest: &a,
            from_cache: false,
        });
        assert!(out
            .text()
            .starts_with(&format!("pulled r:1 ({a}): 1 blob (50 B) in ")));
        let quiet = Shared::default();
        let q = Terminal::new(ProgressMode::Quiet, quiet.clone(), Some(80));
        q.report(Event::Pulled {
            reference: "r:1",
            manifest: &a,
            from_cache: false,
        });
        q.report(Event::Warning("still said"));
        assert_eq!(quiet.text(), "thv-sandbox: warning: still said\n");
    }

    /// ux-review item 7: on a first pull, a warning said while the progress region is live (the config blob's
    /// line) lost its last wrapped row to the next redraw, and a stale `… done` line stayed above it.
    #[test]
    fn a_warning_said_during_a_pull_is_never_overwritten_at_any_width() {
        let warning = "running 127.0.0.1:5055/library/time:latest (sha256:0123456789abcdef0123456789abcdef0123\
                       456789abcdef0123456789abcdef) UNVERIFIED: its provenance was not checked successfully \
                       (--image-verification=enabled refuses such images)";
        for width in [20, 33, 45, 80, 100, 160, 400] {
            let out = Shared::default();
            let p = Terminal::new(ProgressMode::Terminal, out.clone(), Some(width));
            let (config, layer) = (digest('b'), digest('c'));
            p.report(Event::PullStarted);
            // The config blob, drawn as done: the region is live.
            p.report(Event::BlobStarted {
                digest: &config,
                size: 1300,
            });
            p.report(Event::BlobFinished { digest: &config });
            p.report(Event::Warning("time: no provenance is declared"));
            p.report(Event::Warning(warning));
            // The layers follow, redrawn many times, then the pull ends.
            p.report(Event::BlobStarted {
                digest: &layer,
                size: 4 << 20,
            });
            for i in 1..=4 {
                p.report(Event::BlobProgress {
                    digest: &layer,
                    received: i << 20,
                });
                p.state.lock().unwrap().last_draw = None;
            }
            p.report(Event::BlobFinished { digest: &layer });
            p.report(Event::LayersApplied {
                applied: 1,
                total: 1,
            });
            p.report(Event::Note("listening on http://127.0.0.1:1/mcp"));
            p.report(Event::Pulled {
                reference: "time:latest",
                manifest: &layer,
                from_cache: false,
            });
            let mut screen = Screen::new(width);
            screen.feed(&out.text());
            // The screen, its wrapped rows joined, reads as what was said, in order, and nothing else.
            let joined: String = screen.text().concat();
            let said = format!(
                "thv-sandbox: warning: time: no provenance is declared\
                 thv-sandbox: warning: {warning}\
                 thv-sandbox: listening on http://127.0.0.1:1/mcp\
                 pulled time:latest ({layer}): 2 blobs (4.0 MiB) in "
            );
            assert!(
                joined.starts_with(&said),
                "width {width}:\n{}\n---\n{said}",
                screen.text().join("\n")
            );
            assert!(
                !joined.contains("done"),
                "width {width}: a stale progress line"
            );
        }
    }

    #[test]
    fn a_wrapped_region_is_erased_whole() {
        // A 28-character progress line on a 20-column terminal takes two rows.
        let out = Shared::default();
        let p = Terminal::new(ProgressMode::Terminal, out.clone(), Some(20));
        let a = digest('a');
        p.report(Event::PullStarted);
        p.report(Event::BlobStarted {
            digest: &a,
            size: 40 << 20,
        });
        assert_eq!(p.state.lock().unwrap().drawn_rows, 2);
        p.report(Event::PullAbandoned);
        let mut screen = Screen::new(20);
        screen.feed(&out.text());
        assert_eq!(screen.text(), Vec::<String>::new());
    }

    #[test]
    fn timings_are_one_line_in_milliseconds() {
        let t = RunTimings {
            image: Duration::from_millis(12),
            spec: Duration::from_micros(1500),
            namespaces: Duration::from_micros(400),
            create: Duration::from_millis(3),
            start: Duration::from_millis(1),
            to_exec: Duration::from_millis(20),
        };
        assert_eq!(
            timings_line(&t),
            "thv-sandbox: timings: image 12.0 ms, spec 1.5 ms, runner namespaces 0.4 ms, create 3.0 ms, start 1.0 \
             ms, to exec 20.0 ms"
        );
    }
}
