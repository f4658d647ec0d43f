//! Cluster mode: the broker's part in snapshots of the data group (`cluster/snapshot.rs`).
//! A cut is taken between two commands, so it is one moment of the store
//! (`store/snapshot.rs`). An install replaces the store under the broker: it waits until
//! no flush of the old store is running, carries the install out, reopens the store and
//! loads the core from it again.
//!
//! Watches and queue consumers on this node end with a notice (`ended`) saying why: the
//! messages they were following were replaced by the snapshot's, and a watch that went on
//! would see seqs jump or repeat without a word. Their clients subscribe again (from the
//! seq they had, or `all`) and read the new store.

use std::collections::HashSet;
use std::path::PathBuf;

use mom_proto::{ClientFrame, ErrorCode, Notice, NoticeKind, ServerFrame};
use tokio::sync::oneshot;

use super::{now_ms, Broker, Cmd};
use crate::cluster::data::applied_key;
use crate::core::shards::Shard;
use crate::core::{Dedupe, Topics};
use crate::store::{self, snapshot::Cut};

/// What an install answers: the applied Raft state the new store holds.
pub type Installed = Result<Option<Vec<u8>>, String>;

/// An install under way on its own thread (`install_start`).
pub(super) struct Installing {
    /// The shard whose snapshot it is.
    shard: Shard,
    pub done: oneshot::Receiver<Result<store::snapshot::Installed, String>>,
    reply: oneshot::Sender<Installed>,
    started: std::time::Instant,
    /// Commands that need the store, run once the install is done, in order.
    deferred: Vec<Cmd>,
    /// Connections with a request among them.
    held: HashSet<u64>,
    /// Client ids taken from the store before the install, for the `hello`s meanwhile.
    ids: std::ops::Range<u64>,
    /// Their `client_connected` events, recorded once the store is back.
    events: Vec<String>,
}

/// Client ids set aside for the connections that come while an install runs (more wait
/// for it to be done).
const HELLOS_DURING_INSTALL: u64 = 1024;

/// Can this request be answered while the store is being replaced?
fn needs_no_store(frame: &ClientFrame, cluster: bool) -> bool {
    match frame {
        ClientFrame::Ping(_) | ClientFrame::ClusterStatus(_) => true,
        // A cluster's publish goes to the data group's leader; it reaches this node's
        // store when the group's entries are applied, after the install.
        ClientFrame::Publish(_) => cluster,
        _ => false,
    }
}

/// What the broker's end of a notice says.
const REPLACED: &str = "this node installed a snapshot of the cluster's data: the watch \
                        ended; subscribe again to read from the new state";

impl Broker {
    /// The cut of a snapshot of shard `shard`'s group into `dir`: of the whole store when
    /// it is the only one (see `Store::snapshot_cut`), else of that shard
    /// (`Store::shard_cut`).
    pub(super) fn snapshot_cut(&mut self, shard: Shard, dir: PathBuf) -> Result<Cut, String> {
        // What was applied reaches the store first.
        self.commit();
        let t0 = std::time::Instant::now();
        let applied = applied_key(shard);
        let res = if self.core.topics.shards().count() > 1 {
            let groups = super::watch_groups::table_key(shard);
            self.store.shard_cut(&dir, shard, &[&applied, &groups])
        } else {
            self.store.snapshot_cut(&dir, &applied)
        };
        let res = res.map_err(|e| format!("taking the snapshot's cut: {e}"));
        tracing::debug!("snapshot cut in {:.1?} on the broker task", t0.elapsed());
        res
    }

    /// An install waits for the flushes of the old store in progress.
    pub(super) fn install_wanted(&mut self, shard: Shard, reply: oneshot::Sender<Installed>) {
        if let Some((_, old)) = self.install_waiting.replace((shard, reply)) {
            let _ = old.send(Err("another install came first".into()));
        }
    }

