//! Commit latency: an fdatasync that also has to record a larger file size costs about twice
//! one that only overwrites blocks the file already has (0.27 against 0.17 ms here). SQLite
//! appends to the WAL until its first checkpoint (1000 pages) and only then starts again at
//! its beginning, so every commit of a fresh WAL pays the larger price. [`WalRoom`] keeps zeroed
//! room past the end of the WAL: when a commit has grown the file, the file is extended by half
//! its size (at least 64 frames) with zeros and synced, so the following commits overwrite in
//! place. SQLite never reads the zeros as a transaction: a WAL frame counts only if its salt
//! matches the WAL header's and its checksum chain holds, so recovery stops at the first zero
//! frame, exactly as it stops at the stale frames an old WAL generation leaves behind.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Zeroed room past the end of the WAL file, so that commits overwrite blocks the file already
/// has instead of growing it (see the module documentation). Best effort: any failure (a full
/// disk, a file size limit) shrinks the file back to what SQLite wrote and turns the room off
/// for the life of the store; SQLite then appends as it would without it.
pub(super) struct WalRoom {
    path: PathBuf,
    /// SQLite creates the file when it first reads the database; opened again if it was not there.
    file: Option<File>,
    /// Bytes per WAL frame: a 24-byte header and a page.
    frame: u64,
    /// The file's size as this store last left it; a larger size means SQLite appended.
    reserved: u64,
    enabled: bool,
}

/// The WAL header's size; frames follow it.
const WAL_HEADER: u64 = 32;
/// The least room added at once, in frames.
const WAL_MIN_ROOM: u64 = 64;

impl WalRoom {
    pub(super) fn new(path: PathBuf, page_size: u64) -> Self {
        // A WAL left by an earlier process (a crash) is as big as it needs to be so far.
        let file = std::fs::OpenOptions::new().write(true).open(&path).ok();
        let reserved = file
            .as_ref()
            .and_then(|mut f| f.seek(SeekFrom::End(0)).ok())
            .unwrap_or(0);
        Self {
            path,
            file,
            frame: 24 + page_size,
            reserved,
            // A write past RLIMIT_FSIZE raises SIGXFSZ, which may kill the process: under a
            // file size limit, add nothing SQLite would not write itself.
            enabled: page_size > 0 && !file_size_limited(),
        }
    }

    /// Called after each successful commit (whose frames are already durable).
    pub(super) fn after_commit(&mut self) {
        if !self.enabled {
            return;
        }
        if let Err(e) = self.make_room() {
            tracing::debug!(
                "no more room kept ahead of the WAL ({}): {e}",
                self.path.display()
            );
            self.enabled = false;
        }
    }

    fn make_room(&mut self) -> std::io::Result<()> {
        let file = match &mut self.file {
            Some(f) => f,
            None => self
                .file
                .insert(std::fs::OpenOptions::new().write(true).open(&self.path)?),
        };
        // The size from lseek, not fstat: on Linux 6.13+ (multigrain timestamps), a stat makes
        // the next write stamp the file with a fresh fine-grained time, and the fdatasync of
        // every commit then also commits the inode through the journal (0.25 instead of 0.16
        // ms here): the very cost this room is there to avoid.
        let size = (&*file).seek(SeekFrom::End(0))?;
        if size <= self.reserved {
            return Ok(());
        }
        // Whole frames, so the file keeps the shape SQLite gives it.
        let frames = size.saturating_sub(WAL_HEADER).div_ceil(self.frame);
        let target = WAL_HEADER + (frames + (frames / 2).max(WAL_MIN_ROOM)) * self.frame;
        let zeros = vec![0u8; 256 * 1024];
        let mut at = size;
        let written = (|| {
            while at < target {
                let n = (target - at).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            file.sync_data()
        })();
        match written {
            Ok(()) => {
                self.reserved = target;
                Ok(())
            }
            Err(e) => {
                // Only bytes past SQLite's own are cut.
                let _ = file.set_len(size);
                Err(e)
            }
        }
    }
}

/// Whether this process has a finite RLIMIT_FSIZE.
fn file_size_limited() -> bool {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut r) } == 0;
    !ok || r.rlim_cur != libc::RLIM_INFINITY
}
