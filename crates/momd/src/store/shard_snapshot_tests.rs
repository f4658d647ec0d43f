//! Snapshots of one shard (`shard_snapshot.rs`): taken from one store, installed in place of
//! that shard of another, the other shards untouched; the same install carried out twice
//! gives what it gave once (a crash in it is finished at the next start); a corrupt one
//! is refused.

use std::collections::BTreeMap;

use super::super::tests::{open_store, publish, read_all};
use super::*;
use crate::core::queues::{Exact, QueueDef, QueueRecord};
use crate::core::{Core, CoreConfig, Dedupe, Topics};

fn shards() -> Shards {
    Shards::new(3).unwrap()
}

/// A cluster node's store spread over three shards, loaded, with its queue records.
fn sharded(dir: &Path) -> (Store, Core, Vec<QueueRecord>) {
    let store = open_store(dir).into_replica().with_shards(shards());
    let loaded = store.load(1_000, 120_000).unwrap();
    let mut dedupe = Dedupe::default();
    for (t, id, seq, time) in loaded.dedupe {
        dedupe.insert(t, id, seq, time);
    }
    let topics = Topics::from_stored_in(loaded.topics, loaded.next_topic_id, shards());
    let core = Core::new(CoreConfig::default(), topics, dedupe);
    (store, core, loaded.queues)
}

/// A topic name the shards place in `shard`.
fn name_in(shard: Shard, tag: &str) -> String {
    (0..1000)
        .map(|i| format!("{tag}{i}"))
        .find(|n| shards().place(n, None) == shard)
        .expect("a name for every shard")
}

fn put_queue(store: &Store, core: &Core, name: &str, shard: Shard, topic: u32, cursor: u64) {
    let r = QueueRecord {
        def: QueueDef {
            name: name.into(),
            owner: "u".into(),
            created: 1,
            bindings: vec![">".into()],
            max_deliver: 5,
            ack_wait_ms: 1_000,
        },
        cursors: BTreeMap::from([(topic, cursor)]),
        outstanding: Vec::new(),
        counters: Default::default(),
        dlq_redriven: 0,
        exact: Some(Exact::default()),
        shard,
    };
    let mut staged = Staged::default();
    store.stage_queue(&mut staged, &r);
    store
        .apply(staged, |id| core.topics.by_id(id), core.topics.next_id())
        .unwrap();
}

fn set_meta(store: &Store, core: &Core, name: &str, v: &[u8]) {
    let mut staged = Staged::default();
    store.stage_meta(&mut staged, name, v.to_vec());
    store
        .apply(staged, |id| core.topics.by_id(id), core.topics.next_id())
        .unwrap();
}

fn queue_cursor(queues: &[QueueRecord], name: &str, shard: Shard) -> Option<BTreeMap<u32, u64>> {
    queues
        .iter()
        .find(|q| q.def.name == name && q.shard == shard)
        .map(|q| q.cursors.clone())
}

/// Source: shard 0 holds `a`, shard 1 holds `b` (300 messages with ids, over several
/// segment files); queue `q` has a part in both. Its snapshot of shard 1 goes to `out`.
/// Returns what shard 1's topic holds at the cut, and its name.
fn source(dir: &Path, out: &Path) -> (String, Vec<(u64, String)>) {
    let (store, mut core, _) = sharded(dir);
    let (a, b) = (name_in(0, "a"), name_in(1, "b"));
    publish(&mut core, &store, &a, &["a1", "a2"], false, 1_000);
    for i in 0..30 {
        let payloads: Vec<String> = (0..10).map(|j| format!("m{}", i * 10 + j)).collect();
        let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
        publish(&mut core, &store, &b, &refs, true, 1_000);
        if i % 10 == 9 {
            store.flush().unwrap();
            store.segs.seal().unwrap();
        }
    }
    let bid = core.topics.get(&b).unwrap().id;
    assert_eq!(shards().of(bid), 1);
    put_queue(&store, &core, "q", 1, bid, 17);
    put_queue(&store, &core, "q", 0, core.topics.get(&a).unwrap().id, 1);
    set_meta(&store, &core, "applied.1", b"A1");
    set_meta(&store, &core, "applied.0", b"A0");
    let cut = store
        .shard_cut(&dir.join("cut"), 1, &["applied.1", "gone.1"])
        .expect("cut");
    assert_eq!(cut.applied.as_deref(), Some(&b"A1"[..]));
    // Written after the cut: not in the snapshot.
    publish(&mut core, &store, &b, &["late"], false, 1_000);
    store.flush().unwrap();
    write_shard_snapshot(&cut, b"hdr", out).expect("write");
    let mut all = read_all(&store, &core, &b);
    all.pop();
    (b, all)
}

/// The destination: shard 0 holds `z`; shard 1 holds `c` and an older `b`; queue `q` has
/// parts in both, `r` one in shard 1; `applied.1` and `gone.1` are set.
fn destination(dir: &Path, b: &str) -> (String, String) {
    let (store, mut core, _) = sharded(dir);
    let (z, c) = (name_in(0, "z"), name_in(1, "c"));
    publish(&mut core, &store, &z, &["z1"], true, 1_000);
    publish(&mut core, &store, &c, &["c1", "c2"], false, 1_000);
    publish(&mut core, &store, b, &["old"], true, 1_000);
    let zid = core.topics.get(&z).unwrap().id;
    let cid = core.topics.get(&c).unwrap().id;
    put_queue(&store, &core, "q", 0, zid, 1);
    put_queue(&store, &core, "q", 1, cid, 2);
    put_queue(&store, &core, "r", 1, cid, 1);
    set_meta(&store, &core, "applied.1", b"B1");
    set_meta(&store, &core, "applied.0", b"B0");
    set_meta(&store, &core, "gone.1", b"stale");
    store.flush().unwrap();
    (z, c)
}

