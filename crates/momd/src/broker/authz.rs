//! What each user may do (issue "Users, tokens, permissions, ownership"): every request is
//! checked here, before the broker acts on it. An admin may do everything; a user publishes
//! to its publish patterns, watches and consumes within its subscribe patterns, and deletes,
//! purges, rebinds or changes only the topics and queues it created. `$sys.…` is for admins.

use mom_proto::{ClientFrame, ErrorCode};

use super::Broker;
use crate::auth::{Identity, Refusal};

fn forbidden(msg: String) -> Refusal {
    (ErrorCode::Forbidden, msg)
}

impl Broker {
    /// May the session's user send `frame`? Err: the refusal it gets instead.
    pub(super) fn authorize(&self, session: u64, frame: &ClientFrame) -> Result<(), Refusal> {
        let Some(s) = self.sessions.get(&session) else {
            return Ok(());
        };
        let who = &s.identity;
        if who.admin {
            return Ok(());
        }
        let user = &who.user;
        match frame {
            ClientFrame::Publish(p) => {
                if !self.auth.may_publish(who, &p.topic) {
                    return Err(forbidden(format!(
                        "user {user:?} may not publish to {:?}",
                        p.topic
                    )));
                }
            }
            ClientFrame::Watch(w) => self.may_subscribe_all(who, &w.patterns)?,
            ClientFrame::ClusterJoin(_) | ClientFrame::ClusterLeave(_) => {
                return Err(forbidden(format!(
                    "user {user:?} may not change the cluster's members: admins only"
                )));
            }
            ClientFrame::TopicRm(r) | ClientFrame::TopicPurge(r) => {
                self.owns_topic(who, &r.topic)?;
            }
            ClientFrame::TopicCreate(t) if !self.auth.may_publish(who, &t.topic) => {
                return Err(forbidden(format!(
                    "user {user:?} may not create topic {:?}: it is outside its publish \
                     patterns",
                    t.topic
                )));
            }
            ClientFrame::TopicSet(t) => {
                if self.core.topics.get(&t.topic).is_some() {
                    self.owns_topic(who, &t.topic)?;
                } else if !self.auth.may_publish(who, &t.topic) {
                    return Err(forbidden(format!(
                        "user {user:?} may not create topic {:?}: it is outside its publish \
                         patterns",
                        t.topic
                    )));
                }
            }
            ClientFrame::QueueCreate(c) => {
                // On an existing queue, queue_create adds bindings: the owner's to do.
                self.owns_queue(who, &c.queue)?;
                self.may_subscribe_all(who, &c.bindings)?;
            }
            ClientFrame::QueueBind(b) => {
                self.owns_queue(who, &b.queue)?;
                self.may_subscribe_all(who, &b.patterns)?;
            }
            ClientFrame::QueueUnbind(b) => self.owns_queue(who, &b.queue)?,
            ClientFrame::QueueDelete(q) => self.owns_queue(who, &q.queue)?,
            ClientFrame::QueuePurge(q) => self.owns_queue(who, &q.queue)?,
            ClientFrame::QueueSet(q) => self.owns_queue(who, &q.queue)?,
            ClientFrame::QueueRedrive(q) => self.owns_queue(who, &q.queue)?,
            ClientFrame::Consume(c) => self.may_consume(who, &c.queue)?,
            ClientFrame::Fetch(f) => self.may_consume(who, &f.queue)?,
            ClientFrame::QueuePeek(p) => self.may_consume(who, &p.queue)?,
            ClientFrame::ClientClose(c) => {
                let target = self
                    .sessions
                    .values()
                    .find(|s| s.client.client_id == c.client_id);
                if target.is_some_and(|t| t.identity.user != *user) {
                    return Err(forbidden(format!(
                        "client {} is another user's; only an admin may close it",
                        c.client_id
                    )));
                }
            }
            // Acks, nacks, extends and cancels act on what this connection was given; reads
            // of the broker's state are open to every user.
            ClientFrame::Hello(_)
            | ClientFrame::TopicCreate(_)
            | ClientFrame::Unwatch(_)
            | ClientFrame::TopicList(_)
            | ClientFrame::TopicInfo(_)
            | ClientFrame::Stats(_)
            | ClientFrame::ClusterStatus(_)
            | ClientFrame::Ping(_)
            | ClientFrame::QueueInfo(_)
            | ClientFrame::QueueList(_)
            | ClientFrame::Cancel(_)
            | ClientFrame::Ack(_)
            | ClientFrame::Nack(_)
            | ClientFrame::Extend(_)
            | ClientFrame::TokenCreate(_)
            | ClientFrame::TokenRevoke(_)
            | ClientFrame::UserAdd(_)
            | ClientFrame::UserRm(_)
            | ClientFrame::UserInfo(_)
            | ClientFrame::UserList(_)
            | ClientFrame::UserPasswd(_)
            | ClientFrame::UserGrant(_)
            | ClientFrame::UserRevoke(_) => {}
        }
        Ok(())
    }

    fn may_subscribe_all(&self, who: &Identity, patterns: &[String]) -> Result<(), Refusal> {
        match patterns.iter().find(|p| !self.auth.may_subscribe(who, p)) {
            Some(p) => Err(forbidden(format!(
                "user {:?} may not subscribe to {p:?}",
                who.user
            ))),
            None => Ok(()),
        }
    }

    fn owns_topic(&self, who: &Identity, name: &str) -> Result<(), Refusal> {
        match self.core.topics.get(name) {
            Some(t) if *t.owner != *who.user => Err(forbidden(format!(
                "topic {name:?} belongs to {}; only its owner or an admin may change it",
                owner_name(&t.owner)
            ))),
            // Missing: the broker answers not_found.
            _ => Ok(()),
        }
    }

    fn owns_queue(&self, who: &Identity, name: &str) -> Result<(), Refusal> {
        match self.queues.get(name) {
            Some(q) if q.def.owner != who.user => Err(forbidden(format!(
                "queue {name:?} belongs to {}; only its owner or an admin may change it",
                owner_name(&q.def.owner)
            ))),
            _ => Ok(()),
        }
    }

    /// A queue is read by its owner, or by a user who may subscribe to all its bindings.
    fn may_consume(&self, who: &Identity, name: &str) -> Result<(), Refusal> {
        let Some(q) = self.queues.get(name) else {
            return Ok(());
        };
        if q.def.owner == who.user {
            return Ok(());
        }
        self.may_subscribe_all(who, &q.def.bindings)
    }
}

fn owner_name(owner: &str) -> String {
    if owner.is_empty() {
        "no one (made before owners were recorded)".into()
    } else {
        format!("{owner:?}")
    }
}
