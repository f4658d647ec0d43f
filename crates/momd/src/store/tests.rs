use bytes::Bytes;
use mom_proto::{Limits, PubMsg, Sender};

use super::*;
use crate::core::{Core, CoreConfig, Dedupe, Topics};

pub(super) fn sender() -> Sender {
    Sender {
        user: "u".into(),
        client: 7,
        name: "n".into(),
    }
}

pub(super) fn publish(
    core: &mut Core,
    store: &Store,
    topic: &str,
    payloads: &[&str],
    ids: bool,
    now: u64,
) -> Vec<u64> {
    let msgs = payloads
        .iter()
        .map(|p| PubMsg {
            payload: Bytes::copy_from_slice(p.as_bytes()),
            headers: [("h".to_string(), "v".to_string())].into(),
            msg_id: ids.then(|| format!("id-{p}")),
            key: None,
        })
        .collect();
    let plan = core.publish(topic, msgs, sender(), now).unwrap();
    store.append(&plan, &core.topics).unwrap();
    plan.seqs
}

pub(super) fn read_all(store: &Store, core: &Core, topic: &str) -> Vec<(u64, String)> {
    let t = core.topics.get(topic).unwrap();
    let r = store
        .read(t.id, topic, t.first_seq, t.last_seq, usize::MAX)
        .unwrap();
    r.batches
        .iter()
        .flat_map(|b| {
            b.msgs.iter().enumerate().map(move |(i, m)| {
                (
                    b.first_seq + i as u64,
                    String::from_utf8_lossy(&m.payload).into_owned(),
                )
            })
        })
        .collect()
}

/// The store in `dir`, not loaded. sled's background thread may hold the previous handle
/// for a moment after drop.
pub(super) fn open_store(dir: &std::path::Path) -> Store {
    let mut tries = 0;
    loop {
        match Store::open(dir, 8 << 20) {
            Ok(s) => break s,
            Err(_) if tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("cannot reopen: {e}"),
        }
    }
}

pub(super) fn open(dir: &std::path::Path) -> (Store, Core) {
    let store = open_store(dir);
    let (core, _) = loaded_core(&store);
    (store, core)
}

/// The core a start builds from `store`, and the store's server id.
pub(super) fn loaded_core(store: &Store) -> (Core, String) {
    let loaded = store.load(1_000, 120_000).unwrap();
    let mut dedupe = Dedupe::default();
    for (t, id, seq, time) in loaded.dedupe {
        dedupe.insert(t, id, seq, time);
    }
    let core = Core::new(
        CoreConfig::default(),
        Topics::from_stored(loaded.topics, loaded.next_topic_id),
        dedupe,
    );
    (core, loaded.server_id)
}

#[test]
fn appended_messages_read_back_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let server_id;
    {
        let (store, mut core) = open(dir.path());
        server_id = store.load(1_000, 120_000).unwrap().server_id;
        publish(&mut core, &store, "a", &["1", "2", "3"], true, 1_000);
        publish(&mut core, &store, "b", &["x"], false, 1_000);
        publish(&mut core, &store, "a", &["4"], true, 1_000);
        store.flush().unwrap();
        assert_eq!(read_all(&store, &core, "a").len(), 4);
    }
    let (store, mut core) = open(dir.path());
    assert_eq!(store.load(1_000, 120_000).unwrap().server_id, server_id);
    let a = core.topics.get("a").unwrap().clone();
    assert_eq!((a.msgs, a.last_seq, a.first_seq), (4, 4, 1));
    assert_eq!(
        read_all(&store, &core, "a"),
        vec![
            (1, "1".into()),
            (2, "2".into()),
            (3, "3".into()),
            (4, "4".into())
        ]
    );
    // Dedupe entries came back too: a repeat gets its original seq.
    assert_eq!(
        publish(&mut core, &store, "a", &["2"], true, 1_500),
        vec![2]
    );
    // Reading from the middle of a record starts at the asked seq.
    let r = store.read(a.id, "a", 3, 4, usize::MAX).unwrap();
    assert_eq!(
        r.batches.iter().map(|b| b.first_seq).collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert_eq!(r.next_seq, 5);
    let m = &r.batches[0].msgs[0];
    assert_eq!(m.headers.get("h").map(String::as_str), Some("v"));
    assert_eq!(r.batches[0].sender, sender());
}

