//! What the broker does with each command of a connection: the hello, the end of a
//! session, and every request, checked against the user's rights (`authz`) first.

use mom_proto::{ClientFrame, ErrorCode, Req, Sender, ServerFrame};
use tokio::sync::oneshot;

use super::{json_str, now_ms, Broker, Cmd, INBOX_PREFIX};
use crate::admission::Ticket;

/// The answer to a queue request while topics spread over several data groups
/// (`--data-groups`): a queue's state is not yet spread with them.
pub(super) const SPREAD_QUEUES: &str = "queues are not yet available on a cluster whose topics \
                                        spread over several data groups";

impl Broker {
    /// Handle one command; returns the shutdown signal when asked to stop.
    pub(super) fn handle(&mut self, cmd: Cmd) -> Option<oneshot::Sender<bool>> {
        match cmd {
            Cmd::Hello { info, hello, reply } => {
                let _ = reply.send(self.hello(info, hello));
            }
            Cmd::Request {
                session,
                frame,
                ticket,
            } => self.request(session, frame, ticket),
            Cmd::Requests { session, requests } => {
                for (frame, ticket) in requests {
                    self.request(session, frame, ticket);
                }
            }
            Cmd::Disconnect { session } => self.disconnect(session),
            Cmd::AuthFailed { addr, user, reason } => self.sys_event(format!(
                r#"{{"event":"auth_failed","addr":{},"user":{},"reason":{}}}"#,
                json_str(&addr),
                json_str(&user),
                json_str(&reason)
            )),
            Cmd::UserRemoved { user } => self.close_user_sessions(&user),
            Cmd::ReplayDone { watch, lost } => self.replay_done(watch, lost),
            Cmd::Reconfigure { cfg, core } => {
                self.cfg = super::BrokerConfig {
                    fsync: self.cfg.fsync,
                    max_frame: self.cfg.max_frame,
                    ..cfg
                };
                self.core.set_config(core);
            }
            Cmd::Checkpoint { reply } => {
                // Everything applied reaches the store first; then no command runs until
                // the checkpoint is taken, so index and segment files are one moment.
                self.commit();
                let t0 = std::time::Instant::now();
                let res = self.store.checkpoint().map_err(|e| format!("{e:#}"));
                tracing::info!(
                    ok = res.is_ok(),
                    "backup checkpoint in {:.1?}",
                    t0.elapsed()
                );
                let _ = reply.send(res);
            }
            Cmd::Apply {
                shard,
                entries,
                finish,
                reply,
            } => {
                let _ = reply.send(self.apply_replicated(shard, entries, finish));
            }
            Cmd::SnapshotCut { shard, dir, reply } => {
                let _ = reply.send(self.snapshot_cut(shard, dir));
            }
            Cmd::InstallSnapshot { shard, reply } => self.install_wanted(shard, reply),
            Cmd::SetCluster { cluster } => {
                let node = cluster.node_id();
                self.cluster = Some(cluster);
                self.load_watch_groups();
                // What consumers of this node's earlier process held comes back, and its
                // earlier members leave every group's table of watch groups.
                self.propose_everywhere(crate::cluster::data::QueueOp::NodeStarted { node });
            }
            Cmd::FanOutDone { session } => {
                self.fan_outs.remove(&session);
            }
            Cmd::InDoubt { doubt, result } => self.in_doubt_done(doubt, result),
            Cmd::TakeFailed { key } => {
                self.taking.remove(&key);
            }
            Cmd::QueueConsumers { queues, reply } => {
                let mut counts: std::collections::HashMap<&str, u64> = Default::default();
                for c in self.consumers.values() {
                    *counts.entry(c.queue.as_str()).or_default() += 1;
                }
                let n = queues
                    .iter()
                    .map(|q| counts.get(q.as_str()).copied().unwrap_or(0))
                    .collect();
                let _ = reply.send(n);
            }
            Cmd::Watchers { topic, reply } => {
                let _ = reply.send(self.core.watches.active(&topic));
            }
            Cmd::Metrics { reply } => {
                let _ = reply.send(self.render_metrics());
            }
            Cmd::Shutdown { done } => return Some(done),
        }
        None
    }

