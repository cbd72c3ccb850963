//! Streaming pull: layers are unpacked while they download.
//!
//! After verification has passed, the layer downloads ([`super::MAX_PARALLEL_BLOBS`] at once, base layer first)
//! and the unpacker (one thread, applying layers in order into a staging root) share a [`Feed`]: for each layer,
//! whether its blob is already in the cache, is being written into its temporary file (how many bytes so far), has
//! been checked and committed, or failed. The unpacker reads a layer being downloaded by following its temporary
//! file (`pread` on a duplicate descriptor, waiting on a condition variable when it has caught up with the
//! writer), so decompression and unpacking of layer N overlap with its own download and those of later layers.
//! Memory stays bounded: chunks go to the file, the unpacker reads it in fixed buffers.
//!
//! Integrity: the reader reports the end of a blob only once the download has checked its size and digest and
//! committed it; a download that fails (digest or size mismatch, cut connection) makes the reader fail, so the
//! staging root is discarded. After each layer the unpacker also waits for its blob's verdict before going on
//! ([`crate::rootfs::LayerSource::settle`]), so a committed root implies every blob matched its digest and every
//! layer its diff_id. Bytes of a layer may be decompressed (into the private staging directory, by the hardened
//! unpacker) before that layer's digest is confirmed; nothing of it is used unless it is.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use oci_spec::image::{ImageConfiguration, ImageManifest};

use super::PullError;
use crate::image::digest::Digest;
use crate::image::layout::{LayerRef, OciLayout};
use crate::rootfs::{LayerSource, RootfsError};

/// Where one layer's blob is.
#[derive(Debug)]
enum Slot {
    /// Not known yet (the download has not started, or waits for another pull of the same blob).
    Waiting,
    /// In the cache already (or committed by another pull): read it from there.
    Present,
    /// Being written into a temporary file: `written` bytes so far; `verified` once size and digest matched and
    /// the blob was committed.
    Streaming {
        file: Arc<File>,
        written: u64,
        verified: bool,
    },
    /// The download failed or was abandoned.
    Failed,
}

#[derive(Debug)]
struct State {
    slots: Vec<Slot>,
    /// Set when downloads should stop: `Some(i)` lets layer `i`'s download finish (the unpacker waits for its
    /// verdict, to report a digest mismatch rather than what the bad bytes did to the unpacker); `Some(usize::MAX)`
    /// stops all.
    stop_except: Option<usize>,
}

/// The state shared by the downloads and the unpacker.
#[derive(Debug)]
pub(crate) struct Feed {
    state: Mutex<State>,
    changed: Condvar,
}