#[test]
fn big_publishes_are_cut_into_records_and_read_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut core) = open(dir.path());
    let payloads: Vec<String> = (0..20_000)
        .map(|i| format!("message number {i:06}"))
        .collect();
    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
    publish(&mut core, &store, "big", &refs, false, 1);
    let t = core.topics.get("big").unwrap().clone();
    let mut from = 1;
    let mut got = Vec::new();
    while from <= t.last_seq {
        let r = store
            .read(t.id, "big", from, t.last_seq, 64 * 1024)
            .unwrap();
        assert!(r.next_seq > from);
        from = r.next_seq;
        for b in r.batches {
            for (i, m) in b.msgs.iter().enumerate() {
                got.push((b.first_seq + i as u64, m.payload.clone()));
            }
        }
    }
    assert_eq!(got.len(), 20_000);
    for (i, (seq, p)) in got.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        assert_eq!(p.as_ref(), payloads[i].as_bytes());
    }
}

#[test]
fn trim_by_count_bytes_and_age() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut core) = open(dir.path());
    for i in 0..5 {
        let ps: Vec<String> = (0..4).map(|j| format!("{}", i * 4 + j + 1)).collect();
        let refs: Vec<&str> = ps.iter().map(String::as_str).collect();
        publish(&mut core, &store, "t", &refs, false, 1_000 + i);
    }
    let id = core.topics.get("t").unwrap().id;
    let set = |core: &mut Core, l: Limits| {
        let t = core.topics.by_id_mut(id).unwrap();
        t.limits = l.into();
    };
    let trim = |core: &mut Core, now| {
        let t = core.topics.by_id(id).unwrap().clone();
        if let Some((first, n, b)) = store.trim(&t, *t.limits, now, u64::MAX).unwrap() {
            core.topics.by_id_mut(id).unwrap().record_trim(first, n, b);
        }
    };
    set(
        &mut core,
        Limits {
            max_msgs: 7,
            ..Limits::default()
        },
    );
    trim(&mut core, 2_000);
    let t = core.topics.by_id(id).unwrap().clone();
    assert_eq!((t.msgs, t.first_seq), (7, 14));
    assert_eq!(read_all(&store, &core, "t").first().map(|x| x.0), Some(14));
    // Bytes: every message is its payload plus "h"+"v".
    let per = |s: u64| s.to_string().len() as u64 + 2;
    assert_eq!(t.bytes, (14..=20).map(per).sum::<u64>());
    set(
        &mut core,
        Limits {
            max_bytes: 3 * 4,
            ..Limits::default()
        },
    );
    trim(&mut core, 2_000);
    let t = core.topics.by_id(id).unwrap().clone();
    assert_eq!((t.msgs, t.first_seq), (3, 18));
    // Age: the records were published at 1000..=1004, the last one (seqs 17..=20) at 1004.
    // At 1103 with a 100 ms max age it is still young, so nothing goes; at 1104 it all does.
    set(
        &mut core,
        Limits {
            max_age_ms: 100,
            ..Limits::default()
        },
    );
    trim(&mut core, 1_103);
    let t = core.topics.by_id(id).unwrap().clone();
    assert_eq!((t.msgs, t.first_seq), (3, 18));
    trim(&mut core, 1_104);
    let t = core.topics.by_id(id).unwrap().clone();
    assert_eq!((t.msgs, t.first_seq, t.last_seq), (0, 21, 20));
    assert!(read_all(&store, &core, "t").is_empty());
}

#[test]
fn removed_topics_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, mut core) = open(dir.path());
        publish(&mut core, &store, "gone", &["a", "b"], true, 1);
        publish(&mut core, &store, "kept", &["c"], true, 1);
        let t = core.remove_topic("gone").unwrap();
        store.remove_topic(t.id).unwrap();
        store.flush().unwrap();
    }
    let (store, core) = open(dir.path());
    assert!(core.topics.get("gone").is_none());
    assert_eq!(read_all(&store, &core, "kept").len(), 1);
    assert_eq!(store.db.scan_prefix([P_MSG]).count(), 1);
    assert_eq!(store.db.scan_prefix([P_DEDUPE]).count(), 1);
}

