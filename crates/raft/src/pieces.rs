//! Large values stored in pieces.
//!
//! sled 0.34 writes a page larger than about a quarter of its segment (128 KiB with the
//! default 512 KiB segments) to a file of its own, a "blob", and its flush fsyncs only its
//! main file, never a blob: a flushed entry could be gone after a power cut while the log
//! says it is there (`pagecache/blob_io.rs`, `flusher.rs` in sled 0.34.7). A page is a
//! whole B-tree leaf when sled consolidates it, and a leaf holds up to 17 values, so no
//! value written here is over `PIECE` bytes (17 of them stay under the threshold). A
//! larger one is cut: its first piece goes under its own key, after a mark, the number of
//! pieces and a generation; piece `k` (1, 2, …) goes under `tag ‖ key length (u16) ‖ key ‖
//! generation ‖ k`, in a tree of the caller's choosing (the Raft logs' `pieces` tree, or
//! the broker's index itself under a prefix of its own).
//!
//! Written in one sled batch with its head, a value is whole or absent after a crash. In
//! two (the Raft log's trees), the pieces go first: sled recovers a prefix of what was
//! written, so a head on disk always has its pieces. A head replaced by another keeps its
//! pieces apart by generation (a crash between the two never mixes them); the old
//! generation's pieces are removed after the new head is written.

use sled::{IVec, Tree};

/// Most bytes of one stored value: a leaf of 17 of them, with keys and headers, stays
/// well under sled's blob threshold.
pub const PIECE: usize = 4 << 10;
/// First byte of a head: never the first byte of a MessagePack value (0xc1 is unused).
const MARK: u8 = 0xc1;
/// A head: mark, pieces (u32 BE), generation (u64 BE), then the first piece.
const HEAD: usize = 1 + 4 + 8;

/// The first byte of a value's pieces' keys: which tree or kind of key it belongs to.
#[derive(Clone, Copy)]
pub struct Tag(pub u8);

impl Tag {
    /// The Raft logs' entries, as earlier versions kept them in sled (read when they move
    /// to their files).
    pub const LOG: Tag = Tag(b'L');
    /// The Raft groups' state (votes, snapshots).
    pub const STATE: Tag = Tag(b'S');
}

fn prefix(tag: Tag, key: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(3 + key.len() + 12);
    p.push(tag.0);
    // Keys of any length: the length keeps one key's pieces apart from a longer key's.
    p.extend_from_slice(&(key.len().min(u16::MAX as usize) as u16).to_be_bytes());
    p.extend_from_slice(key);
    p
}

fn piece_key(tag: Tag, key: &[u8], generation: u64, k: u32) -> Vec<u8> {
    let mut p = prefix(tag, key);
    p.extend_from_slice(&generation.to_be_bytes());
    p.extend_from_slice(&k.to_be_bytes());
    p
}

/// What to store under `key` for `value`: the value itself when it is small, else its
/// head, with the other pieces added to `more` (to apply before the head).
pub fn split(
    tag: Tag,
    key: &[u8],
    value: Vec<u8>,
    generation: u64,
    more: &mut sled::Batch,
) -> Result<Vec<u8>, String> {
    if value.len() <= PIECE && value.first() != Some(&MARK) {
        return Ok(value);
    }
    let first = PIECE - HEAD;
    let rest = value.len().saturating_sub(first);
    let count = 1 + rest.div_ceil(PIECE);
    let count = u32::try_from(count).map_err(|_| "a value too large to store".to_string())?;
    let cut = first.min(value.len());
    let mut head = Vec::with_capacity(HEAD + cut);
    head.push(MARK);
    head.extend_from_slice(&count.to_be_bytes());
    head.extend_from_slice(&generation.to_be_bytes());
    head.extend_from_slice(&value[..cut]);
    for (i, chunk) in value[cut..].chunks(PIECE).enumerate() {
        let k = u32::try_from(i + 1).map_err(|_| "a value too large to store".to_string())?;
        more.insert(piece_key(tag, key, generation, k), chunk);
    }
    Ok(head)
}

/// The whole value stored under `key` as `stored` (a small value or a head).
pub fn join(pieces: &Tree, tag: Tag, key: &[u8], stored: IVec) -> Result<IVec, String> {
    if stored.first() != Some(&MARK) {
        return Ok(stored);
    }
    let head = stored
        .get(..HEAD)
        .ok_or_else(|| "a stored value's head is cut short".to_string())?;
    let count = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    let mut g = [0u8; 8];
    g.copy_from_slice(&head[5..HEAD]);
    let generation = u64::from_be_bytes(g);
    let mut value = Vec::with_capacity(count as usize * PIECE);
    value.extend_from_slice(&stored[HEAD..]);
    for k in 1..count {
        let piece = pieces
            .get(piece_key(tag, key, generation, k))
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("piece {k} of {count} of a stored value is missing"))?;
        value.extend_from_slice(&piece);
    }
    Ok(value.into())
}

