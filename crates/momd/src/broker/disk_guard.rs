//! The broker's side of a full disk (see `disk.rs`): publishes from clients are refused
//! while free space is under `--min-free-disk`, the change is logged and told on
//! `$sys.events`, and publishes are taken again by themselves once the disk has room.

use mom_proto::ErrorCode;

use super::Broker;
use crate::disk::{Change, Disk};
use crate::store::StoreError;

impl Broker {
    pub fn set_disk(&mut self, disk: Disk) {
        let full = disk.full();
        let free = disk.free();
        self.disk = Some(disk);
        if full {
            self.disk_changed(Change::Full { free });
        }
    }

    /// Why a client's publish must wait, if it must.
    pub(super) fn disk_refuses(&self) -> Option<(ErrorCode, String)> {
        let d = self.disk.as_ref().filter(|d| d.full())?;
        Some((
            ErrorCode::Unavailable,
            format!(
                "disk full: {} bytes free under the data dir, under momd's --min-free-disk \
                 ({}); publishes are refused until there is room (reads and acks go on)",
                d.free(),
                d.floor()
            ),
        ))
    }

    /// Bytes went to the disk.
    pub(super) fn disk_charge(&mut self, bytes: u64) {
        if let Some(d) = &mut self.disk {
            let was = d.full();
            d.charge(bytes);
            if !was && d.full() {
                let free = d.free();
                self.disk_changed(Change::Full { free });
            }
        }
    }

    /// A write failed: when for lack of space, stop publishes at once.
    pub(super) fn disk_write_failed(&mut self, e: &StoreError) {
        if !e.is_disk_full() {
            return;
        }
        if let Some(change) = self.disk.as_mut().and_then(Disk::write_failed) {
            self.disk_changed(change);
        }
    }

    /// Look at the free space again (each tick, and before each write round).
    pub(super) fn disk_check(&mut self) {
        if let Some(change) = self.disk.as_mut().and_then(Disk::check) {
            self.disk_changed(change);
        }
    }

    fn disk_changed(&mut self, change: Change) {
        let floor = self.disk.as_ref().map_or(0, Disk::floor);
        match change {
            Change::Full { free } => {
                tracing::warn!(
                    free,
                    floor,
                    "disk full: publishes are refused until there is room"
                );
                self.sys_event(format!(
                    r#"{{"event":"disk_full","free_bytes":{free},"min_free_bytes":{floor}}}"#
                ));
            }
            Change::Room { free } => {
                tracing::info!(free, floor, "disk has room again: publishes are taken");
                self.sys_event(format!(
                    r#"{{"event":"disk_ok","free_bytes":{free},"min_free_bytes":{floor}}}"#
                ));
            }
        }
    }
}