fn segment_files(dir: &std::path::Path, _topic: u32) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join(segments::DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn a_corrupt_message_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut core) = open(dir.path());
    publish(&mut core, &store, "c", &["good", "evil", "fine"], false, 1);
    publish(&mut core, &store, "c", &["next"], false, 2);
    let t = core.topics.get("c").unwrap().clone();
    // Flip one byte of the payload "evil" inside the segment file: the record's CRC no
    // longer matches, so the whole record is skipped, and the next one still reads.
    let seg = &segment_files(dir.path(), t.id)[0];
    let mut v = std::fs::read(seg).unwrap();
    let pos = v.windows(4).position(|w| w == b"evil").unwrap();
    v[pos] = b'E';
    std::fs::write(seg, v).unwrap();
    let r = store.read(t.id, "c", 1, 4, usize::MAX).unwrap();
    assert_eq!(r.corrupt, 3);
    let seqs: Vec<u64> = r
        .batches
        .iter()
        .flat_map(|b| (0..b.msgs.len() as u64).map(move |i| b.first_seq + i))
        .collect();
    assert_eq!(seqs, vec![4]);
    assert_eq!(r.next_seq, 5);
}

#[test]
fn an_indexed_record_cut_short_is_damage_kept_and_its_seq_never_given_again() {
    let dir = tempfile::tempdir().unwrap();
    let id;
    {
        let (store, mut core) = open(dir.path());
        publish(&mut core, &store, "t", &["one", "two"], true, 1);
        publish(&mut core, &store, "t", &["three"], true, 2);
        store.flush().unwrap();
        id = core.topics.get("t").unwrap().id;
    }
    // The file lost its last bytes after the index said the record was there. A crash
    // cannot do that (segments are synced before the index): it is damage.
    let seg = &segment_files(dir.path(), id)[0];
    let len = std::fs::metadata(seg).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(seg).unwrap();
    f.set_len(len - 3).unwrap();
    drop(f);
    let (store, mut core) = open(dir.path());
    let t = core.topics.get("t").unwrap().clone();
    assert_eq!(
        (t.last_seq, t.first_seq),
        (3, 1),
        "nothing cut, no seq given again"
    );
    assert_eq!(store.check_all().unwrap().damage.len(), 1);
    // Its msg_id is still known: a retry is the duplicate of seq 3, not a new message.
    assert_eq!(
        publish(&mut core, &store, "t", &["three"], true, 3),
        vec![3]
    );
    assert_eq!(publish(&mut core, &store, "t", &["four"], true, 3), vec![4]);
    // The new record went to a new segment file, not after the damaged end.
    assert_eq!(segment_files(dir.path(), id).len(), 2);
    assert_eq!(
        read_all(&store, &core, "t"),
        vec![(1, "one".into()), (2, "two".into()), (4, "four".into())]
    );
}

#[test]
fn bytes_written_after_the_newest_indexed_record_are_a_torn_write_and_cut() {
    let dir = tempfile::tempdir().unwrap();
    let id;
    {
        let (store, mut core) = open(dir.path());
        publish(&mut core, &store, "t", &["one", "two"], true, 1);
        store.flush().unwrap();
        id = core.topics.get("t").unwrap().id;
    }
    // A crash while a record was being appended, before the index named it.
    let seg = &segment_files(dir.path(), id)[0];
    let len = std::fs::metadata(seg).unwrap().len();
    let mut f = std::fs::OpenOptions::new().append(true).open(seg).unwrap();
    std::io::Write::write_all(&mut f, b"MOMS half a record").unwrap();
    drop(f);
    let (store, mut core) = open(dir.path());
    assert_eq!(
        std::fs::metadata(seg).unwrap().len(),
        len,
        "the torn bytes are cut"
    );
    assert!(store.check_all().unwrap().damage.is_empty());
    assert_eq!(
        publish(&mut core, &store, "t", &["three"], true, 2),
        vec![3]
    );
    assert_eq!(
        read_all(&store, &core, "t"),
        vec![(1, "one".into()), (2, "two".into()), (3, "three".into())]
    );
}

