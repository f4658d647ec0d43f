//! Tests of the segment files (`log_files.rs`).

use super::*;

fn payload(i: u64) -> Vec<u8> {
    format!("entry {i} {}", "x".repeat((i % 7) as usize * 100)).into_bytes()
}

fn append(log: &mut LogFiles, from: u64, to: u64) {
    let entries: Vec<(u64, Vec<u8>)> = (from..=to).map(|i| (i, payload(i))).collect();
    let mut dirty = Vec::new();
    log.append(&entries, &mut dirty).expect("append");
    for f in dirty {
        f.sync_data().expect("sync");
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .collect();
    v.sort();
    v
}

#[test]
fn the_entries_within_a_byte_bound_are_counted_back_across_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogFiles::open(dir.path(), 2000).expect("open");
    append(&mut log, 5, 60);
    assert!(files(dir.path()).len() > 5, "several segments");
    let size = |i: u64| HEAD + payload(i).len() as u64;
    // The smallest start whose records up to `end` fit in `max`, counted one by one.
    let by_hand = |end: u64, max: u64| {
        let mut first = end + 1;
        let mut sum = 0;
        for i in (5..=end).rev() {
            sum += size(i);
            if sum > max {
                break;
            }
            first = i;
        }
        first
    };
    for end in 5..=60 {
        for max in [0, 10, 50, 200, 700, 1500, 2500, 5000, 10_000, 100_000] {
            assert_eq!(
                log.first_within(end, max),
                Some(by_hand(end, max)),
                "end {end}, max {max}"
            );
        }
    }
    assert_eq!(log.first_within(61, 1000), None);
    assert_eq!(log.first_within(4, 1000), None);
}

#[test]
fn entries_read_back_across_segments_and_after_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogFiles::open(dir.path(), 2000).expect("open");
    append(&mut log, 1, 40);
    append(&mut log, 41, 41);
    assert!(files(dir.path()).len() > 3, "several segments");
    for i in 1..=41 {
        assert_eq!(log.read(i).expect("read"), Some(payload(i)));
    }
    assert_eq!(log.read(42).expect("read"), None);
    assert_eq!(log.read(0).expect("read"), None);
    drop(log);
    let log = LogFiles::open(dir.path(), 2000).expect("reopen");
    assert_eq!(log.end(), Some(42));
    assert_eq!(log.count(), 41);
    for i in 1..=41 {
        assert_eq!(log.read(i).expect("read"), Some(payload(i)));
    }
}

#[test]
fn a_truncation_and_a_purge_leave_one_run_and_an_append_past_the_end_starts_anew() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogFiles::open(dir.path(), 2000).expect("open");
    append(&mut log, 5, 60);
    log.truncate_from(30).expect("truncate");
    assert_eq!(log.end(), Some(30));
    assert_eq!(log.read(30).expect("read"), None);
    append(&mut log, 30, 35);
    assert_eq!(log.read(30).expect("read"), Some(payload(30)));
    assert!(log.remove_below(20).expect("purge") > 0);
    // Nothing above the purge point went, and what is left is one run.
    assert_eq!(log.read(21).expect("read"), Some(payload(21)));
    drop(log);
    let mut log = LogFiles::open(dir.path(), 2000).expect("reopen");
    assert_eq!(log.end(), Some(36));
    assert!(log.read(5).expect("read").is_none());
    // Past the end (a snapshot was installed): the old entries go, the new ones stay.
    append(&mut log, 100, 102);
    assert_eq!(log.count(), 3);
    assert_eq!(log.read(101).expect("read"), Some(payload(101)));
    drop(log);
    let log = LogFiles::open(dir.path(), 2000).expect("reopen");
    assert_eq!((log.end(), log.count()), (Some(103), 3));
    // Truncating everything.
    let mut log = log;
    log.truncate_from(1).expect("truncate all");
    assert_eq!(log.end(), None);
    assert!(files(dir.path()).is_empty());
}

#[test]
fn an_append_over_entries_held_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogFiles::open(dir.path(), 1 << 20).expect("open");
    append(&mut log, 1, 3);
    let mut dirty = Vec::new();
    assert!(log.append(&[(2, b"again".to_vec())], &mut dirty).is_err());
}

