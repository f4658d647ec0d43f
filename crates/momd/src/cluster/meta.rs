//! The metadata group's state: what every node must agree on about the cluster. Applied by
//! every node in log order; deterministic (no clock, no randomness: what varies comes in
//! the command).
//!
//! Today it holds the members' client addresses and versions, which each node announces
//! when it starts (`NodeInfo`), so any node can tell clients where the others are.

use std::collections::BTreeMap;

use mom_raft::{App, Cmd, LogId, Reply};
use serde::{Deserialize, Serialize};

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
}

/// A change to the metadata, proposed to the group's leader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetaCmd {
    /// A node says where clients reach it.
    NodeInfo { node: u64, info: NodeInfo },
}

impl MetaCmd {
    pub fn encode(&self) -> Cmd {
        Cmd(rmp_serde::to_vec(self).unwrap_or_default().into())
    }
}

/// What applying a command answered: `Err` when the command was refused.
pub type MetaResult = Result<(), String>;

fn reply(r: MetaResult) -> Reply {
    Reply(rmp_serde::to_vec(&r).unwrap_or_default().into())
}

pub fn decode_reply(r: &Reply) -> MetaResult {
    rmp_serde::from_slice(&r.0).unwrap_or_else(|e| Err(format!("unreadable reply: {e}")))
}

impl App for MetaState {
    fn apply(&mut self, _log_id: &LogId, cmd: &Cmd) -> Reply {
        let cmd: MetaCmd = match rmp_serde::from_slice(&cmd.0) {
            Ok(c) => c,
            // A command this version cannot read is refused the same way on every replica.
            Err(e) => return reply(Err(format!("unreadable metadata command: {e}"))),
        };
        match cmd {
            MetaCmd::NodeInfo { node, info } => {
                self.nodes.insert(node, info);
                reply(Ok(()))
            }
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        rmp_serde::to_vec(self).unwrap_or_default()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        *self = rmp_serde::from_slice(bytes).map_err(|e| format!("metadata snapshot: {e}"))?;
        Ok(())
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
        assert_eq!(decode_reply(&r), Ok(()));
        let r = s.apply(&id, &Cmd(b"\xc1garbage".to_vec().into()));
        assert!(decode_reply(&r).is_err());
        let mut t = MetaState::default();
        t.restore(&s.snapshot()).expect("restore");
        assert_eq!(t, s);
        assert_eq!(t.nodes[&1], info);
        assert!(t.restore(b"\xc1").is_err());
    }
}