#[test]
fn a_flipped_byte_below_good_ones_is_kept_and_reported_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let id = four_records(dir.path(), &["aaaa", "bbbb", "cccc", "dddd"]);
    flip(dir.path(), id, b"bbbb");
    let store = open_store(dir.path());
    let loaded = store.load(1_000, 120_000).unwrap();
    assert_eq!(loaded.damage.len(), 1, "{:?}", loaded.damage);
    let d = &loaded.damage[0];
    assert_eq!((d.topic.as_str(), d.first_seq, d.last_seq), ("t", 2, 2));
    assert_eq!(d.segment, "log/00000000000000000001.seg");
    assert_eq!(d.reason, "checksum mismatch");
    drop(loaded);
    drop(store);
    let (store, mut core) = open(dir.path());
    let t = core.topics.get("t").unwrap().clone();
    // Nothing acknowledged was dropped and no seq goes back.
    assert_eq!((t.first_seq, t.last_seq, t.msgs), (1, 4, 4));
    assert_eq!(
        seqs_read(&store, &core, "t"),
        vec![(1, "aaaa".into()), (3, "cccc".into()), (4, "dddd".into())]
    );
    let r = store.read(t.id, "t", 1, 4, usize::MAX).unwrap();
    assert_eq!(r.corrupt, 1);
    assert_eq!(
        publish(&mut core, &store, "t", &["eeee"], false, 2),
        vec![5]
    );
}

#[test]
fn a_flipped_byte_in_the_newest_record_is_damage_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let id = four_records(dir.path(), &["aaaa", "bbbb", "cccc", "dddd"]);
    flip(dir.path(), id, b"dddd");
    let (store, mut core) = open(dir.path());
    let t = core.topics.get("t").unwrap().clone();
    assert_eq!((t.last_seq, t.msgs), (4, 4));
    assert_eq!(
        publish(&mut core, &store, "t", &["eeee"], false, 2),
        vec![5]
    );
    assert_eq!(
        seqs_read(&store, &core, "t"),
        vec![
            (1, "aaaa".into()),
            (2, "bbbb".into()),
            (3, "cccc".into()),
            (5, "eeee".into())
        ]
    );
    let sum = store.check_all().unwrap();
    assert_eq!(sum.damage.len(), 1);
    assert_eq!((sum.damage[0].first_seq, sum.damage[0].last_seq), (4, 4));
}

#[test]
fn a_damaged_header_length_in_the_middle_is_kept_and_later_records_read() {
    let dir = tempfile::tempdir().unwrap();
    let id = four_records(dir.path(), &["aaaa", "bbbb", "cccc", "dddd"]);
    // The second record's header (after the topic's own record): its length field (bytes
    // 16..20) made huge.
    let seg = &segment_files(dir.path(), id)[0];
    let mut v = std::fs::read(seg).unwrap();
    let second = v
        .windows(2)
        .enumerate()
        .filter(|(_, w)| *w == b"MR")
        .nth(2)
        .unwrap()
        .0;
    v[second + 16] = 0xff;
    std::fs::write(seg, v).unwrap();
    let (store, core) = open(dir.path());
    let t = core.topics.get("t").unwrap().clone();
    assert_eq!((t.last_seq, t.msgs), (4, 4));
    assert_eq!(
        seqs_read(&store, &core, "t"),
        vec![(1, "aaaa".into()), (3, "cccc".into()), (4, "dddd".into())]
    );
    let sum = store.check_all().unwrap();
    assert_eq!(sum.damage.len(), 1);
    assert!(
        sum.damage[0].reason.contains("header does not match"),
        "{}",
        sum.damage[0]
    );
}

/// Publish one message per record ("a", "b", …) to topic "t", flush, and return its id.
fn four_records(dir: &std::path::Path, payloads: &[&str]) -> u32 {
    let (store, mut core) = open(dir);
    for p in payloads {
        publish(&mut core, &store, "t", &[p], false, 1);
    }
    store.flush().unwrap();
    core.topics.get("t").unwrap().id
}

/// Flip one bit of the last occurrence of `needle` in the topic's first segment file.
fn flip(dir: &std::path::Path, id: u32, needle: &[u8]) {
    let seg = &segment_files(dir, id)[0];
    let mut v = std::fs::read(seg).unwrap();
    let pos = v.windows(needle.len()).rposition(|w| w == needle).unwrap();
    v[pos] ^= 0x20;
    std::fs::write(seg, v).unwrap();
}

