//! Which cluster and node a data dir belongs to (`DATA/cluster.json`), written at a node's
//! first start, before anything else, and checked at every start after:
//!
//! - a data dir of another cluster or node id is refused (two nodes on one data dir, or a
//!   copy of one, would vote twice and diverge);
//! - a cluster node's data dir is refused by a single-node start, and a single node's data
//!   dir (one that holds anything already) by a cluster start;
//! - the number of data groups (`core/shards.rs`) is the one it was made with: a topic's
//!   group is worked out from it, so it never changes;
//! - the incarnation, a random number made with the file, goes into every peer handshake:
//!   peers refuse a node id that comes back with a new one, i.e. a wiped data dir
//!   (`mom_raft::net`).

use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

const FILE: &str = "cluster.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub cluster_id: String,
    pub node_id: u64,
    /// Hex, 16 digits.
    pub incarnation: String,
    /// How many data groups the node's topics spread over (1 in files written before).
    #[serde(default = "one")]
    pub data_groups: u16,
}

fn one() -> u16 {
    1
}

impl NodeIdentity {
    pub fn incarnation(&self) -> u64 {
        u64::from_str_radix(&self.incarnation, 16).unwrap_or(0)
    }
}

/// A random 64-bit number, from the hasher keys std seeds from the OS per process (mixed
/// with the time and the pid).
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// Reads the data dir's identity, if it has one.
pub fn read(data: &Path) -> anyhow::Result<Option<NodeIdentity>> {
    let path = data.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{} is damaged", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// At a single-node start: refuse a cluster node's data dir.
pub fn check_single(data: &Path) -> anyhow::Result<()> {
    if let Some(id) = read(data)? {
        bail!(
            "data dir {} belongs to node {} of cluster {:?}: start it in cluster mode \
             (--cluster-id {} --node-id {} --peer-listen ADDR --peers LIST), or give a \
             single node another --data",
            data.display(),
            id.node_id,
            id.cluster_id,
            id.cluster_id,
            id.node_id
        );
    }
    Ok(())
}

/// At a cluster start: the data dir's identity, made on first start. `data_groups`: the
/// number asked for (None: the data dir's, or 1 for a new one).
pub fn check_cluster(
    data: &Path,
    cluster_id: &str,
    node_id: u64,
    data_groups: Option<u16>,
) -> anyhow::Result<NodeIdentity> {
    if let Some(id) = read(data)? {
        if let Some(asked) = data_groups.filter(|n| *n != id.data_groups) {
            bail!(
                "data dir {} was made with {} data groups, not {asked}: a topic's group is \
                 worked out from their number, which never changes (leave --data-groups out, \
                 or give {})",
                data.display(),
                id.data_groups,
                id.data_groups
            );
        }
        if id.cluster_id != cluster_id || id.node_id != node_id {
            bail!(
                "data dir {} belongs to node {} of cluster {:?}, not node {node_id} of cluster \
                 {cluster_id:?}: start it as node {} of {:?}, or give node {node_id} its own data \
                 dir (a node whose data dir was lost rejoins under a new id: momctl cluster join)",
                data.display(),
                id.node_id,
                id.cluster_id,
                id.node_id,
                id.cluster_id
            );
        }
        return Ok(id);
    }
    // Anything but the lock file means a single node's data (or a damaged dir).
    let used = std::fs::read_dir(data)
        .with_context(|| format!("reading data dir {}", data.display()))?
        .filter_map(Result::ok)
        .any(|e| e.file_name() != "momd.lock");
    if used {
        bail!(
            "data dir {} holds a single node's data: a cluster node starts on a new, empty \
             data dir (move the messages over with momctl, e.g. subscribe --from all | publish)",
            data.display()
        );
    }
    let id = NodeIdentity {
        cluster_id: cluster_id.to_string(),
        node_id,
        incarnation: format!("{:016x}", random_u64()),
        data_groups: data_groups.unwrap_or(1),
    };
    let tmp = data.join(format!("{FILE}.tmp"));
    let mut bytes = serde_json::to_vec_pretty(&id)?;
    bytes.push(b'\n');
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, data.join(FILE))?;
    std::fs::File::open(data)?.sync_all()?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_keeps_its_cluster_and_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("momd.lock"), b"1").expect("lock");
        let id = check_cluster(dir.path(), "demo", 2, None).expect("first start");
        assert_eq!(id.incarnation.len(), 16);
        assert_eq!(id.data_groups, 1, "one data group unless asked");
        assert_eq!(
            check_cluster(dir.path(), "demo", 2, Some(1)).expect("again"),
            id
        );
        assert_eq!(
            check_cluster(dir.path(), "demo", 2, None).expect("again"),
            id
        );
        let e = check_cluster(dir.path(), "demo", 2, Some(3))
            .unwrap_err()
            .to_string();
        assert!(e.contains("made with 1 data groups"), "{e}");
        let e = check_cluster(dir.path(), "demo", 3, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("belongs to node 2"), "{e}");
        let e = check_cluster(dir.path(), "other", 2, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cluster \"demo\""), "{e}");
        let e = check_single(dir.path()).unwrap_err().to_string();
        assert!(e.contains("cluster mode"), "{e}");

        let single = tempfile::tempdir().expect("tempdir");
        std::fs::write(single.path().join("FORMAT"), b"3").expect("data");
        check_single(single.path()).expect("a single node's dir");
        let e = check_cluster(single.path(), "demo", 1, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("single node's data"), "{e}");

        let other = tempfile::tempdir().expect("tempdir");
        let id2 = check_cluster(other.path(), "demo", 2, Some(3)).expect("another dir");
        assert_ne!(
            id2.incarnation, id.incarnation,
            "a new data dir, a new incarnation"
        );
        // Its number kept: a start without it has it, one with another is refused.
        assert_eq!(
            check_cluster(other.path(), "demo", 2, None)
                .unwrap()
                .data_groups,
            3
        );
        assert!(check_cluster(other.path(), "demo", 2, Some(2)).is_err());
    }
}
