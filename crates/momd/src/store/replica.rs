//! The store of a cluster node (replica mode). Its messages come from a Raft group's log,
//! which is durable on a majority before anything is acknowledged; the store is that log
//! applied. So a replica's store keeps, in the index, which Raft entry it applied last
//! (written with the index entries of the same commit), and at start it drops what the
//! log holds past the index's end: those records were applied after the last index flush,
//! and the Raft log applies them again. Keeping them would store them twice.

use super::*;

impl Store {
    /// Make this store a cluster replica's (before `load`).
    pub fn into_replica(mut self) -> Store {
        self.replica = true;
        self
    }

    /// Spread the node's topics over `shards` (before `load`; a cluster node's data
    /// groups).
    #[allow(dead_code)]
    pub fn with_shards(mut self, shards: crate::core::shards::Shards) -> Store {
        self.shards = shards;
        self
    }

    pub fn is_replica(&self) -> bool {
        self.replica
    }

    /// Stage `value` under the metadata key `name`, written with the index entries of the
    /// same commit (so a crash keeps both or neither).
    pub fn stage_meta(&self, staged: &mut Staged, name: &str, value: Vec<u8>) {
        staged.writes.insert(meta_key(name), Some(value));
        staged.count += 1;
    }

    /// A metadata value, as of the newest write (flushed or not).
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let k = meta_key(name);
        if let Some(v) = self.overlay().get(&k) {
            return Ok(v.cloned());
        }
        self.get_whole(&k)
    }

    /// Drop every record past `end` (the index's end; None: the index names none).
    /// Returns whether anything was dropped.
    pub(super) fn drop_unindexed(&self, end: Option<(u64, u64)>) -> Result<bool> {
        let mut dropped = false;
        let mut dir = None;
        for (seg, path) in self.segs.list()? {
            dir = path.parent().map(|p| p.to_path_buf());
            let keep = match end {
                Some((s, _)) if seg < s => continue,
                Some((s, off)) if seg == s => off,
                _ => 0,
            };
            let len = std::fs::metadata(&path)?.len();
            if len <= keep {
                continue;
            }
            dropped = true;
            if keep == 0 && end.is_none_or(|(s, _)| seg > s) {
                std::fs::remove_file(&path)?;
            } else {
                let f = std::fs::OpenOptions::new().write(true).open(&path)?;
                f.set_len(keep)?;
                f.sync_all()?;
            }
            tracing::info!(
                segment = seg,
                bytes = len - keep,
                "replica: dropped what the log held past the index (the Raft log gives it again)"
            );
        }
        if dropped {
            if let Some(d) = dir {
                std::fs::File::open(d)?.sync_all()?;
            }
            self.segs.seal()?;
        }
        Ok(dropped)
    }
}