fn seqs_read(store: &Store, core: &Core, topic: &str) -> Vec<(u64, String)> {
    read_all(store, core, topic)
}

#[test]
fn an_indexed_record_whose_data_never_reached_the_disk_is_damage_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let big = "x".repeat(2000);
    let id = four_records(dir.path(), &["aaaa", &big]);
    // The file's size reached the disk, the last record's data did not: not something a
    // crash does to an indexed record any more (segments are synced first), so damage.
    let seg = &segment_files(dir.path(), id)[0];
    let mut v = std::fs::read(seg).unwrap();
    let n = v.len();
    v[n - 1500..].fill(0);
    std::fs::write(seg, v).unwrap();
    let (store, mut core) = open(dir.path());
    let t = core.topics.get("t").unwrap().clone();
    assert_eq!(t.last_seq, 2);
    assert_eq!(store.check_all().unwrap().damage.len(), 1);
    assert_eq!(
        publish(&mut core, &store, "t", &["bbbb"], false, 2),
        vec![3]
    );
    assert_eq!(
        seqs_read(&store, &core, "t"),
        vec![(1, "aaaa".into()), (3, "bbbb".into())]
    );
}

#[test]
fn repair_moves_damage_aside_and_keeps_every_seq() {
    let dir = tempfile::tempdir().unwrap();
    let id = four_records(dir.path(), &["aaaa", "bbbb", "cccc", "dddd"]);
    flip(dir.path(), id, b"aaaa");
    flip(dir.path(), id, b"cccc");
    {
        let store = open_store(dir.path());
        let sum = store.check_all().unwrap();
        assert_eq!(sum.damage.len(), 2, "{:?}", sum.damage);
        assert_eq!((sum.records, sum.messages), (2, 2));
        let mut again = check::Checked::default();
        let moved = store.repair(&mut again).unwrap();
        assert_eq!(moved, sum.damage);
        assert!(store.check_all().unwrap().damage.is_empty());
        store.flush().unwrap();
    }
    let notes = std::fs::read_to_string(dir.path().join("damaged/NOTES")).unwrap();
    assert!(
        notes.contains("seqs 1-1") && notes.contains("seqs 3-3"),
        "{notes}"
    );
    let aside = std::fs::read(dir.path().join(format!("damaged/{id}-3.rec"))).unwrap();
    assert!(aside.starts_with(b"MR"));
    let (store, mut core) = open(dir.path());
    let t = core.topics.get("t").unwrap().clone();
    // The head moved past the damage; the last seq stayed.
    assert_eq!((t.first_seq, t.last_seq, t.msgs), (2, 4, 2));
    assert_eq!(
        seqs_read(&store, &core, "t"),
        vec![(2, "bbbb".into()), (4, "dddd".into())]
    );
    assert_eq!(
        publish(&mut core, &store, "t", &["eeee"], false, 2),
        vec![5]
    );
    assert!(store.check_all().unwrap().damage.is_empty());
}

#[test]
fn repair_of_the_newest_record_never_reuses_its_seq() {
    let dir = tempfile::tempdir().unwrap();
    let id = four_records(dir.path(), &["aaaa", "bbbb"]);
    flip(dir.path(), id, b"bbbb");
    {
        let store = open_store(dir.path());
        store.repair(&mut check::Checked::default()).unwrap();
    }
    let (store, mut core) = open(dir.path());
    assert_eq!(core.topics.get("t").unwrap().last_seq, 2);
    assert_eq!(
        publish(&mut core, &store, "t", &["cccc"], false, 2),
        vec![3]
    );
    store.flush().unwrap();
    drop((store, core));
    let (store, core) = open(dir.path());
    assert_eq!(
        seqs_read(&store, &core, "t"),
        vec![(1, "aaaa".into()), (3, "cccc".into())]
    );
    assert!(store.check_all().unwrap().damage.is_empty());
}

