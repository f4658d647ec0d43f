//! Three nodes in one process, over real TCP on 127.0.0.1: election, replication, failover
//! and the identity handshake.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mom_raft::log_store::LogDb;
use mom_raft::net::{self, Groups, Identity, Peers};
use mom_raft::state_machine::StateMachine;
use mom_raft::{App, Cmd, LogId, Raft, Reply};
use openraft::{BasicNode, Config, ServerState};

/// The applied commands, in order.
#[derive(Default)]
struct Lines(Vec<String>);

impl App for Lines {
    fn apply(&mut self, _log_id: &LogId, cmd: &Cmd) -> Reply {
        self.0.push(String::from_utf8_lossy(&cmd.0).into_owned());
        Reply((self.0.len() as u64).to_be_bytes().to_vec().into())
    }
    fn snapshot(&self) -> Vec<u8> {
        rmp_serde::to_vec(&self.0).unwrap_or_default()
    }
    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.0 = rmp_serde::from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(())
    }
}

struct Node {
    raft: Raft,
    db: LogDb,
    sm: StateMachine<Lines>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

/// Bytes of a log segment file in these tests.
const SEGMENT: u64 = 1 << 20;

fn config() -> Arc<Config> {
    let c = Config {
        cluster_name: "test".into(),
        heartbeat_interval: 50,
        election_timeout_min: 300,
        election_timeout_max: 600,
        ..Default::default()
    };
    Arc::new(c.validate().expect("config"))
}

async fn start(id: u64, listener: tokio::net::TcpListener) -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    // Small log segments, so that a test's log spans several and a purge deletes some.
    let db = LogDb::open_with(dir.path(), SEGMENT).expect("open");
    let sm = StateMachine::open(&db, 0, Lines::default()).expect("sm");
    let me = Identity {
        cluster: "test".into(),
        node: id,
        incarnation: 100 + id,
        secret: None,
        tls: None,
        groups: 1,
    };
    let peers = Peers::new(me.clone(), db.peer_check());
    let raft = Raft::new(
        id,
        config(),
        peers.group(0),
        db.group(0).expect("group"),
        sm.clone(),
    )
    .await
    .expect("raft");
    let groups = Groups::default();
    groups.insert(0, raft.clone());
    let server = tokio::spawn(net::serve(
        listener,
        me,
        groups,
        None,
        db.peer_check(),
        peers.contacts(),
    ));
    Node {
        raft,
        db,
        sm,
        server,
        _dir: dir,
    }
}