    /// Whether an install waits or runs: then the loop neither commits nor flushes. It
    /// starts once no flush of the old store is running (none starts meanwhile).
    pub(super) fn install_pending(&mut self) -> bool {
        if self.installing.is_some() {
            return true;
        }
        if self.install_waiting.is_none() {
            return false;
        }
        if self.flush_rx.is_some() || self.index_flush_rx.is_some() {
            return true;
        }
        if let Some((shard, reply)) = self.install_waiting.take() {
            self.install_start(shard, reply);
        }
        true
    }

    /// What is staged goes to the old store and is answered as it would be; this node's
    /// watches, consumers and fetches end; then the store's files and index are replaced
    /// and the new store loaded on a thread of its own, while the broker goes on answering
    /// what needs no store (`Installing`).
    fn install_start(&mut self, shard: Shard, reply: oneshot::Sender<Installed>) {
        self.commit();
        let flushed = self.store.flush();
        self.flushing = std::mem::take(&mut self.pending);
        self.flushing_tickets = std::mem::take(&mut self.pending_tickets);
        self.flush_done(flushed);
        self.end_followers();
        let ids = self
            .store
            .reserve_client_ids(HELLOS_DURING_INSTALL)
            .unwrap_or(0..0);
        let job = self.store.install_job();
        let window = self.core.config.dedupe_window_ms;
        // Tests make an install last long enough to be seen (`MOMD_INSTALL_PAUSE_MS`).
        let pause = std::env::var("MOMD_INSTALL_PAUSE_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok());
        let (tx, done) = oneshot::channel();
        tracing::info!(
            "installing a snapshot of the data group on a thread of its own: until it is \
             done this node answers pings, cluster status and publishes, and puts off the rest"
        );
        tokio::task::spawn_blocking(move || {
            if let Some(ms) = pause {
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
            let _ = tx.send(job.run(now_ms(), window));
        });
        self.installing = Some(Installing {
            shard,
            done,
            reply,
            started: std::time::Instant::now(),
            deferred: Vec::new(),
            held: Default::default(),
            ids,
            events: Vec::new(),
        });
    }

    /// The install's thread is done: the new store and what it holds take the old ones'
    /// place, the install is answered, and the commands put off meanwhile run, in order.
    /// Returns the shutdown signal if one of them asks to stop.
    pub(super) fn install_done(
        &mut self,
        res: Result<store::snapshot::Installed, String>,
    ) -> Option<oneshot::Sender<bool>> {
        let inst = self.installing.take()?;
        let res = res.and_then(|(store, loaded, files, load)| {
            tracing::info!(
                "data group snapshot in the store: files and index in {files:.1?}, loaded in \
                 {load:.1?}, {} commands put off meanwhile",
                inst.deferred.len()
            );
            self.take_installed(inst.shard, store, loaded)
        });
        tracing::info!(
            ok = res.is_ok(),
            "data group snapshot installed in the store in {:.1?}",
            inst.started.elapsed()
        );
        let _ = inst.reply.send(res);
        if !inst.events.is_empty() {
            self.sys_events(inst.events);
        }
        let mut shutdown = None;
        for cmd in inst.deferred {
            if let Some(done) = self.handle(cmd) {
                shutdown = Some(done);
            }
        }
        shutdown
    }

    /// The installed store and what it holds replace the old.
    fn take_installed(
        &mut self,
        shard: Shard,
        store: crate::store::Store,
        loaded: store::Loaded,
    ) -> Installed {
        let mut dedupe = Dedupe::default();
        for (topic, id, seq, time) in loaded.dedupe {
            dedupe.insert(topic, id, seq, time);
        }
        let shards = self.core.topics.shards();
        let mut topics = Topics::from_stored_in(loaded.topics, loaded.next_topic_id, shards);
        for d in &loaded.damage {
            topics.note_damage(d.topic_id, d.first_seq, d.last_seq);
        }
        // The core keeps its counters (watch ids go on, never given twice).
        self.core.topics = topics;
        self.core.dedupe = dedupe;
        let mut set = crate::core::QueueSet::new(shards);
        let now = now_ms();
        set.load(loaded.queues, now);
        self.queues = set;
        self.store = store;
        self.load_watch_groups();
        self.dirty_queues.clear();
        self.to_trim.clear();
        self.rates.clear();
        self.queue_rates.clear();
        self.consumer_rr.clear();
        // Takes under way were for consumers and fetches that just ended; what this node's
        // consumers hold in the installed queues comes back (as at a restart).
        self.taking.clear();
        self.replica_taken.clear();
        if let Some(node) = self.cluster.as_ref().map(|c| c.node_id()) {
            self.propose_everywhere(crate::cluster::data::QueueOp::NodeStarted { node });
        }
        self.report_damage(&loaded.damage);
        self.store
            .meta(&applied_key(shard))
            .map_err(|e| format!("reading the installed store's applied state: {e}"))
    }

    /// A command that comes while an install runs: answered now if it needs no store (a
    /// ping, the cluster's status, a publish, which goes to the data group's leader; what
    /// the other nodes ask), else put off until the install is done. A connection whose
    /// request was put off has all its later ones put off too, so its requests keep their
    /// order.
    pub(super) fn handle_installing(&mut self, cmd: Cmd) {
        let Some(inst) = self.installing.as_mut() else {
            return;
        };
        let now_ok = match &cmd {
            Cmd::Hello { .. } => !inst.ids.is_empty(),
            Cmd::Request { session, frame, .. } => {
                !inst.held.contains(session) && needs_no_store(frame, self.cluster.is_some())
            }
            Cmd::Watchers { .. } | Cmd::QueueConsumers { .. } => true,
            _ => false,
        };
        if !now_ok {
            match &cmd {
                Cmd::Request { session, .. } | Cmd::Requests { session, .. } => {
                    inst.held.insert(*session);
                }
                _ => {}
            }
            inst.deferred.push(cmd);
            return;
        }
        match cmd {
            Cmd::Hello { info, hello, reply } => {
                let Some(next) = inst.ids.next() else {
                    return;
                };
                let res = self.welcome(info, hello, next).map(|(w, event)| {
                    if let Some(inst) = self.installing.as_mut() {
                        inst.events.push(event);
                    }
                    w
                });
                let _ = reply.send(res);
            }
            Cmd::Request {
                session,
                frame,
                ticket,
            } => {
                if let Err((code, msg)) = self.authorize(session, &frame) {
                    return self.error(session, frame.id(), code, msg);
                }
                match frame {
                    ClientFrame::Ping(r) => self.reply(
                        session,
                        ServerFrame::Pong(mom_proto::Pong {
                            id: r.id,
                            time: now_ms(),
                        }),
                    ),
                    ClientFrame::ClusterStatus(r) => self.cluster_status(session, r.id),
                    ClientFrame::Publish(p) => self.publish_request(session, p, ticket),
                    other => self.error(
                        session,
                        other.id(),
                        ErrorCode::Internal,
                        "not answered during an install",
                    ),
                }
            }
            other => {
                self.handle(other);
            }
        }
    }

    /// Ends every watch, queue consumer and waiting fetch of this node, saying why.
    fn end_followers(&mut self) {
        let watches: Vec<_> = self.watches.keys().copied().collect();
        for w in watches {
            if let Some(ws) = self.watches.get(&w) {
                ws.outbox.reply(
                    ServerFrame::Notice(Notice {
                        watch: w,
                        kind: NoticeKind::Ended,
                        skipped: 0,
                        message: REPLACED.into(),
                        consumer: None,
                    }),
                    false,
                );
            }
            self.drop_watch(w);
        }
        for s in self.sessions.values_mut() {
            s.watches.clear();
        }
        for (id, c) in std::mem::take(&mut self.consumers) {
            if let Some(s) = self.sessions.get(&c.session) {
                s.outbox.reply(
                    ServerFrame::Notice(Notice {
                        watch: 0,
                        kind: NoticeKind::Ended,
                        skipped: 0,
                        message: REPLACED.replace("the watch", "the consumer"),
                        consumer: Some(id),
                    }),
                    false,
                );
            }
        }
        for f in std::mem::take(&mut self.fetches) {
            self.error(
                f.session,
                f.id,
                ErrorCode::Unavailable,
                "this node installed a snapshot of the cluster's data: fetch again",
            );
        }
    }
}