#[test]
fn retention_never_removes_what_a_queue_still_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut core) = open(dir.path());
    for i in 0..10 {
        publish(&mut core, &store, "t", &[&i.to_string()], false, 1);
    }
    let id = core.topics.get("t").unwrap().id;
    std::sync::Arc::make_mut(&mut core.topics.by_id_mut(id).unwrap().limits).max_msgs = 2;
    let t = core.topics.by_id(id).unwrap().clone();
    // A queue still needs seq 4 and later.
    let (first, n, _) = store.trim(&t, *t.limits, 1, 4).unwrap().unwrap();
    assert_eq!((first, n), (4, 3));
}

#[test]
fn retention_deletes_whole_segment_files_once_the_index_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut core) = open(dir.path());
    // 70 records of ~1 MiB fill more than one 64 MiB segment.
    let big = "x".repeat(1024 * 1024 - 64);
    for _ in 0..70 {
        publish(&mut core, &store, "big", &[big.as_str()], false, 1);
    }
    let id = core.topics.get("big").unwrap().id;
    assert_eq!(segment_files(dir.path(), id).len(), 2);
    std::sync::Arc::make_mut(&mut core.topics.by_id_mut(id).unwrap().limits).max_msgs = 5;
    let t = core.topics.by_id(id).unwrap().clone();
    let (first, n, _) = store.trim(&t, *t.limits, 1, u64::MAX).unwrap().unwrap();
    assert_eq!((first, n), (66, 65));
    // The files stay until the index without them is durable (the broker removes them
    // after the next flush): a crash in between must find every record the index names.
    assert_eq!(segment_files(dir.path(), id).len(), 2);
    store.flush().unwrap();
    assert_eq!(segment_files(dir.path(), id).len(), 1);
    core.topics.by_id_mut(id).unwrap().record_trim(first, n, 0);
    assert_eq!(read_all(&store, &core, "big").len(), 5);
}

#[test]
fn seq_at_time_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut core) = open(dir.path());
    publish(&mut core, &store, "t", &["a", "b"], false, 100);
    publish(&mut core, &store, "t", &["c"], false, 200);
    let t = core.topics.get("t").unwrap().clone();
    assert_eq!(store.seq_at_time(&t, 0).unwrap(), 1);
    assert_eq!(store.seq_at_time(&t, 150).unwrap(), 3);
    assert_eq!(store.seq_at_time(&t, 201).unwrap(), 4);
    assert_eq!(store.seq_at_time(&t, 100).unwrap(), 1);
    assert_eq!(store.seq_at_time(&t, 101).unwrap(), 3);
}

#[test]
fn seq_at_time_over_many_records() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut core) = open(dir.path());
    for i in 0..300u64 {
        let p = format!("{i}");
        publish(&mut core, &store, "t", &[&p, &p, &p], false, 1_000 + i * 10);
    }
    let t = core.topics.get("t").unwrap().clone();
    for (time, want) in [
        (0, 1),
        (1_000, 1),
        (1_001, 4),
        (1_010, 4),
        (2_000, 301),
        (3_990, 898),
        (3_991, 901),
        (9_999, 901),
    ] {
        assert_eq!(store.seq_at_time(&t, time).unwrap(), want, "time {time}");
    }
}

#[test]
fn client_ids_are_unique_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let a;
    {
        let (store, _) = open(dir.path());
        a = store.next_client_id().unwrap();
        assert_eq!(store.next_client_id().unwrap(), a + 1);
        store.flush().unwrap();
    }
    let (store, _) = open(dir.path());
    // After a restart ids skip ahead, so one handed out but never flushed is not reused.
    assert!(store.next_client_id().unwrap() >= a + 1000);
}

/// Issue 10: a start interrupted while sled wrote a snapshot (a full disk) left a partial
/// `snap.*.generating` file that made the store unopenable ("Read corrupted data") until it
/// was deleted by hand. It never holds anything the log does not; the store opens without it.
#[test]
fn a_snapshot_sled_did_not_finish_does_not_make_the_store_unopenable() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, mut core) = open(dir.path());
        publish(&mut core, &store, "a", &["1", "2"], false, 1_000);
        store.flush().unwrap();
    }
    // A partial snapshot with a higher LSN than any finished one: sled would pick it.
    let partial = dir
        .path()
        .join("db")
        .join("snap.7FFFFFFFFFFFFFFF.generating");
    std::fs::write(&partial, b"half a snapshot").unwrap();
    let (store, core) = open(dir.path());
    assert!(!partial.exists());
    assert_eq!(
        read_all(&store, &core, "a"),
        vec![(1, "1".into()), (2, "2".into())]
    );
}

