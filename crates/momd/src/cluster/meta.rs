//! The metadata group's state: what every node must agree on about the cluster. Applied by
//! every node in log order; deterministic (no clock, no randomness: what varies comes in
//! the command).
//!
//! It holds the members' client addresses and versions, which each node announces when it
//! starts (`NodeInfo`), so any node can tell clients where the others are; and the users,
//! token revocations and token signing key (`auth::replicated`), so a client authenticates
//! alike on every node. Each node's `Auth` is loaded from it as it changes (`AuthHook`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mom_raft::{App, Cmd, LogId, Reply};
use serde::{Deserialize, Serialize};

use super::{Cluster, WriteError};
use crate::auth::{self, AuthState, Change, Refusal};

/// What a node announces about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its client listener (`--listen`).
    pub addr: String,
    pub version: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetaState {
    pub nodes: BTreeMap<u64, NodeInfo>,
    /// Absent from the snapshots of versions before it: no users then.
    #[serde(default)]
    pub auth: AuthState,
    /// Not state: who is told when `auth` changes.
    #[serde(skip)]
    hook: Hook,
}

/// Told the users' state after each change to it (an applied `Auth` command, a restored
/// snapshot), with the user a command removed, if it did.
pub type AuthHook = Arc<dyn Fn(&AuthState, Option<&str>) + Send + Sync>;

#[derive(Clone, Default)]
struct Hook(Option<AuthHook>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Hook" } else { "NoHook" })
    }
}

/// A hook is not state: states that differ only by it are equal.
impl PartialEq for Hook {
    fn eq(&self, _: &Hook) -> bool {
        true
    }
}

impl MetaState {
    /// An empty state that tells `hook` about the users' changes.
    pub fn with_auth_hook(hook: AuthHook) -> MetaState {
        MetaState {
            hook: Hook(Some(hook)),
            ..MetaState::default()
        }
    }

    fn tell(&self, removed: Option<&str>) {
        if let Some(h) = &self.hook.0 {
            h(&self.auth, removed);
        }
    }
}

/// A change to the metadata, proposed to the group's leader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetaCmd {
    /// A node says where clients reach it.
    NodeInfo { node: u64, info: NodeInfo },
    /// A change to the users, tokens or token key.
    Auth(Change),
}

impl MetaCmd {
    pub fn encode(&self) -> Cmd {
        Cmd(rmp_serde::to_vec(self).unwrap_or_default().into())
    }
}

/// What applying a command answered: `Err` when the command was refused.
pub type MetaResult = Result<(), WriteError>;

fn reply(r: MetaResult) -> Reply {
    Reply(rmp_serde::to_vec(&r).unwrap_or_default().into())
}

pub fn decode_reply(r: &Reply) -> MetaResult {
    rmp_serde::from_slice(&r.0)
        .unwrap_or_else(|e| Err(WriteError::Refused(format!("unreadable reply: {e}"))))
}

/// A refusal of the users' state, as the proposer's client will get it.
fn refused((code, msg): Refusal) -> WriteError {
    match code {
        mom_proto::ErrorCode::NotFound => WriteError::NotFound(msg),
        _ => WriteError::Refused(msg),
    }
}

impl App for MetaState {
    fn apply(&mut self, _log_id: &LogId, cmd: &Cmd) -> Reply {
        let cmd: MetaCmd = match rmp_serde::from_slice(&cmd.0) {
            Ok(c) => c,
            // A command this version cannot read is refused the same way on every replica.
            Err(e) => {
                return reply(Err(WriteError::Refused(format!(
                    "unreadable metadata command: {e}"
                ))))
            }
        };
        match cmd {
            MetaCmd::NodeInfo { node, info } => {
                self.nodes.insert(node, info);
                reply(Ok(()))
            }
            MetaCmd::Auth(change) => {
                let removed = match &change {
                    Change::RemoveUser { name } => Some(name.clone()),
                    _ => None,
                };
                let r = self.auth.apply(change).map_err(refused);
                if r.is_ok() {
                    self.tell(removed.as_deref());
                }
                reply(r)
            }
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        rmp_serde::to_vec(self).unwrap_or_default()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let mut restored: MetaState =
            rmp_serde::from_slice(bytes).map_err(|e| format!("metadata snapshot: {e}"))?;
        restored.hook = std::mem::take(&mut self.hook);
        *self = restored;
        self.tell(None);
        Ok(())
    }
}

/// The hook that keeps this node's `Auth` loaded from the metadata group's users, and
/// closes the connections of a user removed.
pub fn auth_hook(auth: &Arc<auth::Auth>, broker: crate::broker::BrokerHandle) -> AuthHook {
    let auth = Arc::downgrade(auth);
    Arc::new(move |state: &AuthState, removed: Option<&str>| {
        if let Some(a) = auth.upgrade() {
            a.load_replicated(state);
        }
        if let (Some(user), Ok(rt)) = (removed, tokio::runtime::Handle::try_current()) {
            let (broker, user) = (broker.clone(), user.to_string());
            rt.spawn(async move { broker.send(crate::broker::Cmd::UserRemoved { user }).await });
        }
    })
}

/// A cluster node's user and token changes go to the metadata group.
impl auth::Replicator for Cluster {
    fn propose(&self, change: Change) -> auth::replicated::Proposal<'_> {
        Box::pin(async move {
            self.write_applied(MetaCmd::Auth(change))
                .await
                .map_err(|e| (e.code(), e.to_string()))
        })
    }
}