    /// A client's publish: sequenced here, or in a cluster handed to the data group.
    pub(super) fn publish_request(&mut self, session: u64, p: mom_proto::Publish, ticket: Ticket) {
        let sender = match self.sessions.get(&session) {
            Some(s) => Sender {
                user: s.client.user.clone(),
                client: s.client.client_id,
                name: s.client.name.clone(),
            },
            None => return,
        };
        if let Some(s) = self.sessions.get(&session) {
            s.outbox
                .counters
                .msgs_in
                .fetch_add(p.msgs.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(c) = self.cluster.clone() {
            return self.cluster_publish(&c, session, p, sender, ticket);
        }
        let req = (session, p.id, p.no_ack);
        // Replies go to the requester's reply inbox, a reserved topic anyone may publish to.
        let inbox = p.topic.starts_with(INBOX_PREFIX);
        match self.publish(req, &p.topic, p.msgs, sender, now_ms(), inbox) {
            Ok(_) => self.staged_tickets.push(ticket),
            Err((code, msg)) => self.error(session, p.id, code, msg),
        }
    }

    fn request(&mut self, session: u64, frame: ClientFrame, ticket: Ticket) {
        // A session closed by `client_close` may still have requests on their way.
        if !self.sessions.contains_key(&session) {
            return;
        }
        let now = now_ms();
        if let Err((code, msg)) = self.authorize(session, &frame) {
            return self.error(session, frame.id(), code, msg);
        }
        if !matches!(frame, ClientFrame::Publish(_)) {
            // Keep the store in the order the broker applied things.
            self.commit();
        }
        match frame {
            ClientFrame::Publish(p) => self.publish_request(session, p, ticket),
            ClientFrame::Watch(w) => self.watch(session, w),
            ClientFrame::Unwatch(u) => {
                let owned = self
                    .sessions
                    .get_mut(&session)
                    .map(|s| {
                        let before = s.watches.len();
                        s.watches.retain(|x| *x != u.watch);
                        before != s.watches.len()
                    })
                    .unwrap_or(false);
                if owned {
                    self.drop_watch(u.watch);
                    self.reply(session, ServerFrame::Ok(Req { id: u.id }));
                } else {
                    self.error(
                        session,
                        u.id,
                        ErrorCode::NotFound,
                        format!("no watch {} on this connection", u.watch),
                    );
                }
            }
            f @ (ClientFrame::TopicList(_)
            | ClientFrame::TopicInfo(_)
            | ClientFrame::TopicRm(_)
            | ClientFrame::TopicPurge(_)
            | ClientFrame::TopicSet(_)
            | ClientFrame::TopicCreate(_)) => match (&self.cluster, f) {
                (Some(_), ClientFrame::TopicCreate(c)) => {
                    // The members this node knows now decide; the others apply it as is.
                    match self.check_replicas(c.replicas) {
                        Ok(()) => self.cluster_change_request(session, ClientFrame::TopicCreate(c)),
                        Err(msg) => self.error(session, c.id, ErrorCode::BadRequest, msg),
                    }
                }
                (
                    Some(_),
                    f @ (ClientFrame::TopicRm(_)
                    | ClientFrame::TopicPurge(_)
                    | ClientFrame::TopicSet(_)),
                ) => self.cluster_change_request(session, f),
                (_, f) => self.topic_request(session, f, now, None),
            },
            ClientFrame::Stats(r) => self.stats_request(session, r, now),
            ClientFrame::ClusterStatus(r) => self.cluster_status(session, r.id),
            f @ (ClientFrame::ClusterJoin(_) | ClientFrame::ClusterLeave(_)) => {
                self.cluster_change(session, f)
            }
            ClientFrame::Ping(r) => self.reply(
                session,
                ServerFrame::Pong(mom_proto::Pong {
                    id: r.id,
                    time: now,
                }),
            ),
            f @ (ClientFrame::QueueCreate(_)
            | ClientFrame::QueueBind(_)
            | ClientFrame::QueueUnbind(_)
            | ClientFrame::QueueDelete(_)
            | ClientFrame::QueuePurge(_)
            | ClientFrame::QueueInfo(_)
            | ClientFrame::QueueList(_)
            | ClientFrame::Consume(_)
            | ClientFrame::Cancel(_)
            | ClientFrame::Ack(_)
            | ClientFrame::Nack(_)
            | ClientFrame::Extend(_)
            | ClientFrame::Fetch(_)
            | ClientFrame::QueueSet(_)
            | ClientFrame::QueuePeek(_)
            | ClientFrame::QueueRedrive(_)) => {
                let spread = self.core.topics.shards().count() > 1;
                if spread && !matches!(f, ClientFrame::QueueList(_)) {
                    self.error(session, f.id(), ErrorCode::Unavailable, SPREAD_QUEUES)
                } else if self.cluster.is_some() {
                    self.cluster_queue_request(session, f)
                } else {
                    self.queue_request(session, f, now, None)
                }
            }
            ClientFrame::ClientClose(c) => self.client_close(session, c),
            ClientFrame::Hello(h) => self.error(
                session,
                h.id,
                ErrorCode::BadRequest,
                "hello was already sent on this connection",
            ),
            // Users and tokens are handled by the connection's task (`session/auth.rs`):
            // checking a password is slow, and the broker's task must not wait for it.
            f @ (ClientFrame::TokenCreate(_)
            | ClientFrame::TokenRevoke(_)
            | ClientFrame::UserAdd(_)
            | ClientFrame::UserRm(_)
            | ClientFrame::UserInfo(_)
            | ClientFrame::UserList(_)
            | ClientFrame::UserPasswd(_)
            | ClientFrame::UserGrant(_)
            | ClientFrame::UserRevoke(_)) => {
                self.error(session, f.id(), ErrorCode::Internal, "not a broker request")
            }
        }
    }
}