async fn leader_of(nodes: &BTreeMap<u64, Node>) -> u64 {
    for _ in 0..100 {
        for (id, n) in nodes {
            if n.raft.metrics().borrow().state == ServerState::Leader {
                return *id;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader in 5 s");
}

/// Writes through whichever node leads, as a client would: a leader that steps down
/// answers "forward to leader", and the write goes to the new one.
async fn write(nodes: &BTreeMap<u64, Node>, line: &str) -> u64 {
    for _ in 0..50 {
        let leader = leader_of(nodes).await;
        match nodes[&leader]
            .raft
            .client_write(Cmd(line.as_bytes().to_vec().into()))
            .await
        {
            Ok(r) => {
                assert_eq!(r.data.0.len(), 8);
                return leader;
            }
            Err(e) if e.forward_to_leader().is_some() => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("write {line}: {e}"),
        }
    }
    panic!("write {line}: no leader took it");
}

async fn wait_lines(n: &Node, want: &[&str]) {
    for _ in 0..100 {
        if n.sm.with_app(|a| a.0 == want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let have = n.sm.with_app(|a| a.0.clone());
    panic!("wanted {want:?}, have {have:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_replicate_and_fail_over() {
    let mut listeners = Vec::new();
    let mut members = BTreeMap::new();
    for id in 1..=3u64 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        members.insert(
            id,
            BasicNode {
                addr: l.local_addr().expect("addr").to_string(),
            },
        );
        listeners.push((id, l));
    }
    let mut nodes = BTreeMap::new();
    for (id, l) in listeners {
        nodes.insert(id, start(id, l).await);
    }
    // Every node is initialized with the same members; all but the first call are refused
    // or harmless.
    for n in nodes.values() {
        let _ = n.raft.initialize(members.clone()).await;
    }
    write(&nodes, "a").await;
    let leader = write(&nodes, "b").await;
    for n in nodes.values() {
        wait_lines(n, &["a", "b"]).await;
    }

    // A follower refuses a write and names the leader.
    let follower = *nodes.keys().find(|id| **id != leader).expect("follower");
    let err = nodes[&follower]
        .raft
        .client_write(Cmd("x".as_bytes().to_vec().into()))
        .await
        .expect_err("a follower does not take writes");
    assert!(err.to_string().contains("forward") || err.forward_to_leader().is_some());

    // The leader goes away; the two others elect one of them and keep going.
    let old = nodes.remove(&leader).expect("leader");
    old.raft.shutdown().await.expect("shutdown");
    old.server.abort();
    drop(old);
    let leader2 = write(&nodes, "c").await;
    assert_ne!(leader2, leader);
    for n in nodes.values() {
        wait_lines(n, &["a", "b", "c"]).await;
    }
    for n in nodes.values() {
        n.raft.shutdown().await.expect("shutdown");
        n.server.abort();
    }
}

fn ident(cluster: &str, node: u64, incarnation: u64) -> Identity {
    Identity {
        cluster: cluster.into(),
        node,
        incarnation,
        secret: None,
        tls: None,
        groups: 1,
    }
}

fn with_secret(mut id: Identity, secret: &[u8]) -> Identity {
    id.secret = Some(Arc::new(
        net::Secret::new(secret).expect("a long enough secret"),
    ));
    id
}

/// A node that serves only the handshake (no group, no application), with a log database
/// of its own for its peer checks: its address, and its directory to keep.
async fn handshakes_only(me: Identity) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = LogDb::open(dir.path()).expect("open");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    tokio::spawn(net::serve(
        l,
        me,
        Groups::default(),
        None,
        db.peer_check(),
        Default::default(),
    ));
    (addr, dir)
}

#[tokio::test]
async fn with_a_cluster_secret_only_peers_holding_it_get_through() {
    const SECRET: &[u8] = b"correct horse battery staple";
    let (addr, _dir) = handshakes_only(with_secret(ident("blue", 1, 11), SECRET)).await;
    let ttl = Duration::from_secs(2);
    let trusting: mom_raft::net::PeerCheck = Arc::new(|_, _| Ok(()));
    let call = |id: Identity| {
        let peers = Peers::new(id, trusting.clone());
        let addr = addr.clone();
        async move { peers.call_app(1, &addr, 0, Default::default(), ttl).await }
    };

    // Without the secret, with another one, or claiming to be another node with a wrong
    // one: refused, and what they claimed is not remembered (node 2 below is let in with
    // its own incarnation).
    let err = call(ident("blue", 2, 99)).await.expect_err("no secret");
    assert!(
        err.to_string().contains("requires the cluster secret"),
        "{err}"
    );
    let err = call(with_secret(
        ident("blue", 2, 98),
        b"another secret, as long",
    ))
    .await
    .expect_err("another secret");
    assert!(
        err.to_string()
            .contains("does not hold this cluster's secret"),
        "{err}"
    );

    // The secret gets through (and an answer: no application handler here).
    let r = call(with_secret(ident("blue", 2, 22), SECRET))
        .await
        .expect("reached");
    assert!(r.is_err());

    // A listener without a secret is refused by a dialer that has one, and the other way.
    let (addr2, _dir2) = handshakes_only(ident("blue", 3, 33)).await;
    let err = Peers::new(with_secret(ident("blue", 2, 22), SECRET), trusting.clone())
        .call_app(3, &addr2, 0, Default::default(), ttl)
        .await
        .expect_err("a peer without the secret");
    assert!(err.to_string().contains("has no cluster secret"), "{err}");
}

#[tokio::test]
async fn a_node_refuses_peers_of_another_cluster_another_node_or_a_wiped_one() {
    let (addr, _dir) = handshakes_only(ident("blue", 1, 11)).await;
    let ttl = Duration::from_secs(2);
    let trusting: mom_raft::net::PeerCheck = Arc::new(|_, _| Ok(()));
    let peers = |id: Identity| Peers::new(id, trusting.clone());

    let err = peers(ident("green", 2, 22))
        .call_app(1, &addr, 0, Default::default(), ttl)
        .await
        .expect_err("another cluster is refused");
    assert!(err.to_string().contains("not of cluster"), "{err}");

    let err = peers(ident("blue", 2, 22))
        .call_app(3, &addr, 0, Default::default(), ttl)
        .await
        .expect_err("a connection meant for node 3 is refused by node 1");
    assert!(err.to_string().contains("not node 3"), "{err}");

    // Another number of data groups: its topics would be placed in other groups.
    let mut other_groups = ident("blue", 2, 22);
    other_groups.groups = 3;
    let err = peers(other_groups)
        .call_app(1, &addr, 0, Default::default(), ttl)
        .await
        .expect_err("a node with another number of data groups is refused");
    assert!(
        err.to_string()
            .contains("over 1 data groups, node 2 over 3"),
        "{err}"
    );

    // The right identity gets through (and an answer: no application handler here).
    let r = peers(ident("blue", 2, 22))
        .call_app(1, &addr, 0, Default::default(), ttl)
        .await
        .expect("reached");
    assert!(r.is_err());

    // Node 2 again with a new data dir (another incarnation): refused.
    let err = peers(ident("blue", 2, 23))
        .call_app(1, &addr, 0, Default::default(), ttl)
        .await
        .expect_err("a wiped node 2 is refused");
    assert!(err.to_string().contains("another data dir"), "{err}");

    // And the other way: node 2 dials node 1, which answers with an incarnation node 2
    // did not know it by.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let db2 = LogDb::open(dir2.path()).expect("open");
    let check2 = db2.peer_check();
    check2(1, 10).expect("first sight of node 1");
    let err = Peers::new(ident("blue", 2, 22), check2)
        .call_app(1, &addr, 0, Default::default(), ttl)
        .await
        .expect_err("node 1 with another data dir is refused by the dialer");
    assert!(err.to_string().contains("another data dir"), "{err}");
}

/// One node, a group of its own.
async fn single() -> Node {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let n = start(1, l).await;
    n.raft
        .initialize(BTreeMap::from([(1, BasicNode { addr })]))
        .await
        .expect("initialize");
    n
}

/// Files sled wrote beside its main one (blobs: values too large for a segment), which its
/// flush never fsyncs.
fn blobs(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(dir.join("blobs")) {
        Ok(rd) => rd.map(|e| e.expect("entry").path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_entries_and_snapshots_read_back_whole_and_a_snapshot_is_stored_in_pieces_sled_fsyncs(
) {
    use openraft::storage::RaftLogStorage;
    use openraft::{RaftLogReader, RaftSnapshotBuilder};
    let n = single().await;
    let mut nodes = BTreeMap::new();
    let big: String = (0..700_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let huge = "z".repeat(3 << 20);
    let path = n._dir.path().to_path_buf();
    nodes.insert(1, n);
    write(&nodes, "small").await;
    write(&nodes, &big).await;
    write(&nodes, &huge).await;
    let n = nodes.remove(&1).expect("node");
    wait_lines(&n, &["small", &big, &huge]).await;
    // The state machine's snapshot (over 3 MB) is stored in the same database.
    n.sm.clone().build_snapshot().await.expect("snapshot");
    assert_eq!(blobs(&path), Vec::<std::path::PathBuf>::new());
    n.raft.shutdown().await.expect("shutdown");
    n.server.abort();
    let Node {
        sm, raft, db, _dir, ..
    } = n;
    drop((sm, raft, db));
    // Reopened, the log and the snapshot read back whole.
    let db = {
        let mut tries = 0;
        loop {
            match LogDb::open_with(&path, SEGMENT) {
                Ok(db) => break db,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("reopen: {e}"),
            }
        }
    };
    let mut log = db.group(0).expect("group");
    let entries = log
        .get_log_reader()
        .await
        .try_get_log_entries(0..)
        .await
        .expect("entries");
    let cmds: Vec<usize> = entries
        .iter()
        .filter_map(|e| match &e.payload {
            openraft::EntryPayload::Normal(c) => Some(c.0.len()),
            _ => None,
        })
        .collect();
    assert_eq!(cmds, vec![5, big.len(), huge.len()]);
    let sm = StateMachine::open(&db, 0, Lines::default()).expect("restored");
    assert_eq!(sm.with_app(|a| a.0.len()), 3);
    assert!(sm.with_app(|a| a.0[2] == huge));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_hides_its_entries_at_once_and_deletes_them_after() {
    use openraft::storage::RaftLogStorage;
    use openraft::RaftLogReader;
    let n = single().await;
    let db = n.db.clone();
    let mut nodes = BTreeMap::new();
    nodes.insert(1, n);
    // Entries of 20 KB, as a data group's batches are.
    let line = "p".repeat(20_000);
    for _ in 0..300 {
        write(&nodes, &line).await;
    }
    let raft = &nodes[&1].raft;
    raft.trigger().snapshot().await.expect("snapshot");
    raft.wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.snapshot.is_some_and(|s| s.index >= 300), "snapshot")
        .await
        .expect("a snapshot");
    raft.trigger().purge_log(290).await.expect("purge");
    raft.wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.purged.is_some_and(|p| p.index >= 290), "purged")
        .await
        .expect("purged");
    // Gone for every reader as soon as the purge returned, whatever is still on disk.
    let mut store = db.group(0).expect("group");
    let state = store.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(290));
    assert!(state.last_log_id.is_some_and(|l| l.index > 300));
    let below = store.try_get_log_entries(0..=290).await.expect("read");
    assert!(below.is_empty(), "{} purged entries read back", below.len());
    let above = store.try_get_log_entries(291..).await.expect("read");
    assert!(above.first().is_some_and(|e| e.log_id.index == 291));
    // And deleted from disk soon after: what is left is the log past 290 and the rest of
    // the segment file holding 290 (about 50 entries of 20 KB in 1 MiB).
    let per_segment = (SEGMENT / 20_000) as usize + 1;
    let mut left = usize::MAX;
    for _ in 0..200 {
        left = db.stored_entries(0);
        if left < above.len() + per_segment {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        (above.len()..above.len() + per_segment).contains(&left),
        "{left} entries stored, {} past the purge point",
        above.len()
    );
    for n in nodes.values() {
        n.raft.shutdown().await.expect("shutdown");
        n.server.abort();
    }
}