impl Feed {
    pub(crate) fn new(layers: usize) -> Feed {
        Feed {
            state: Mutex::new(State {
                slots: (0..layers).map(|_| Slot::Waiting).collect(),
                stop_except: None,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves consistent data (every update is one assignment).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(guard).unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, index: usize, slot: Slot) {
        let mut state = self.lock();
        if let Some(s) = state.slots.get_mut(index) {
            *s = slot;
        }
        drop(state);
        self.changed.notify_all();
    }

    /// The blob of layer `index` is in the cache.
    pub(crate) fn present(&self, index: usize) {
        self.set(index, Slot::Present);
    }

    /// The blob of layer `index` is being written into `file`.
    pub(crate) fn streaming(&self, index: usize, file: File) {
        self.set(
            index,
            Slot::Streaming {
                file: Arc::new(file),
                written: 0,
                verified: false,
            },
        );
    }

    /// `written` bytes of layer `index` are in its file.
    pub(crate) fn written(&self, index: usize, written: u64) {
        let mut state = self.lock();
        if let Some(Slot::Streaming { written: w, .. }) = state.slots.get_mut(index) {
            *w = written;
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Layer `index`'s blob matched its digest and is committed.
    pub(crate) fn verified(&self, index: usize) {
        let mut state = self.lock();
        if let Some(Slot::Streaming { verified, .. }) = state.slots.get_mut(index) {
            *verified = true;
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Layer `index`'s download failed: its reader fails, and the other downloads stop.
    pub(crate) fn failed(&self, index: usize) {
        let mut state = self.lock();
        if let Some(s) = state.slots.get_mut(index) {
            *s = Slot::Failed;
        }
        state.stop_except = Some(usize::MAX);
        drop(state);
        self.changed.notify_all();
    }

    /// Whether the download of layer `index` should give up.
    pub(crate) fn should_stop(&self, index: usize) -> bool {
        self.lock().stop_except.is_some_and(|keep| keep != index)
    }

    /// The unpacker failed on layer `index`: stop the other downloads.
    fn unpack_failed(&self, index: usize) {
        let mut state = self.lock();
        if state.stop_except.is_none() {
            state.stop_except = Some(index);
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Every download has ended: a layer not finished by now never will be.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        for slot in &mut state.slots {
            let finished = match slot {
                Slot::Present | Slot::Failed => true,
                Slot::Streaming { verified, .. } => *verified,
                Slot::Waiting => false,
            };
            if !finished {
                *slot = Slot::Failed;
            }
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Waits until layer `index`'s download has a verdict: `Ok(true)` in the cache or verified, `Ok(false)` failed.
    fn settled(&self, index: usize) -> bool {
        let mut state = self.lock();
        loop {
            match state.slots.get(index) {
                Some(Slot::Present) => return true,
                Some(Slot::Streaming { verified: true, .. }) => return true,
                Some(Slot::Failed) | None => return false,
                Some(Slot::Waiting | Slot::Streaming { .. }) => state = self.wait(state),
            }
        }
    }
}

/// Follows a temporary blob file as it is written.
struct Follow<'a> {
    feed: &'a Feed,
    index: usize,
    file: Arc<File>,
    pos: u64,
}

impl Read for Follow<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut state = self.feed.lock();
        let available = loop {
            match state.slots.get(self.index) {
                Some(Slot::Streaming {
                    written, verified, ..
                }) => {
                    if *written > self.pos {
                        break *written - self.pos;
                    }
                    if *verified {
                        return Ok(0);
                    }
                    state = self.feed.wait(state);
                }
                Some(Slot::Waiting) => state = self.feed.wait(state),
                _ => {
                    return Err(io::Error::other(
                        "the download of this layer failed (nothing of it is kept)",
                    ))
                }
            }
        };
        drop(state);
        let want = usize::try_from(available)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the temporary blob file is shorter than what was written",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// The unpacker's side: layers come from the cache or follow their downloads.
pub(crate) struct Streamed<'a> {
    pub(crate) feed: &'a Feed,
    pub(crate) layout: OciLayout,
    /// Told as each layer is settled in the root.
    pub(crate) reporter: Option<&'a dyn crate::report::Reporter>,
    /// How many layers the image has.
    pub(crate) total: usize,
}

impl LayerSource for Streamed<'_> {
    fn open(&mut self, index: usize, layer: &LayerRef) -> Result<Box<dyn Read + '_>, RootfsError> {
        let mut state = self.feed.lock();
        loop {
            match state.slots.get(index) {
                Some(Slot::Waiting) => state = self.feed.wait(state),
                Some(Slot::Present) => {
                    drop(state);
                    return Ok(Box::new(self.layout.open_blob(&layer.digest, layer.size)?));
                }
                Some(Slot::Streaming { file, .. }) => {
                    return Ok(Box::new(Follow {
                        feed: self.feed,
                        index,
                        file: file.clone(),
                        pos: 0,
                    }))
                }
                Some(Slot::Failed) | None => {
                    return Err(RootfsError::Download {
                        digest: layer.digest.clone(),
                    })
                }
            }
        }
    }

    fn settle(&mut self, index: usize, layer: &LayerRef) -> Result<(), RootfsError> {
        if self.feed.settled(index) {
            if let Some(reporter) = self.reporter {
                reporter.report(crate::report::Event::LayersApplied {
                    applied: index + 1,
                    total: self.total,
                });
            }
            Ok(())
        } else {
            Err(RootfsError::Download {
                digest: layer.digest.clone(),
            })
        }
    }
}

impl Streamed<'_> {
    /// After the unpacker failed on layer `index` (`None`: before any layer): stop the other downloads, and wait
    /// for this layer's verdict, so that a blob that does not match its digest is reported as that.
    pub(crate) fn abandon(&self, index: Option<usize>) {
        match index {
            Some(index) => {
                self.feed.unpack_failed(index);
                let _ = self.feed.settled(index);
            }
            None => self.feed.unpack_failed(usize::MAX),
        }
    }
}

/// The layers of a checked manifest and config as the unpacker wants them: with compression and diff_id.
pub(crate) fn layer_refs(
    manifest: &ImageManifest,
    config: &ImageConfiguration,
    manifest_digest: &Digest,
) -> Result<Vec<LayerRef>, PullError> {
    let bad = |reason: String| PullError::BadDocument {
        what: "image manifest",
        digest: manifest_digest.clone(),
        reason,
    };
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(bad(
            "its layers and its config's diff_ids differ in number".into()
        ));
    }
    manifest
        .layers()
        .iter()
        .zip(diff_ids)
        .map(|(layer, diff_id)| {
            let digest =
                Digest::try_from(layer.digest()).map_err(|e| bad(format!("layer digest: {e}")))?;
            let media_type = layer.media_type().to_string();
            let compression = crate::image::layout::layer_compression(&media_type, &digest)?;
            Ok(LayerRef {
                size: layer.size(),
                media_type,
                compression,
                diff_id: diff_id.parse().map_err(|e| bad(format!("diff_id: {e}")))?,
                digest,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_follower_reads_what_is_written_and_ends_only_when_verified() {
        let feed = Feed::new(1);
        let mut temp = tempfile::tempfile().unwrap();
        feed.streaming(0, temp.try_clone().unwrap());
        let follower = Follow {
            feed: &feed,
            index: 0,
            file: match &feed.lock().slots[0] {
                Slot::Streaming { file, .. } => file.clone(),
                _ => unreachable!(),
            },
            pos: 0,
        };
        std::thread::scope(|s| {
            let reader = s.spawn(move || {
                let mut follower = follower;
                let mut all = Vec::new();
                follower.read_to_end(&mut all).map(|_| all)
            });
            for chunk in [&b"hello "[..], b"streaming ", b"world"] {
                temp.write_all(chunk).unwrap();
                let len = temp.metadata().unwrap().len();
                feed.written(0, len);
            }
            feed.verified(0);
            assert_eq!(reader.join().unwrap().unwrap(), b"hello streaming world");
        });
    }

    #[test]
    fn a_failed_download_fails_its_reader_even_after_all_bytes_arrived() {
        let feed = Feed::new(2);
        let mut temp = tempfile::tempfile().unwrap();
        feed.streaming(1, temp.try_clone().unwrap());
        temp.write_all(b"tampered").unwrap();
        feed.written(1, 8);
        let file = match &feed.lock().slots[1] {
            Slot::Streaming { file, .. } => file.clone(),
            _ => unreachable!(),
        };
        let mut follower = Follow {
            feed: &feed,
            index: 1,
            file,
            pos: 0,
        };
        let mut buf = [0u8; 64];
        assert_eq!(follower.read(&mut buf).unwrap(), 8);
        // The digest check fails: the follower waiting for more (or for the verdict) gets an error, not EOF.
        std::thread::scope(|s| {
            let reader = s.spawn(move || follower.read(&mut buf));
            feed.failed(1);
            assert!(reader.join().unwrap().is_err());
        });
        // A failure stops the other downloads; closing fails a layer that never started.
        assert!(feed.should_stop(0));
        feed.close();
        assert!(!feed.settled(0));
        assert!(!feed.settled(1));
    }

    #[test]
    fn an_unpack_failure_lets_only_that_layers_download_finish() {
        let feed = Feed::new(3);
        assert!(!feed.should_stop(0));
        feed.unpack_failed(1);
        assert!(feed.should_stop(0));
        assert!(!feed.should_stop(1));
        assert!(feed.should_stop(2));
        feed.present(1);
        assert!(feed.settled(1));
    }
}
