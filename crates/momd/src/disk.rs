//! The disk under the data dir. Below a floor of free space momd refuses publishes (reads,
//! acks, admin and new connections go on) and takes them again by itself once space
//! returns, as RabbitMQ's disk alarm does. The floor keeps the index store from ever
//! meeting a full disk of momd's own making; sled, once a write of its log fails, refuses
//! every later write until it is reopened.
//!
//! When something else fills the disk anyway, the index store writes into room it keeps
//! allocated past the end of its log file (`Store::keep_index_room`, a quarter of the
//! floor): blocks no other process can take. A reserve file (`reserve` in the data dir, as
//! large) is for starting on a full disk: momd deletes it then, so the index store has room
//! to open, and makes it again once the disk has room. It is never given away while momd
//! runs, or a disk filled then would leave nothing for the next start.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

pub const RESERVE_FILE: &str = "reserve";

/// Free bytes for unprivileged writes on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    // SAFETY: statvfs reads a NUL-terminated path and writes one struct it is given.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Did this error come from a full disk (or an exhausted quota)?
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == io::ErrorKind::StorageFull
}

#[derive(Debug)]
pub struct Disk {
    dir: PathBuf,
    floor: u64,
    /// Free bytes at the last look, less what was written since.
    free: u64,
    full: bool,
}

/// A change the broker reports (log, `$sys.events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Full { free: u64 },
    Room { free: u64 },
}

impl Disk {
    /// Look at the disk before the store is opened: on a full disk, give the reserve back
    /// so the store can open, and start refusing publishes.
    pub fn open(dir: &Path, floor: u64) -> Disk {
        let mut d = Disk {
            dir: dir.to_path_buf(),
            floor,
            free: u64::MAX,
            full: false,
        };
        match free_bytes(dir) {
            Ok(free) if free < floor / 2 => d.give_back_reserve(free),
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot read the free space of {}: {e}", dir.display()),
        }
        d.check();
        d
    }

    /// Starting short of space: delete the reserve so the index store can open.
    fn give_back_reserve(&mut self, free: u64) {
        let reserve = self.reserve_path();
        if !reserve.exists() {
            return;
        }
        match std::fs::remove_file(&reserve) {
            Ok(()) => tracing::warn!(
                free,
                "starting on an almost full disk: gave back the reserve file"
            ),
            Err(e) => tracing::warn!("cannot remove {}: {e}", reserve.display()),
        }
    }

    pub fn floor(&self) -> u64 {
        self.floor
    }

    pub fn free(&self) -> u64 {
        self.free
    }

    /// Publishes are refused while this holds.
    pub fn full(&self) -> bool {
        self.full
    }

    /// Bytes of the reserve file, and of the room kept allocated for the index store.
    pub fn reserve_size(&self) -> u64 {
        self.floor / 4
    }

    fn reserve_path(&self) -> PathBuf {
        self.dir.join(RESERVE_FILE)
    }

    /// Bytes were written: count them against the free space until the next look, so a
    /// burst cannot run past the floor between two looks.
    pub fn charge(&mut self, bytes: u64) {
        self.free = self.free.saturating_sub(bytes);
        if self.free < self.floor {
            self.full = true;
        }
    }

    /// A write failed for lack of space: refuse publishes.
    pub fn write_failed(&mut self) -> Option<Change> {
        self.free = 0;
        self.check_with(0)
    }

    /// Look at the disk again.
    pub fn check(&mut self) -> Option<Change> {
        match free_bytes(&self.dir) {
            Ok(free) => self.check_with(free),
            Err(e) => {
                tracing::warn!("cannot read the free space of {}: {e}", self.dir.display());
                None
            }
        }
    }

    fn check_with(&mut self, mut free: u64) -> Option<Change> {
        let was = self.full;
        let reserve = self.reserve_path();
        // A little above the floor before publishes are taken again, so a disk at the
        // floor does not flap.
        let room = free >= self.floor + self.floor / 8;
        if room && !reserve.exists() && free >= self.floor + 2 * self.reserve_size() {
            match make_reserve(&reserve, self.reserve_size()) {
                Ok(()) => free = free.saturating_sub(self.reserve_size()),
                Err(e) => tracing::debug!("cannot make the reserve file: {e}"),
            }
        }
        self.free = free;
        if free < self.floor {
            self.full = true;
        } else if room {
            self.full = false;
        }
        match (was, self.full) {
            (false, true) => Some(Change::Full { free }),
            (true, false) => Some(Change::Room { free }),
            _ => None,
        }
    }
}

/// A file of `size` bytes that really holds its blocks (not a sparse one).
fn make_reserve(path: &Path, size: u64) -> io::Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let len = libc::off_t::try_from(size).map_err(|_| io::Error::other("reserve too large"))?;
    // SAFETY: posix_fallocate works on the open descriptor it is given.
    let r = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, len) };
    if r != 0 {
        drop(f);
        let _ = std::fs::remove_file(path);
        return Err(io::Error::from_raw_os_error(r));
    }
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_below_the_floor_and_room_again_a_little_above_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let floor = 1 << 20;
        let mut d = Disk {
            dir: dir.path().to_path_buf(),
            floor,
            free: u64::MAX,
            full: false,
        };
        assert_eq!(
            d.check_with(floor - 1),
            Some(Change::Full { free: floor - 1 })
        );
        assert!(d.full());
        assert_eq!(d.check_with(floor), None, "at the floor: still full");
        assert!(d.full());
        let free = floor + floor / 8;
        assert_eq!(d.check_with(free), Some(Change::Room { free }));
        assert!(!d.full());
        d.charge(floor / 4);
        assert!(
            d.full(),
            "a write that takes it under the floor counts at once"
        );
    }

    #[test]
    fn the_reserve_is_made_with_room_kept_while_running_and_given_back_at_a_short_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let floor = 4 << 20;
        let mut d = Disk {
            dir: dir.path().to_path_buf(),
            floor,
            free: u64::MAX,
            full: false,
        };
        let reserve = dir.path().join(RESERVE_FILE);
        d.check_with(u64::MAX / 2);
        assert_eq!(
            std::fs::metadata(&reserve).map(|m| m.len()).ok(),
            Some(floor / 4)
        );
        d.check_with(floor / 4);
        assert!(d.full());
        d.write_failed();
        assert!(
            reserve.exists(),
            "kept while running: a disk filled now must leave room for the next start"
        );
        d.give_back_reserve(0);
        assert!(!reserve.exists(), "given back to start on a full disk");
    }

    #[test]
    fn this_machine_has_a_free_space_figure() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(free_bytes(dir.path()).expect("statvfs") > 0);
    }
}
