//! Records acknowledged after the index was last flushed come back at start (`tail.rs`):
//! each test writes some with a full flush, keeps that index, writes more with the segment
//! files synced only, then puts the old index back — what a crash before the next full
//! flush leaves — and starts again.

use super::tests::{open, open_store, publish, read_all};
use super::*;
use crate::core::Core;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// Publish `first` to topic "a" with a full flush, then `then` (one record each) with the
/// segment files synced only, and lose the index of `then`. Returns the data dir.
fn crash_after(first: &[&str], then: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, mut core) = open(dir.path());
        publish(&mut core, &store, "a", first, true, 1_000);
        store.flush().unwrap();
    }
    copy_dir(&dir.path().join("db"), &dir.path().join("db.saved"));
    {
        let (store, mut core) = open(dir.path());
        for p in then {
            publish(&mut core, &store, "a", &[p], true, 2_000);
        }
        store.sync_records().unwrap();
    }
    std::fs::remove_dir_all(dir.path().join("db")).unwrap();
    std::fs::rename(dir.path().join("db.saved"), dir.path().join("db")).unwrap();
    dir
}

fn segment_of_a(store: &Store, _core: &Core) -> std::path::PathBuf {
    let files = store.segs.list().unwrap();
    files.values().next_back().unwrap().clone()
}

fn payloads(v: &[(u64, String)]) -> Vec<String> {
    v.iter().map(|(_, p)| p.clone()).collect()
}

#[test]
fn records_past_the_index_are_indexed_again_with_their_dedupe_entries() {
    let dir = crash_after(&["1", "2"], &["3", "4", "5"]);
    let (store, mut core) = open(dir.path());
    let a = core.topics.get("a").unwrap().clone();
    assert_eq!((a.first_seq, a.last_seq, a.msgs), (1, 5, 5));
    assert_eq!(
        payloads(&read_all(&store, &core, "a")),
        ["1", "2", "3", "4", "5"]
    );
    // A retry of an acknowledged publish is still known as one.
    assert_eq!(
        publish(&mut core, &store, "a", &["4"], true, 2_500),
        vec![4]
    );
    // New publishes go on after them, in the same file.
    assert_eq!(
        publish(&mut core, &store, "a", &["6"], true, 2_500),
        vec![6]
    );
    store.flush().unwrap();
    drop(store);
    // The index written at that start is kept: the next start finds nothing to redo.
    let (store, core) = open(dir.path());
    assert_eq!(read_all(&store, &core, "a").len(), 6);
}

#[test]
fn a_torn_write_past_the_index_is_cut_and_its_seq_given_again() {
    let dir = crash_after(&["1"], &["2", "3"]);
    let seg;
    let good_len;
    {
        let (store, core) = open(dir.path());
        seg = segment_of_a(&store, &core);
        good_len = std::fs::metadata(&seg).unwrap().len();
    }
    // What a crash in the middle of the next write leaves: part of a record.
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    std::io::Write::write_all(&mut f, b"MR\x02\x00\0\0\0\x01\0\0\0\0\0\0\0\x04\0\0\x01\0").unwrap();
    drop(f);
    let (store, mut core) = open(dir.path());
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), good_len);
    assert_eq!(payloads(&read_all(&store, &core, "a")), ["1", "2", "3"]);
    assert_eq!(
        publish(&mut core, &store, "a", &["4"], true, 3_000),
        vec![4]
    );
    assert_eq!(
        payloads(&read_all(&store, &core, "a")),
        ["1", "2", "3", "4"]
    );
}

#[test]
fn damage_past_the_index_is_kept_and_reported_never_cut() {
    let dir = crash_after(&["1"], &["2", "3", "4"]);
    // Flip a byte in the body of the record of seq 3 (the fourth record of the file, after
    // the topic's own record and seqs 1 and 2).
    {
        let (store, core) = open(dir.path());
        let seg = segment_of_a(&store, &core);
        let mut bytes = std::fs::read(&seg).unwrap();
        let mut pos = 0usize;
        for _ in 0..3 {
            let (_, _, len) = segments::whole_at(&bytes, pos).unwrap();
            pos += segments::HEADER_LEN as usize + len as usize;
        }
        bytes[pos + segments::HEADER_LEN as usize + 3] ^= 0x40;
        drop(store);
        // Also lose the index of what the open above indexed.
        std::fs::write(&seg, bytes).unwrap();
    }
    let dir2 = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), dir2.path());
    let store = Store::open(dir2.path(), 8 << 20).unwrap();
    let loaded = store.load(1_000, 120_000).unwrap();
    let a = loaded
        .topics
        .iter()
        .find(|t| &*t.name == "a")
        .unwrap()
        .clone();
    assert_eq!(a.last_seq, 4, "the damaged seq is never given again");
    let d: Vec<(u64, u64)> = loaded
        .damage
        .iter()
        .map(|d| (d.first_seq, d.last_seq))
        .collect();
    assert_eq!(d, vec![(3, 3)]);
    let r = store.read(a.id, "a", 1, 4, usize::MAX).unwrap();
    let seqs: Vec<u64> = r.batches.iter().map(|b| b.first_seq).collect();
    assert_eq!(seqs, vec![1, 2, 4]);
    assert_eq!(r.corrupt, 1);
}

