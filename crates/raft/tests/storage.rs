//! What survives a restart of the log database, and snapshots that fail their checksum.

use std::time::Duration;

use mom_raft::log_store::LogDb;
use mom_raft::state_machine::StateMachine;
use mom_raft::{App, Cmd, LogId, Reply};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, RaftSnapshotBuilder, Vote};

#[derive(Default)]
struct Sum(u64);

impl App for Sum {
    fn apply(&mut self, _log_id: &LogId, cmd: &Cmd) -> Reply {
        self.0 += cmd.0.len() as u64;
        Reply::default()
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.to_be_bytes().to_vec()
    }
    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let b: [u8; 8] = bytes.try_into().map_err(|_| "bad sum".to_string())?;
        self.0 = u64::from_be_bytes(b);
        Ok(())
    }
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64, data: &str) -> Entry<mom_raft::TypeConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Cmd(data.as_bytes().to_vec().into())),
    }
}

/// Opens the database again once the previous handles are gone (sled locks its files).
async fn reopen(dir: &std::path::Path) -> LogDb {
    for _ in 0..100 {
        if let Ok(db) = LogDb::open(dir) {
            return db;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("could not reopen the log database");
}

/// The state database itself, once the log database's handles are gone.
async fn open_raw(dir: &std::path::Path) -> sled::Db {
    match sled::open(dir) {
        Ok(db) => db,
        Err(_) => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            sled::open(dir).expect("open raw")
        }
    }
}

#[tokio::test]
async fn vote_log_and_snapshot_survive_a_restart_and_groups_stay_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = LogDb::open(dir.path()).expect("open");
        let mut g1 = db.group(1).expect("group");
        let mut g2 = db.group(2).expect("group");
        g1.save_vote(&Vote::new(3, 1)).await.expect("vote");
        let mut sm = StateMachine::open(&db, 1, Sum::default()).expect("sm");
        sm.apply([entry(3, 1, "abc"), entry(3, 2, "de")])
            .await
            .expect("apply");
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("snapshot");
        assert_eq!(g2.read_vote().await.expect("read"), None);
    }
    let db = reopen(dir.path()).await;
    let mut g1 = db.group(1).expect("group");
    assert_eq!(g1.read_vote().await.expect("read"), Some(Vote::new(3, 1)));
    let mut sm = StateMachine::open(&db, 1, Sum::default()).expect("restored");
    assert_eq!(sm.with_app(|s| s.0), 5);
    let (applied, _) = sm.applied_state().await.expect("applied");
    assert_eq!(applied, Some(log_id(3, 2)));
    // Another group of the same database has nothing of group 1's.
    let sm2 = StateMachine::open(&db, 2, Sum::default()).expect("empty");
    assert_eq!(sm2.with_app(|s| s.0), 0);
}

#[tokio::test]
async fn a_corrupt_snapshot_is_refused_received_or_stored() {
    let dir_a = tempfile::tempdir().expect("tempdir");
    let dir_b = tempfile::tempdir().expect("tempdir");
    let db_a = LogDb::open(dir_a.path()).expect("open");
    let db_b = LogDb::open(dir_b.path()).expect("open");
    let mut a = StateMachine::open(&db_a, 0, Sum::default()).expect("sm");
    let mut b = StateMachine::open(&db_b, 0, Sum::default()).expect("sm");
    a.apply([entry(1, 1, "hello")]).await.expect("apply");
    let snap = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("snapshot");

    // Received with one bit flipped: refused, and the follower keeps what it had.
    let mut file = snap.snapshot;
    let mut bytes = mom_raft::read_snapshot_file(&mut file).await.expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let err = b
        .install_snapshot(
            &snap.meta,
            Box::new(mom_raft::snapshot_file(&bytes).await.expect("file")),
        )
        .await
        .expect_err("a corrupt snapshot is refused");
    assert!(err.to_string().contains("corrupt"), "{err}");
    assert_eq!(b.with_app(|s| s.0), 0);
    assert_eq!(b.applied_state().await.expect("state").0, None);
    drop((a, b, db_a, db_b));

    // Stored and then damaged on disk: the node refuses to start on it.
    {
        let raw = open_raw(dir_a.path()).await;
        let tree = raw.open_tree("raft_state").expect("tree");
        let mut key = 0u64.to_be_bytes().to_vec();
        key.push(4);
        let mut v = tree
            .get(&key)
            .expect("get")
            .expect("stored snapshot")
            .to_vec();
        let last = v.len() - 1;
        v[last] ^= 0x40;
        tree.insert(&key, v).expect("insert");
        raw.flush().expect("flush");
    }
    let db = reopen(dir_a.path()).await;
    let err = StateMachine::open(&db, 0, Sum::default())
        .err()
        .expect("a node does not start on a corrupt snapshot");
    assert!(err.contains("corrupt"), "{err}");
}

#[tokio::test]
async fn entries_kept_in_the_old_sled_tree_move_to_the_log_files() {
    use mom_raft::pieces::{self, Tag};
    use openraft::RaftLogReader;
    let dir = tempfile::tempdir().expect("tempdir");
    let big = "b".repeat(10_000);
    // The old layout: `raft_log` keys group ‖ index, values in pieces when over 4 KiB.
    {
        let raw = sled::open(dir.path()).expect("open raw");
        let log = raw.open_tree("raft_log").expect("tree");
        let more_tree = raw.open_tree("pieces").expect("tree");
        for (group, index, data) in [(1u64, 4u64, "a"), (1, 5, big.as_str()), (2, 9, "c")] {
            let mut key = group.to_be_bytes().to_vec();
            key.extend_from_slice(&index.to_be_bytes());
            let bytes = rmp_serde::to_vec(&entry(1, index, data)).expect("encode");
            let mut more = sled::Batch::default();
            let head = pieces::split(Tag::LOG, &key, bytes, 0, &mut more).expect("split");
            more_tree.apply_batch(more).expect("pieces");
            log.insert(key, head).expect("insert");
        }
        raw.flush().expect("flush");
    }
    for round in 0..2 {
        let db = reopen(dir.path()).await;
        let read = |g: u64| {
            let db = db.clone();
            async move {
                let mut reader = db.group(g).expect("group").get_log_reader().await;
                reader.try_get_log_entries(0..).await.expect("read")
            }
        };
        let one = read(1).await;
        let ids: Vec<u64> = one.iter().map(|e| e.log_id.index).collect();
        assert_eq!(ids, vec![4, 5], "round {round}");
        assert!(
            matches!(&one[1].payload, EntryPayload::Normal(c) if c.0.len() == big.len()),
            "round {round}"
        );
        assert_eq!(read(2).await.len(), 1, "round {round}");
        assert_eq!(db.stored_entries(1), 2);
    }
    // The old tree is empty now, its pieces gone.
    let raw = open_raw(dir.path()).await;
    assert!(raw.open_tree("raft_log").expect("tree").is_empty());
    assert!(raw.open_tree("pieces").expect("tree").is_empty());
}