/// Issue 10: a forward clock jump (or a long downtime) across a crash made every dedupe
/// entry look expired at start, so a publisher's retry was stored twice. The window counts
/// the time momd runs: entries are shifted by the time since momd was last alive.
#[test]
fn the_dedupe_window_does_not_count_downtime_or_a_clock_jump() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, mut core) = open(dir.path());
        publish(&mut core, &store, "t", &["a"], true, 1_000);
        store.set_alive(1_000);
        store.flush().unwrap();
    }
    let ten_hours = 10 * 3_600_000;
    let store = open_store(dir.path());
    let loaded = store.load(1_000 + ten_hours, 120_000).unwrap();
    assert_eq!(loaded.dedupe.len(), 1, "still within the window");
    assert_eq!(loaded.dedupe[0].3, 1_000 + ten_hours);
    store.flush().unwrap();
    drop(store);
    // Another restart right after, a minute of downtime later: the entry is a minute
    // older than at the last start, not ten hours more.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let store = loop {
        if let Ok(s) = Store::open(dir.path(), 8 << 20) {
            break s;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let again = store.load(1_000 + ten_hours + 60_000, 120_000).unwrap();
    assert_eq!(again.dedupe.len(), 1);
    assert_eq!(again.dedupe[0].3, 1_000 + ten_hours + 60_000);
    // An entry written in this run, after all that downtime, is as old after the next
    // restart as the time momd ran since it was written.
    let mut core = Core::new(
        CoreConfig::default(),
        Topics::from_stored(again.topics, again.next_topic_id),
        Dedupe::default(),
    );
    let t2 = 1_000 + ten_hours + 65_000;
    publish(&mut core, &store, "t", &["b"], true, t2);
    store.set_alive(t2 + 1_000);
    store.flush().unwrap();
    drop(store);
    let store = loop {
        if let Ok(s) = Store::open(dir.path(), 8 << 20) {
            break s;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let half_an_hour = 1_800_000;
    let third = store.load(t2 + 1_000 + half_an_hour, 120_000).unwrap();
    let mut times: Vec<(String, u64)> = third.dedupe.iter().map(|d| (d.1.clone(), d.3)).collect();
    times.sort();
    assert_eq!(
        times,
        vec![
            (
                "id-a".to_string(),
                1_000 + ten_hours + 60_000 + half_an_hour
            ),
            ("id-b".to_string(), t2 + half_an_hour),
        ]
    );
}

/// Another process filling the disk must not make a write of sled's fail (sled refuses
/// every write after one fails): the room past the end of its log file stays allocated,
/// after each flush too.
#[test]
fn room_past_the_end_of_the_index_log_stays_allocated() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let room = 4 << 20;
    let store = Store::open(dir.path(), 1 << 20)
        .unwrap()
        .with_index_room(room);
    let allocated_past_end = || {
        let m = std::fs::metadata(dir.path().join("db").join("db")).unwrap();
        (m.blocks() * 512).saturating_sub(m.len())
    };
    assert!(allocated_past_end() >= room, "{}", allocated_past_end());
    let mut core = Core::new(CoreConfig::default(), Topics::default(), Dedupe::default());
    for i in 0..200 {
        let p = format!("{i:0>900}");
        publish(&mut core, &store, "a.b", &[p.as_str()], true, 1);
    }
    store.flush().unwrap();
    assert!(allocated_past_end() >= room, "{}", allocated_past_end());
}

/// Publishes staged for one write share records: one record (and one index entry) per
/// topic, whatever the number of publishes, each publish keeping its own sender and time.
#[test]
fn publishes_of_one_write_share_a_record_and_keep_their_senders() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut core) = open(dir.path());
    let mut staged = Staged::default();
    let mut publish_as = |core: &mut Core, topic: &str, client: u64, payloads: &[&str], now| {
        let msgs = payloads
            .iter()
            .map(|p| PubMsg {
                payload: Bytes::copy_from_slice(p.as_bytes()),
                msg_id: Some(format!("{topic}-{p}")),
                ..PubMsg::default()
            })
            .collect();
        let who = Sender { client, ..sender() };
        let plan = core.publish(topic, msgs, who, now).unwrap();
        let b = Arc::new(Batch {
            topic: Arc::from(topic),
            first_seq: plan.first_seq,
            time: plan.time,
            sender: plan.sender.clone(),
            msgs: plan.stored.clone(),
        });
        store.stage_publish(&mut staged, plan.topic_id, plan.created, Some(&b));
    };
    publish_as(&mut core, "a", 1, &["1", "2"], 1_000);
    publish_as(&mut core, "b", 2, &["x"], 1_001);
    publish_as(&mut core, "a", 3, &["3"], 1_002);
    let topics = &core.topics;
    store
        .apply(staged, |id| topics.by_id(id), topics.next_id())
        .unwrap();
    // Read from the overlay before the flush, from sled after.
    let a = core.topics.get("a").unwrap();
    assert_eq!(
        store
            .read(a.id, "a", 1, 3, usize::MAX)
            .unwrap()
            .batches
            .len(),
        2
    );
    assert!(store.db.scan_prefix([P_MSG]).next().is_none());
    store.flush().unwrap();
    assert_eq!(
        store.db.scan_prefix([P_MSG]).count(),
        2,
        "one record per topic"
    );
    let a = core.topics.get("a").unwrap();
    let r = store.read(a.id, "a", 1, 3, usize::MAX).unwrap();
    let got: Vec<(u64, u64, u64, usize)> = r
        .batches
        .iter()
        .map(|b| (b.first_seq, b.sender.client, b.time, b.msgs.len()))
        .collect();
    assert_eq!(got, vec![(1, 1, 1_000, 2), (3, 3, 1_002, 1)]);
    // Reading from inside the second run starts there.
    let r = store.read(a.id, "a", 3, 3, usize::MAX).unwrap();
    assert_eq!(r.batches.len(), 1);
    assert_eq!(r.batches[0].sender.client, 3);
    // It all comes back after a restart, dedupe entries included.
    store.flush().unwrap();
    drop(store);
    let (store, mut core) = open(dir.path());
    assert_eq!(read_all(&store, &core, "a").len(), 3);
    let again = core
        .publish(
            "a",
            vec![PubMsg {
                payload: Bytes::from_static(b"3"),
                msg_id: Some("a-3".into()),
                ..PubMsg::default()
            }],
            sender(),
            1_500,
        )
        .unwrap();
    assert_eq!(again.seqs, vec![3]);
    assert_eq!(again.duplicates, 1);
}