/// Until a `Sync` this node proposed after it started is applied here, its view of the
/// users may miss changes committed while it was down (or before it joined): `Auth` takes
/// no anonymous client until then.
pub(super) async fn catch_up(cluster: Cluster, auth: Arc<auth::Auth>) {
    loop {
        let proposal = cluster.write_applied(MetaCmd::Auth(Change::Sync));
        tokio::select! {
            _ = cluster.inner.stop.cancelled() => return,
            r = proposal => match r {
                Ok(()) => {
                    auth.set_caught_up();
                    tracing::debug!("this node's view of the users is current");
                    return;
                }
                Err(e) => tracing::debug!("catching up with the users: {e}"),
            },
        }
        tokio::select! {
            _ = cluster.inner.stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_info_applies_and_round_trips_through_a_snapshot() {
        let mut s = MetaState::default();
        let id = LogId::default();
        let info = NodeInfo {
            addr: "127.0.0.1:7801".into(),
            version: "0.1.0".into(),
        };
        let r = s.apply(
            &id,
            &MetaCmd::NodeInfo {
                node: 1,
                info: info.clone(),
            }
            .encode(),
        );
        assert!(decode_reply(&r).is_ok());
        let r = s.apply(&id, &Cmd(b"\xc1garbage".to_vec().into()));
        assert!(decode_reply(&r).is_err());
        let mut t = MetaState::default();
        t.restore(&s.snapshot()).expect("restore");
        assert_eq!(t, s);
        assert_eq!(t.nodes[&1], info);
        assert!(t.restore(b"\xc1").is_err());
    }

    fn user(name: &str, hash: &str) -> crate::auth::UserRecord {
        crate::auth::UserRecord {
            name: name.into(),
            hash: hash.into(),
            admin: name == "root",
            publish: vec![],
            subscribe: vec!["orders.>".into()],
            created: 7,
        }
    }

    fn auth(s: &mut MetaState, c: Change) -> MetaResult {
        decode_reply(&s.apply(&LogId::default(), &MetaCmd::Auth(c).encode()))
    }

    #[test]
    fn user_commands_apply_tell_the_hook_and_ride_in_the_snapshot() {
        use std::sync::Mutex;
        /// What the hook heard: the users, and the one removed.
        type Heard = Vec<(Vec<String>, Option<String>)>;
        let seen: Arc<Mutex<Heard>> = Arc::default();
        let hook: AuthHook = {
            let seen = seen.clone();
            Arc::new(move |st: &AuthState, removed: Option<&str>| {
                seen.lock().unwrap().push((
                    st.users.keys().cloned().collect(),
                    removed.map(str::to_string),
                ))
            })
        };
        let mut s = MetaState::with_auth_hook(hook.clone());
        assert!(auth(&mut s, Change::AddUser(user("root", "h1"))).is_ok());
        assert!(auth(&mut s, Change::AddUser(user("alice", "h2"))).is_ok());
        // Refusals keep their kind (the client's error code), and tell no one.
        assert!(matches!(
            auth(&mut s, Change::AddUser(user("alice", "h3"))),
            Err(WriteError::Refused(m)) if m.contains("exists")
        ));
        assert!(matches!(
            auth(&mut s, Change::RemoveUser { name: "bob".into() }),
            Err(WriteError::NotFound(_))
        ));
        assert!(auth(
            &mut s,
            Change::RemoveUser {
                name: "alice".into()
            }
        )
        .is_ok());
        let key = crate::auth::replicated::TokenKey(vec![9; crate::auth::replicated::KEY_LEN]);
        assert!(auth(&mut s, Change::TokenKey(key.clone())).is_ok());
        assert!(auth(
            &mut s,
            Change::RevokeToken {
                jti: "t1".into(),
                exp: 10,
                now: 1
            }
        )
        .is_ok());
        assert_eq!(
            seen.lock().unwrap()[..3],
            [
                (vec!["root".to_string()], None),
                (vec!["alice".to_string(), "root".to_string()], None),
                (vec!["root".to_string()], Some("alice".to_string())),
            ]
        );

        // A node that restores the snapshot has the same users, key and revocations, and
        // its hook hears of them.
        seen.lock().unwrap().clear();
        let mut t = MetaState::with_auth_hook(hook);
        t.restore(&s.snapshot()).expect("restore");
        assert_eq!(t, s);
        assert_eq!(t.auth.users["root"].hash, "h1");
        assert_eq!(t.auth.token_key, Some(key));
        assert_eq!(t.auth.revoked.get("t1"), Some(&10));
        assert_eq!(*seen.lock().unwrap(), [(vec!["root".to_string()], None)]);
        // The hook survives the restore.
        assert!(auth(&mut t, Change::Sync).is_ok());
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[test]
    fn a_snapshot_from_before_users_restores_with_none() {
        #[derive(Serialize)]
        struct Before {
            nodes: BTreeMap<u64, NodeInfo>,
        }
        let mut nodes = BTreeMap::new();
        nodes.insert(
            2,
            NodeInfo {
                addr: "127.0.0.1:7802".into(),
                version: "0.1.0".into(),
            },
        );
        let old = rmp_serde::to_vec(&Before {
            nodes: nodes.clone(),
        })
        .expect("encode");
        let mut s = MetaState::default();
        s.restore(&old).expect("restore");
        assert_eq!(s.nodes, nodes);
        assert_eq!(s.auth, AuthState::default());
    }
}
