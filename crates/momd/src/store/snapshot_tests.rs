//! Snapshots of a replica's store (`snapshot.rs`): taken from one store and installed in
//! another, refused when corrupt, and finished at start when an install was interrupted.

use super::super::tests::{open, open_store, publish, read_all};
use super::*;
use crate::core::Core;

const APPLIED: &str = "raft_data_applied";

fn set_applied(store: &Store, core: &Core, v: &[u8]) {
    let mut staged = Staged::default();
    store.stage_meta(&mut staged, APPLIED, v.to_vec());
    store
        .apply(staged, |id| core.topics.by_id(id), core.topics.next_id())
        .unwrap();
}

/// A store with topic `t` holding 300 messages over many records and segment files
/// too small to hold them all, and its snapshot in `out`.
fn source(dir: &Path, out: &Path) -> Vec<(u64, String)> {
    let (store, mut core) = open(dir);
    for i in 0..30 {
        let payloads: Vec<String> = (0..10).map(|j| format!("m{}", i * 10 + j)).collect();
        let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
        publish(&mut core, &store, "t", &refs, true, 1_000);
        if i % 10 == 9 {
            store.flush().unwrap();
            store.segs.seal().unwrap();
        }
    }
    set_applied(&store, &core, b"applied-at-300");
    let cut = store.snapshot_cut(&dir.join("cut"), APPLIED).expect("cut");
    assert_eq!(cut.applied.as_deref(), Some(&b"applied-at-300"[..]));
    assert!(cut.files.len() >= 3, "{:?}", cut.files);
    // Written after the cut: not in the snapshot.
    publish(&mut core, &store, "t", &["late"], false, 1_000);
    store.flush().unwrap();
    write_snapshot(&cut, b"header", out).expect("write");
    let mut all = read_all(&store, &core, "t");
    all.pop();
    all
}

fn load(store: &Store) -> (Core, String) {
    super::super::tests::loaded_core(store)
}

#[test]
fn a_snapshot_replaces_another_store_and_keeps_its_own_identity_and_users() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let snap = src.path().join("s.snap");
    let want = source(src.path(), &snap);
    assert_eq!(want.len(), 300);

    let store = open_store(dst.path()).into_replica();
    let (mut core, server_id) = load(&store);
    publish(&mut core, &store, "other", &["x", "y"], false, 1_000);
    store.flush().unwrap();
    store
        .db()
        .open_tree("users")
        .unwrap()
        .insert("alice", "hash")
        .unwrap();

    let mut f = File::open(&snap).unwrap();
    let header = stage_install(&mut f, dst.path(), None, |h| {
        assert_eq!(h, b"header");
        Ok(())
    })
    .expect("a sound snapshot is staged");
    assert_eq!(header, b"header");
    // Carried out on another thread, as the broker does.
    let job = store.install_job();
    let (reopened, loaded, _, _) = std::thread::spawn(move || job.run(1, 120_000))
        .join()
        .expect("the install thread")
        .expect("install");
    assert!(loaded.topics.iter().any(|t| &*t.name == "t"));
    drop(store);
    let store = reopened;
    let (core, id_after) = load(&store);
    assert_eq!(id_after, server_id, "the node keeps its own server id");
    assert!(core.topics.get("other").is_none());
    assert_eq!(read_all(&store, &core, "t"), want);
    assert_eq!(
        store.meta(APPLIED).unwrap().as_deref(),
        Some(&b"applied-at-300"[..])
    );
    let users = store.db().open_tree("users").unwrap();
    assert!(users.get("alice").unwrap().is_some(), "users are kept");
    // Dedupe entries came with it: a repeat gets its original seq.
    let mut core = core;
    assert_eq!(
        publish(&mut core, &store, "t", &["m5"], true, 2_000),
        vec![6]
    );
    // And it goes on from there, and survives a restart.
    let seqs = publish(&mut core, &store, "t", &["next"], false, 2_000);
    assert_eq!(seqs, vec![301]);
    store.flush().unwrap();
    drop((store, core, users));
    let (store, core) = open(dst.path());
    assert_eq!(read_all(&store, &core, "t").len(), 301);
}

#[test]
fn a_corrupt_snapshot_is_refused_and_the_store_is_untouched() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let snap = src.path().join("s.snap");
    source(src.path(), &snap);
    let (store, mut core) = open(dst.path());
    publish(&mut core, &store, "mine", &["a", "b"], false, 1_000);
    store.flush().unwrap();

    let good = fs::read(&snap).unwrap();
    let flip = |at: usize| {
        let mut b = good.clone();
        b[at] ^= 0x10;
        let p = src.path().join(format!("bad-{at}.snap"));
        fs::write(&p, b).unwrap();
        p
    };
    for at in [3, 9, 40, good.len() / 2, good.len() - 1] {
        let mut f = File::open(flip(at)).unwrap();
        let err = stage_install(&mut f, dst.path(), None, |_| Ok(())).expect_err("refused");
        assert!(
            err.to_string().contains("corrupt") || err.to_string().contains("magic"),
            "{at}: {err}"
        );
    }
    // Cut short.
    let p = src.path().join("short.snap");
    fs::write(&p, &good[..good.len() - 100]).unwrap();
    let err = stage_install(&mut File::open(&p).unwrap(), dst.path(), None, |_| Ok(()))
        .expect_err("refused");
    assert!(err.to_string().contains("cut short"), "{err}");
    // A header the caller refuses.
    let err = stage_install(&mut File::open(&snap).unwrap(), dst.path(), None, |_| {
        Err(io::Error::other("not the one asked for"))
    })
    .expect_err("refused");
    assert!(err.to_string().contains("asked"), "{err}");

    assert!(!store.finish_install().expect("nothing to install"));
    assert_eq!(read_all(&store, &core, "mine").len(), 2);
    drop((store, core));
    let (store, core) = open(dst.path());
    assert_eq!(read_all(&store, &core, "mine").len(), 2);
    assert!(core.topics.get("t").is_none());
}

#[test]
fn an_install_interrupted_after_it_was_decided_is_finished_at_start() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let snap = src.path().join("s.snap");
    let want = source(src.path(), &snap);
    {
        let (store, mut core) = open(dst.path());
        publish(&mut core, &store, "mine", &["a"], false, 1_000);
        store.flush().unwrap();
        stage_install(
            &mut File::open(&snap).unwrap(),
            dst.path(),
            None,
            |_| Ok(()),
        )
        .unwrap();
        // Stopped here, and again after the log directories were swapped.
        let inst = install_dir(dst.path());
        fs::rename(dst.path().join(segments::DIR), dst.path().join("log.old")).unwrap();
        fs::rename(inst.join(segments::DIR), dst.path().join(segments::DIR)).unwrap();
    }
    let mut tries = 0;
    let done = loop {
        match resume_install(dst.path()) {
            Ok(d) => break d,
            Err(_) if tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("resume: {e}"),
        }
    };
    assert!(done);
    assert!(!dst.path().join("log.old").exists());
    let (store, core) = open(dst.path());
    assert_eq!(read_all(&store, &core, "t"), want);
    assert!(core.topics.get("mine").is_none());
}
