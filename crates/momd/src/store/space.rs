//! The store and the disk's space: room kept for the index store against a disk another
//! process fills, the bytes the data dir holds, and what an interrupted start leaves.

use super::*;

impl Store {
    /// Keep `room` bytes allocated past the end of sled's log file from now on (see
    /// [`Store::keep_index_room`]).
    pub fn with_index_room(mut self, room: u64) -> Store {
        self.index_room = room;
        self.keep_index_room();
        self
    }

    /// Allocate the room past the end of sled's log file that its next writes will take
    /// (`fallocate` keeping the file's size). The blocks are then sled's: another process
    /// filling the disk cannot take them. sled refuses every write after one fails until it
    /// is reopened, so a disk filled by someone else must not make one of its writes fail;
    /// momd's own writes stop at `--min-free-disk` long before this room is used up.
    /// Called after each flush, since sled grows the file and sometimes cuts it shorter.
    pub fn keep_index_room(&self) {
        if self.index_room == 0 {
            return;
        }
        let Ok(meta) = self.log.metadata() else {
            return;
        };
        let (Ok(off), Ok(len)) = (
            libc::off_t::try_from(meta.len()),
            libc::off_t::try_from(self.index_room),
        ) else {
            return;
        };
        // SAFETY: fallocate on a descriptor this value owns; KEEP_SIZE only allocates
        // blocks, it neither moves the file's end nor touches its bytes.
        let r = unsafe {
            libc::fallocate(
                std::os::unix::io::AsRawFd::as_raw_fd(&*self.log),
                libc::FALLOC_FL_KEEP_SIZE,
                off,
                len,
            )
        };
        if r != 0 {
            tracing::debug!(
                "cannot keep room for the index store: {}",
                std::io::Error::last_os_error()
            );
        }
    }

    /// Bytes the data directory holds on disk, not counting the reserve file momd keeps
    /// against a full disk (`disk.rs`): that is room kept free, not data.
    pub fn disk_bytes(&self) -> u64 {
        let reserve =
            std::fs::metadata(self.dir.join(crate::disk::RESERVE_FILE)).map_or(0, |m| m.len());
        dir_size(&self.dir).saturating_sub(reserve)
    }
}

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// sled writes a snapshot as `snap.<lsn>.generating` and renames it once it is complete
/// and synced; a start interrupted in between (a full disk, a kill) leaves the partial file,
/// which sled would then read as the newest snapshot and refuse as corrupt. It never holds
/// anything the log does not, so it goes.
pub(super) fn remove_unfinished_snapshots(db_dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(db_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!("removing {name}, a snapshot sled did not finish writing");
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}
