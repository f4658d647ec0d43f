//! Where the data groups' leaders start: spread over the nodes, so that the work of leading
//! (proposing, replicating, answering) is shared. The preferred leader of data group `s` is
//! the `s`-th member (by id, modulo their number); a member forms the groups it is preferred
//! for at once, and it is the one that forms a group that stands first (openraft has the
//! node that initializes a group campaign at once). The other groups it forms only
//! `FORM_WAIT` later, if nobody has.
//!
//! After a failover a group keeps its new leader: openraft 0.9 has no leadership transfer,
//! and a follower's campaign is refused while the leader's lease runs, so leaders are not
//! moved back.

use std::collections::BTreeMap;
use std::time::Duration;

use mom_raft::openraft::BasicNode;
use mom_raft::NodeId;

use crate::core::shards::Shard;

/// How long a first member waits before forming the data groups another member is the
/// preferred leader of.
pub(super) const FORM_WAIT: Duration = Duration::from_secs(2);

/// The preferred leader of data group `shard` among `members`.
pub(super) fn preferred(members: &BTreeMap<NodeId, BasicNode>, shard: Shard) -> Option<NodeId> {
    let n = members.len();
    if n == 0 {
        return None;
    }
    members.keys().nth(usize::from(shard) % n).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_member_is_preferred_for_its_share_of_the_groups() {
        let members: BTreeMap<NodeId, BasicNode> = [3, 1, 2]
            .into_iter()
            .map(|id| (id, BasicNode::default()))
            .collect();
        let got: Vec<Option<NodeId>> = (0..4).map(|s| preferred(&members, s)).collect();
        assert_eq!(got, [Some(1), Some(2), Some(3), Some(1)]);
        assert_eq!(preferred(&BTreeMap::new(), 0), None);
    }
}