/// The generation of a head (`None` for a small value).
pub fn generation(stored: &[u8]) -> Option<u64> {
    if stored.first() != Some(&MARK) {
        return None;
    }
    let g: [u8; 8] = stored.get(5..HEAD)?.try_into().ok()?;
    Some(u64::from_be_bytes(g))
}

/// Adds to `batch` the removal of every piece of the keys in `from..=to` (keys of one
/// length, as the log's are).
pub fn remove_range(
    pieces: &Tree,
    tag: Tag,
    from: &[u8],
    to: &[u8],
    batch: &mut sled::Batch,
) -> Result<(), String> {
    let lo = prefix(tag, from);
    let mut hi = prefix(tag, to);
    hi.extend_from_slice(&[0xff; 12]);
    for kv in pieces.range(lo..=hi) {
        let (k, _) = kv.map_err(|e| e.to_string())?;
        batch.remove(k);
    }
    Ok(())
}

/// Adds to `batch` the removal of the pieces of `key` of every generation but `keep`.
pub fn remove_others(
    pieces: &Tree,
    tag: Tag,
    key: &[u8],
    keep: Option<u64>,
    batch: &mut sled::Batch,
) -> Result<(), String> {
    let p = prefix(tag, key);
    for kv in pieces.scan_prefix(&p) {
        let (k, _) = kv.map_err(|e| e.to_string())?;
        let g = k
            .get(p.len()..p.len() + 8)
            .and_then(|g| <[u8; 8]>::try_from(g).ok())
            .map(u64::from_be_bytes);
        if g != keep || k.len() != p.len() + 12 {
            batch.remove(k);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, sled::Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        (dir, db)
    }

    #[test]
    fn values_of_every_size_come_back_whole_and_no_stored_value_is_over_a_piece() {
        let (_d, db) = db();
        let (main, pieces) = (db.open_tree("m").unwrap(), db.open_tree("p").unwrap());
        let sizes = [
            0,
            1,
            PIECE - HEAD,
            PIECE,
            PIECE + 1,
            3 * PIECE + 17,
            2 << 20,
        ];
        for (i, n) in sizes.iter().enumerate() {
            let value: Vec<u8> = (0..*n).map(|j| (j * 31 + i) as u8).collect();
            let key = (i as u64).to_be_bytes();
            let mut more = sled::Batch::default();
            let head = split(Tag::LOG, &key, value.clone(), 7, &mut more).unwrap();
            pieces.apply_batch(more).unwrap();
            main.insert(key, head).unwrap();
            let got = join(&pieces, Tag::LOG, &key, main.get(key).unwrap().unwrap()).unwrap();
            assert_eq!(got.as_ref(), &value[..], "size {n}");
        }
        for tree in [&main, &pieces] {
            for kv in tree.iter() {
                assert!(kv.unwrap().1.len() <= PIECE);
            }
        }
        // A small value that happens to start with the mark is stored as a head too.
        let mut more = sled::Batch::default();
        let head = split(Tag::LOG, b"x", vec![MARK, 1, 2], 1, &mut more).unwrap();
        assert_eq!(
            join(&pieces, Tag::LOG, b"x", head.into()).unwrap().as_ref(),
            &[MARK, 1, 2]
        );
    }

    #[test]
    fn a_missing_piece_is_an_error_and_old_generations_are_removed() {
        let (_d, db) = db();
        let pieces = db.open_tree("p").unwrap();
        let value = vec![5u8; 3 * PIECE];
        let mut more = sled::Batch::default();
        let head = split(Tag::STATE, b"k", value.clone(), 1, &mut more).unwrap();
        pieces.apply_batch(more).unwrap();
        let mut more = sled::Batch::default();
        let head2 = split(Tag::STATE, b"k", vec![6u8; 2 * PIECE], 2, &mut more).unwrap();
        pieces.apply_batch(more).unwrap();
        assert_eq!(generation(&head2), Some(2));
        let mut rm = sled::Batch::default();
        remove_others(&pieces, Tag::STATE, b"k", Some(2), &mut rm).unwrap();
        pieces.apply_batch(rm).unwrap();
        assert!(join(&pieces, Tag::STATE, b"k", head.into()).is_err());
        assert_eq!(
            join(&pieces, Tag::STATE, b"k", head2.into())
                .unwrap()
                .as_ref(),
            &vec![6u8; 2 * PIECE][..]
        );
    }
}