#[test]
fn a_torn_tail_is_cut_off_and_damage_before_it_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogFiles::open(dir.path(), 1 << 20).expect("open");
    append(&mut log, 1, 10);
    drop(log);
    let path = files(dir.path()).pop().expect("a segment");
    let whole = fs::read(&path).expect("read");

    // Half a record at the end: cut, the ten kept.
    let mut torn = whole.clone();
    torn.extend_from_slice(&[0, 0, 1, 0, 9, 9]);
    fs::write(&path, &torn).expect("write");
    let log = LogFiles::open(dir.path(), 1 << 20).expect("open torn");
    assert_eq!(log.end(), Some(11));
    drop(log);
    assert_eq!(fs::read(&path).expect("read"), whole);

    // Zeros after the records (a crash after the file grew): cut.
    let mut zeros = whole.clone();
    zeros.extend_from_slice(&[0u8; 4096]);
    fs::write(&path, &zeros).expect("write");
    assert_eq!(
        LogFiles::open(dir.path(), 1 << 20).expect("zeros").end(),
        Some(11)
    );

    // The last record's last byte flipped: torn, cut; nine left.
    let mut last = whole.clone();
    let n = last.len() - 1;
    last[n] ^= 1;
    fs::write(&path, &last).expect("write");
    let log = LogFiles::open(dir.path(), 1 << 20).expect("open");
    assert_eq!(log.end(), Some(10));
    drop(log);

    // A record in the middle flipped: damage, refused.
    let mut mid = whole.clone();
    mid[HEAD as usize + 2] ^= 1;
    fs::write(&path, &mid).expect("write");
    let err = LogFiles::open(dir.path(), 1 << 20).err().expect("refused");
    assert!(err.to_string().contains("damaged"), "{err}");
    fs::write(&path, &whole).expect("write");

    // A gap between segments: refused.
    fs::write(dir.path().join(name_of(20)), b"").expect("write");
    let mut log = LogFiles::open(dir.path(), 1 << 20).expect("an empty last one is dropped");
    append(&mut log, 11, 11);
    drop(log);
    let mut other = LogFiles::open(&dir.path().join("x"), 1 << 20).expect("open");
    append(&mut other, 20, 21);
    drop(other);
    fs::rename(
        dir.path().join("x").join(name_of(20)),
        dir.path().join(name_of(20)),
    )
    .expect("move");
    let err = LogFiles::open(dir.path(), 1 << 20).err().expect("refused");
    assert!(err.to_string().contains("gap"), "{err}");
}

/// What a log of (index, payload) should hold: a model to check the files against.
#[derive(Debug, Clone)]
enum Op {
    Append(u8),
    Skip(u8),
    Truncate(u8),
    Purge(u8),
    Reopen,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (1u8..20).prop_map(Op::Append),
        1 => (1u8..30).prop_map(Op::Skip),
        2 => any::<u8>().prop_map(Op::Truncate),
        2 => any::<u8>().prop_map(Op::Purge),
        1 => Just(Op::Reopen),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Whatever appends, truncations, purges, appends past the end and reopenings
    /// come, the files hold exactly the model's entries from their first on, in one run.
    #[test]
    fn the_files_hold_what_was_appended_and_not_taken_away(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = LogFiles::open(dir.path(), 3000).expect("open");
        // The model: entries by index; those at or below `purged` may be gone.
        let mut model: std::collections::BTreeMap<u64, Vec<u8>> = Default::default();
        let mut purged = 0u64;
        for op in ops {
            let next = model.keys().next_back().map_or(purged + 1, |l| l + 1);
            match op {
                Op::Append(n) => {
                    append(&mut log, next, next + n as u64 - 1);
                    for i in next..next + n as u64 {
                        model.insert(i, payload(i));
                    }
                }
                Op::Skip(n) => {
                    // Past the end: every entry before is below a snapshot.
                    let at = next + n as u64;
                    append(&mut log, at, at);
                    model.clear();
                    model.insert(at, payload(at));
                    purged = at - 1;
                }
                Op::Truncate(k) => {
                    let first = model.keys().next().copied().unwrap_or(next);
                    let at = first + k as u64 % (next - first + 1);
                    log.truncate_from(at).expect("truncate");
                    model.retain(|i, _| *i < at);
                }
                Op::Purge(k) => {
                    let first = model.keys().next().copied().unwrap_or(next);
                    let upto = first + k as u64 % (next - first + 1);
                    log.remove_below(upto.saturating_sub(1)).expect("purge");
                    purged = purged.max(upto.saturating_sub(1));
                }
                Op::Reopen => {
                    drop(log);
                    log = LogFiles::open(dir.path(), 3000).expect("reopen");
                }
            }
            // Every entry above the purge point reads back; nothing past the end does.
            for (i, p) in model.range(purged + 1..) {
                proptest::prop_assert_eq!(log.read(*i).expect("read"), Some(p.clone()));
            }
            let end = model.keys().next_back().map(|l| l + 1);
            if model.keys().next_back().is_some_and(|l| *l > purged) {
                proptest::prop_assert_eq!(log.end(), end);
            }
            if let Some(e) = end {
                proptest::prop_assert_eq!(log.read(e).expect("read"), None);
            }
            // Below the purge point, what is still held is the model's.
            for i in model.keys().copied().filter(|i| *i <= purged) {
                if let Some(p) = log.read(i).expect("read") {
                    proptest::prop_assert_eq!(Some(&p), model.get(&i));
                }
            }
        }
    }
}