#[test]
fn a_topic_whose_every_record_is_past_the_index_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, mut core) = open(dir.path());
        // The topic is created (and its state flushed) with nothing in it yet.
        let t = core
            .topics
            .get_or_create("a", 1_000, Default::default(), "")
            .0
            .clone();
        store.put_topic(&t, core.topics.next_id()).unwrap();
        store.flush().unwrap();
    }
    copy_dir(&dir.path().join("db"), &dir.path().join("db.saved"));
    {
        let (store, mut core) = open(dir.path());
        publish(&mut core, &store, "a", &["1", "2"], false, 2_000);
        store.sync_records().unwrap();
    }
    std::fs::remove_dir_all(dir.path().join("db")).unwrap();
    std::fs::rename(dir.path().join("db.saved"), dir.path().join("db")).unwrap();
    let (store, core) = open(dir.path());
    assert_eq!(payloads(&read_all(&store, &core, "a")), ["1", "2"]);
}

#[test]
fn a_topic_created_after_the_index_was_flushed_comes_back_from_the_log() {
    let dir = crash_after(&["1"], &[]);
    {
        let (store, mut core) = open(dir.path());
        store.flush().unwrap();
        copy_dir(&dir.path().join("db"), &dir.path().join("db.saved"));
        publish(&mut core, &store, "b", &["x", "y"], true, 3_000);
        let t = core.topics.get("b").unwrap().clone();
        assert_eq!(t.last_seq, 2);
        store.sync_records().unwrap();
    }
    std::fs::remove_dir_all(dir.path().join("db")).unwrap();
    std::fs::rename(dir.path().join("db.saved"), dir.path().join("db")).unwrap();
    let (store, mut core) = open(dir.path());
    assert_eq!(payloads(&read_all(&store, &core, "b")), ["x", "y"]);
    assert_eq!(payloads(&read_all(&store, &core, "a")), ["1"]);
    // A topic created now gets an id of its own.
    publish(&mut core, &store, "c", &["z"], false, 3_500);
    let ids: std::collections::HashSet<u32> = ["a", "b", "c"]
        .iter()
        .map(|n| core.topics.get(n).unwrap().id)
        .collect();
    assert_eq!(ids.len(), 3);
}

/// An ack waits for the log and the heads file, not the index (`heads.rs`): a log cut short
/// past the index's end after records were acknowledged is damage, reported, and their
/// seqs are never given again — not a write torn by a crash.
#[test]
fn acknowledged_records_cut_from_the_log_past_the_index_are_damage_not_a_torn_write() {
    let dir = crash_after(&["1"], &["2", "3"]);
    {
        // Cut the file where the record of seq 2 starts (after the topic's own record and
        // seq 1's).
        let store = open_store(dir.path());
        let files = store.segs.list().unwrap();
        let seg = files.values().next_back().unwrap().clone();
        drop(store);
        let bytes = std::fs::read(&seg).unwrap();
        let mut pos = 0usize;
        for _ in 0..2 {
            let (_, _, len) = segments::whole_at(&bytes, pos).unwrap();
            pos += segments::HEADER_LEN as usize + len as usize;
        }
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(pos as u64 + 5).unwrap();
    }
    let store = open_store(dir.path());
    let loaded = store.load(3_000, 120_000).unwrap();
    let a = loaded.topics.iter().find(|t| &*t.name == "a").unwrap();
    assert_eq!(a.last_seq, 3, "acknowledged seqs are never given again");
    let d: Vec<(u64, u64)> = loaded
        .damage
        .iter()
        .map(|d| (d.first_seq, d.last_seq))
        .collect();
    assert_eq!(d, vec![(2, 3)]);
    let r = store.read(a.id, "a", 1, 3, usize::MAX).unwrap();
    let seqs: Vec<u64> = r.batches.iter().map(|b| b.first_seq).collect();
    assert_eq!(seqs, vec![1]);
    assert_eq!(r.corrupt, 2, "both seqs read as damaged");
    drop(store);
    // The next start says the same, and new records go on after the damage.
    let (store, mut core) = open(dir.path());
    assert_eq!(core.topics.get("a").unwrap().last_seq, 3);
    assert_eq!(
        publish(&mut core, &store, "a", &["4"], true, 3_500),
        vec![4]
    );
    assert_eq!(payloads(&read_all(&store, &core, "a")), ["1", "4"]);
}

/// Only what an ack named is damage: records written past the heads file's last sync (never
/// acknowledged) and cut by a crash are a torn write.
#[test]
fn records_written_after_the_heads_were_synced_are_a_torn_write() {
    let dir = crash_after(&["1"], &["2"]);
    {
        let (store, mut core) = open(dir.path());
        // Written, not synced: no ack named them.
        publish(&mut core, &store, "a", &["3"], true, 2_500);
        let files = store.segs.list().unwrap();
        let seg = files.values().next_back().unwrap().clone();
        drop(store);
        let len = std::fs::metadata(&seg).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 3).unwrap();
    }
    let store = open_store(dir.path());
    let loaded = store.load(3_000, 120_000).unwrap();
    assert!(loaded.damage.is_empty(), "{:?}", loaded.damage);
    let a = loaded.topics.iter().find(|t| &*t.name == "a").unwrap();
    assert_eq!(a.last_seq, 2);
}