fn install(dir: &Path, snap: &Path) -> Store {
    let store = open_store(dir).into_replica().with_shards(shards());
    store.load(1_000, 120_000).unwrap();
    stage_install(
        &mut File::open(snap).unwrap(),
        dir,
        Some((shards(), 1)),
        |h| {
            assert_eq!(h, b"hdr");
            Ok(())
        },
    )
    .expect("a sound snapshot is staged");
    let job = store.install_job();
    let (reopened, _, _, _) = std::thread::spawn(move || job.run(1, 120_000))
        .join()
        .expect("the install thread")
        .expect("install");
    drop(store);
    reopened
}

use super::super::snapshot::stage_install;

#[test]
fn a_shard_snapshot_replaces_that_shard_alone() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let snap = src.path().join("s.snap");
    let (b, want) = source(src.path(), &snap);
    assert_eq!(want.len(), 300);
    let (z, c) = destination(dst.path(), &b);
    let store = install(dst.path(), &snap);
    drop(store);
    // Reopened from disk, as a restart would.
    let (store, mut core, queues) = sharded(dst.path());
    assert_eq!(
        read_all(&store, &core, &b),
        want,
        "shard 1 is the snapshot's"
    );
    assert!(
        core.topics.get(&c).is_none(),
        "shard 1's own topics are gone"
    );
    assert_eq!(read_all(&store, &core, &z).len(), 1, "shard 0 is untouched");
    let bid = core.topics.get(&b).unwrap().id;
    assert_eq!(
        queue_cursor(&queues, "q", 1),
        Some(BTreeMap::from([(bid, 17)]))
    );
    let zid = core.topics.get(&z).unwrap().id;
    assert_eq!(
        queue_cursor(&queues, "q", 0),
        Some(BTreeMap::from([(zid, 1)]))
    );
    assert_eq!(
        queue_cursor(&queues, "r", 1),
        None,
        "a part the snapshot lacks goes"
    );
    assert_eq!(
        store.meta("applied.1").unwrap().as_deref(),
        Some(&b"A1"[..])
    );
    assert_eq!(
        store.meta("applied.0").unwrap().as_deref(),
        Some(&b"B0"[..])
    );
    assert_eq!(store.meta("gone.1").unwrap(), None);
    // Dedupe entries came with it: a repeat gets its original seq; and shard 0's stayed.
    assert_eq!(
        publish(&mut core, &store, &b, &["m5"], true, 2_000),
        vec![6]
    );
    assert_eq!(
        publish(&mut core, &store, &z, &["z1"], true, 2_000),
        vec![1]
    );
    // It goes on from there, a new topic gets an id no other had, and all of it survives
    // a restart.
    assert_eq!(
        publish(&mut core, &store, &b, &["next"], false, 2_000),
        vec![301]
    );
    let fresh = name_in(1, "fresh");
    publish(&mut core, &store, &fresh, &["f"], false, 2_000);
    let fid = core.topics.get(&fresh).unwrap().id;
    assert_ne!(fid, bid);
    store.flush().unwrap();
    drop((store, core));
    let (store, core, _) = sharded(dst.path());
    assert_eq!(read_all(&store, &core, &b).len(), 301);
    assert_eq!(read_all(&store, &core, &fresh).len(), 1);
    assert_eq!(read_all(&store, &core, &z).len(), 1);
}

#[test]
fn installing_the_same_shard_snapshot_again_gives_the_same_store() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let snap = src.path().join("s.snap");
    let (b, want) = source(src.path(), &snap);
    destination(dst.path(), &b);
    drop(install(dst.path(), &snap));
    let dump = |dir: &Path| {
        let (store, core, mut queues) = sharded(dir);
        queues.sort_by(|x, y| (&x.def.name, x.shard).cmp(&(&y.def.name, y.shard)));
        let mut names: Vec<String> = core.topics.iter().map(|t| t.name.to_string()).collect();
        names.sort();
        let msgs = read_all(&store, &core, &b);
        (names, msgs, queues, store.meta("applied.1").unwrap())
    };
    let once = dump(dst.path());
    assert_eq!(once.1, want);
    // As if a crash had come after the batch and before the staging was removed: the
    // whole install runs again.
    drop(install(dst.path(), &snap));
    assert_eq!(dump(dst.path()), once);
}

#[test]
fn a_corrupt_shard_snapshot_is_refused_and_the_store_is_untouched() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let snap = src.path().join("s.snap");
    let (b, _) = source(src.path(), &snap);
    let (_, c) = destination(dst.path(), &b);
    let mut bytes = fs::read(&snap).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x40;
    fs::write(&snap, &bytes).unwrap();
    let store = open_store(dst.path()).into_replica().with_shards(shards());
    let err = stage_install(
        &mut File::open(&snap).unwrap(),
        dst.path(),
        Some((shards(), 1)),
        |_| Ok(()),
    )
    .expect_err("refused");
    assert!(err.to_string().contains("checksum"), "{err}");
    drop(store);
    let (store, core, _) = sharded(dst.path());
    assert_eq!(read_all(&store, &core, &c).len(), 2);
    assert_eq!(read_all(&store, &core, &b).len(), 1);
}