/// A write that fails after some records were appended leaves none of them behind: the
/// log ends where it did, and the next records go there.
#[test]
fn a_failed_write_is_cut_back() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut core) = open(dir.path());
    publish(&mut core, &store, "a", &["1"], false, 1_000);
    let a = core.topics.get("a").unwrap().id;
    let seg = |store: &Store| {
        let files = store.segs.list().unwrap();
        let (_, path) = files.iter().next_back().unwrap();
        std::fs::metadata(path).unwrap().len()
    };
    let before = seg(&store);
    let loc = store.segs.append(a, 2, b"never indexed").unwrap();
    assert!(seg(&store) > before);
    store.segs.cut_at(loc).unwrap();
    assert_eq!(seg(&store), before);
    publish(&mut core, &store, "a", &["2"], false, 1_000);
    assert_eq!(
        read_all(&store, &core, "a"),
        vec![(1, "1".into()), (2, "2".into())]
    );
}

#[test]
fn the_overlay_is_read_over_sled_in_key_order() {
    let kv = |k: &str, v: &str| (k.as_bytes().to_vec(), v.as_bytes().to_vec());
    let sled = vec![kv("a", "1"), kv("c", "1"), kv("e", "1")];
    let over = vec![
        (b"b".to_vec(), Some(b"2".to_vec())),
        (b"c".to_vec(), None),
        (b"e".to_vec(), Some(b"2".to_vec())),
        (b"f".to_vec(), Some(b"2".to_vec())),
    ];
    let got: Vec<(Vec<u8>, Vec<u8>)> = super::read::overlay_merge(over, sled.into_iter().map(Ok))
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(
        got,
        vec![kv("a", "1"), kv("b", "2"), kv("e", "2"), kv("f", "2")]
    );
}
