//! What the sandbox's name server ([`crate::sandbox::nameserver`]) and default route
//! ([`crate::sandbox::unreachable`]) share: a thread that answers the sandbox with refusals, and a bounded tally of
//! what was refused, each thing reported once when first refused and all of them summed up when the server stops.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Distinct things reported one by one; more are only counted.
pub const MAX_LISTED: usize = 32;

/// Why the sandbox refuses: the same for its lookups and its connections; each module words it its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// `--network none` and no egress proxy: the sandbox reaches nothing.
    NoNetwork,
    /// `--network none` with the egress proxy: only connections through the proxy leave the sandbox.
    ProxyOnly,
}

/// Where the lines go.
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// The closing line, from what was listed and how many more refusals there were.
pub type Summary<T> = Box<dyn Fn(&[T], u64) -> String + Send + Sync>;

/// What was refused, in the order it was first refused, at most [`MAX_LISTED`] distinct things.
#[derive(Debug)]
pub struct Tally<T> {
    seen: BTreeSet<T>,
    order: Vec<T>,
    /// Refusals of things beyond [`MAX_LISTED`].
    more: u64,
}

impl<T: Ord + Clone> Tally<T> {
    /// Records a refusal of `item`: true when it is new and listed (to be reported now).
    pub fn first(&mut self, item: &T) -> bool {
        if self.seen.contains(item) {
            false
        } else if self.seen.len() < MAX_LISTED {
            self.seen.insert(item.clone());
            self.order.push(item.clone());
            true
        } else {
            self.more += 1;
            false
        }
    }
}

/// The running refuser; dropping it stops its thread and says the summary (if anything was refused).
pub struct Refusals<T> {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    tally: Arc<Mutex<Tally<T>>>,
    /// The closing line, from what was listed and how many more refusals there were.
    summary: Summary<T>,
    log: Log,
}

impl<T> std::fmt::Debug for Refusals<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refusals").finish_non_exhaustive()
    }
}

/// Runs `serve(stop, tally, log)` on a thread named `name` until the returned [`Refusals`] is dropped; `serve`
/// should look at `stop` at least every 100 ms, and call [`Tally::first`] (and log a line when it says so) for each
/// refusal.
pub fn spawn<T, F>(
    name: &str,
    log: Log,
    summary: Summary<T>,
    serve: F,
) -> std::io::Result<Refusals<T>>
where
    T: Send + 'static,
    F: FnOnce(&AtomicBool, &Mutex<Tally<T>>, &dyn Fn(&str)) + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally {
        seen: BTreeSet::new(),
        order: Vec::new(),
        more: 0,
    }));
    let thread = {
        let (stop, tally, log) = (Arc::clone(&stop), Arc::clone(&tally), Arc::clone(&log));
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || serve(&stop, &tally, &*log))?
    };
    Ok(Refusals {
        stop,
        thread: Some(thread),
        tally,
        summary,
        log,
    })
}

impl<T: Clone> Refusals<T> {
    /// What was refused so far (listed), in the order it was first refused.
    pub fn refused(&self) -> Vec<T> {
        self.tally
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .order
            .clone()
    }
}

impl<T> Drop for Refusals<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let t = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        if !t.order.is_empty() {
            (self.log)(&(self.summary)(&t.order, t.more));
        }
    }
}

/// "1 name" / "2 names".
pub fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}
