//! Large values of the index (a queue's record with many deliveries out, the applied Raft
//! state) stored in pieces of at most 4 KiB, under keys of their own (`P_PIECE`), in the
//! same sled batch as their head: sled would write a page holding them to a blob file its
//! flush never fsyncs (`mom_raft::pieces`).

use mom_raft::pieces::{self, Tag};

use super::{Result, Store, StoreError, P_META, P_QUEUE};

/// The first byte of the pieces' keys.
pub(super) const P_PIECE: u8 = b'P';
const TAG: Tag = Tag(P_PIECE);

fn err(e: String) -> StoreError {
    StoreError::Corrupt {
        key: "(a large value's pieces)".into(),
        reason: e,
    }
}

/// Whether a key's values may be large, and a write of it must remove its old pieces.
fn may_be_large(key: &[u8]) -> bool {
    matches!(key.first(), Some(&P_QUEUE) | Some(&P_META))
}

/// Adds to `batch` the write of `value` under `key` (`None`: its removal), cut into pieces
/// if it is large, and the removal of the pieces of the value it replaces.
pub(super) fn stage(
    db: &sled::Tree,
    batch: &mut sled::Batch,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<()> {
    let large = value.is_some_and(|v| v.len() > pieces::PIECE);
    if may_be_large(key) || large {
        // Removals first: the new pieces below overwrite those of the same key.
        pieces::remove_others(db, TAG, key, None, batch).map_err(err)?;
    }
    match value {
        Some(v) if large => {
            let head = pieces::split(TAG, key, v.to_vec(), 0, batch).map_err(err)?;
            batch.insert(key, head);
        }
        Some(v) => batch.insert(key, v),
        None => batch.remove(key),
    }
    Ok(())
}

/// The writes as one sled batch.
pub(super) fn to_batch(db: &sled::Tree, w: &super::overlay::Writes) -> Result<sled::Batch> {
    let mut b = sled::Batch::default();
    for (k, v) in w {
        stage(db, &mut b, k, v.as_deref())?;
    }
    Ok(b)
}

impl Store {
    /// The whole value of `key`, stored in sled as `stored`.
    pub(super) fn whole(&self, key: &[u8], stored: sled::IVec) -> Result<Vec<u8>> {
        pieces::join(&self.db, TAG, key, stored)
            .map(|v| v.to_vec())
            .map_err(err)
    }

    /// The whole value of `key` in sled.
    pub(super) fn get_whole(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.db.get(key)? {
            Some(v) => self.whole(key, v).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{open, open_store};
    use super::super::Staged;
    use super::*;

    fn put(store: &Store, core: &crate::core::Core, v: Vec<u8>) {
        let mut staged = Staged::default();
        store.stage_meta(&mut staged, "big", v);
        store
            .apply(staged, |id| core.topics.by_id(id), core.topics.next_id())
            .unwrap();
        store.flush().unwrap();
    }

    fn blobs(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir.join("db").join("blobs")).map_or(0, |d| d.count())
    }

    fn pieces_left(store: &Store) -> usize {
        store.db.scan_prefix([P_PIECE]).count()
    }

    #[test]
    fn a_large_value_is_stored_in_pieces_sled_fsyncs_and_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let large: Vec<u8> = (0..600_000u32).map(|i| (i * 7) as u8).collect();
        {
            let (store, core) = open(dir.path());
            // Several, so that sled's leaves would hold more than its blob threshold.
            for _ in 0..3 {
                put(&store, &core, large.clone());
            }
            assert_eq!(store.meta("big").unwrap().as_deref(), Some(&large[..]));
            assert!(pieces_left(&store) > 100);
        }
        assert_eq!(blobs(dir.path()), 0, "sled wrote a blob file");
        let (store, core) = open(dir.path());
        assert_eq!(store.meta("big").unwrap().as_deref(), Some(&large[..]));
        // A small value in its place leaves no piece behind.
        put(&store, &core, b"small".to_vec());
        assert_eq!(store.meta("big").unwrap().as_deref(), Some(&b"small"[..]));
        assert_eq!(pieces_left(&store), 0);
        drop((store, core));
        let store = open_store(dir.path());
        assert_eq!(store.meta("big").unwrap().as_deref(), Some(&b"small"[..]));
    }
}
