//! Which batches of the data group are applied, and in what order: the table every node
//! keeps, in its applied state, of the batches each sender (a node's process) had applied.
//!
//! A node's batcher has up to `IN_FLIGHT` batches on their way to the leader at once
//! (`batcher.rs`). Each batch carries its origin (node, process, number: 1, 2, … in that
//! process) and `after`, the number of the batch that must be applied before it (the one
//! before, or an earlier one when those in between were given up). The state machine
//! applies a batch only in that order, and a batch sent again only once:
//!
//! - a number at or below the sender's last applied batch is a copy: it gets the first
//!   copy's results if they are among the last `WINDOW` (a batch whose answer was lost,
//!   committed again), or is refused as older;
//! - a batch whose `after` is not applied yet is refused as out of order (it reached the
//!   leader before the one it follows, over another connection or after a leader change),
//!   and its batcher sends it again once the one before is settled.
//!
//! So a connection's publishes are stored in the order it sent them, however the batches
//! carrying them travel, and a retry never stores twice. Every node judges the same
//! entries the same way: the table is part of what each applies, and of its snapshots.

use std::collections::VecDeque;

use mom_raft::NodeId;
use serde::{Deserialize, Serialize};

use super::data::{Origin, PubResult};

/// Most batches a node's batcher has on their way at once.
pub const IN_FLIGHT: usize = 2;
/// The results kept per sender, to answer a copy of any batch that may still be on its way.
const WINDOW: usize = IN_FLIGHT + 2;
/// Processes of one node remembered (a restarted node's batches still in an old leader's
/// log may be committed after its new process's first ones).
const PROCESSES_PER_NODE: usize = 4;

/// One sender's applied batches.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct SenderState {
    node: NodeId,
    process: u64,
    /// Its last applied batch.
    last: u64,
    /// The results of its last applied batches, oldest first (at most `WINDOW`), as
    /// MessagePack: the table is stored with every entry applied, and read back only for a
    /// copy of a batch, so it is kept as it is written.
    recent: VecDeque<(u64, bytes::Bytes)>,
}

/// The table of senders, least recently applied first.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Origins {
    senders: Vec<SenderState>,
}

/// What to do with a batch.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Apply,
    /// A copy of a batch applied before: its results.
    Repeat(Vec<PubResult>),
    /// A copy of a batch applied too long ago to answer.
    Older,
    /// The batch it follows is not applied yet.
    OutOfOrder,
}

impl Origins {
    fn find(&self, o: &Origin) -> Option<&SenderState> {
        self.senders
            .iter()
            .find(|s| s.node == o.node && s.process == o.process)
    }

    /// Whether batch `o`, to be applied after batch `after` of its sender, is applied now.
    /// `after` is `None` in entries of versions that sent one batch at a time.
    pub fn judge(&self, o: &Origin, after: Option<u64>) -> Verdict {
        let sender = self.find(o);
        let last = sender.map_or(0, |s| s.last);
        if o.batch <= last {
            return sender
                .and_then(|s| s.recent.iter().find(|(b, _)| *b == o.batch))
                .and_then(|(_, r)| rmp_serde::from_slice(r).ok())
                .map_or(Verdict::Older, Verdict::Repeat);
        }
        match after {
            Some(a) if last < a => Verdict::OutOfOrder,
            _ => Verdict::Apply,
        }
    }

    /// Batch `o` was applied, with `results`.
    pub fn record(&mut self, o: &Origin, results: &[PubResult]) {
        let at = self
            .senders
            .iter()
            .position(|s| s.node == o.node && s.process == o.process);
        let mut s = match at {
            Some(i) => self.senders.remove(i),
            None => {
                let same_node = self.senders.iter().filter(|s| s.node == o.node).count();
                if same_node >= PROCESSES_PER_NODE {
                    if let Some(i) = self.senders.iter().position(|s| s.node == o.node) {
                        self.senders.remove(i);
                    }
                }
                SenderState {
                    node: o.node,
                    process: o.process,
                    last: 0,
                    recent: VecDeque::new(),
                }
            }
        };
        s.last = s.last.max(o.batch);
        let encoded = rmp_serde::to_vec(results).unwrap_or_default();
        s.recent.push_back((o.batch, encoded.into()));
        while s.recent.len() > WINDOW {
            s.recent.pop_front();
        }
        self.senders.push(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::data::Published;
    use proptest::prelude::*;

    fn origin(node: NodeId, process: u64, batch: u64) -> Origin {
        Origin {
            node,
            process,
            batch,
        }
    }

    fn results(batch: u64) -> Vec<PubResult> {
        vec![Ok(Published {
            seqs: vec![batch],
            ..Published::default()
        })]
    }

    #[test]
    fn batches_apply_in_order_once_and_copies_get_their_first_answer() {
        let mut t = Origins::default();
        let a = |b| origin(1, 7, b);
        assert_eq!(t.judge(&a(1), Some(0)), Verdict::Apply);
        // Batch 2 reached the leader first: it waits for batch 1.
        assert_eq!(t.judge(&a(2), Some(1)), Verdict::OutOfOrder);
        t.record(&a(1), &results(1));
        assert_eq!(t.judge(&a(2), Some(1)), Verdict::Apply);
        t.record(&a(2), &results(2));
        // Batch 1 committed again after batch 2: its own answer, not applied again.
        assert_eq!(t.judge(&a(1), Some(0)), Verdict::Repeat(results(1)));
        assert_eq!(t.judge(&a(2), Some(1)), Verdict::Repeat(results(2)));
        // Batch 3 given up; batch 4 follows batch 2.
        assert_eq!(t.judge(&a(4), Some(2)), Verdict::Apply);
        t.record(&a(4), &results(4));
        // Batch 3 committed late: after 4, never applied.
        assert_eq!(t.judge(&a(3), Some(2)), Verdict::Older);
        for b in 5..20 {
            t.record(&a(b), &results(b));
        }
        assert_eq!(t.judge(&a(1), Some(0)), Verdict::Older);
        assert_eq!(t.judge(&a(19), Some(18)), Verdict::Repeat(results(19)));
    }

    #[test]
    fn a_restarted_nodes_old_batches_do_not_disturb_its_new_ones() {
        let mut t = Origins::default();
        t.record(&origin(1, 7, 5), &results(5));
        // The new process starts at 1.
        assert_eq!(t.judge(&origin(1, 8, 1), Some(0)), Verdict::Apply);
        t.record(&origin(1, 8, 1), &results(1));
        // The old process's batch 6, committed late, follows its batch 5.
        assert_eq!(t.judge(&origin(1, 7, 6), Some(5)), Verdict::Apply);
        t.record(&origin(1, 7, 6), &results(6));
        // The new process goes on.
        assert_eq!(t.judge(&origin(1, 8, 2), Some(1)), Verdict::Apply);
        // Entries of before (no `after`) apply as they did.
        assert_eq!(t.judge(&origin(2, 1, 9), None), Verdict::Apply);
        // Processes of one node are bounded; other nodes' are kept.
        t.record(&origin(2, 1, 9), &results(9));
        for p in 100..110 {
            t.record(&origin(1, p, 1), &results(1));
        }
        assert_eq!(t.senders.iter().filter(|s| s.node == 1).count(), 4);
        assert_eq!(t.judge(&origin(2, 1, 9), None), Verdict::Repeat(results(9)));
    }

    proptest! {
        /// However the copies of a sender's batches arrive (each batch sent up to three
        /// times, in any order, with some batches given up), what is applied is each batch
        /// at most once, in increasing order, and a batch is only skipped if given up.
        #[test]
        fn whatever_order_copies_arrive_in_batches_apply_once_and_in_order(
            n in 1u64..12,
            given_up in proptest::collection::btree_set(1u64..12, 0..3),
            arrivals in proptest::collection::vec((1u64..12, 0u8..3), 0..80),
        ) {
            // `after` of batch b: the last batch before it not given up.
            let after = |b: u64| (1..b).rev().find(|x| !given_up.contains(x)).unwrap_or(0);
            let mut t = Origins::default();
            let mut applied: Vec<u64> = Vec::new();
            let feed = |t: &mut Origins, applied: &mut Vec<u64>, b: u64| {
                let o = origin(1, 1, b);
                match t.judge(&o, Some(after(b))) {
                    Verdict::Apply => {
                        t.record(&o, &results(b));
                        applied.push(b);
                    }
                    Verdict::Repeat(r) => assert_eq!(r, results(b)),
                    Verdict::Older | Verdict::OutOfOrder => {}
                }
            };
            for (b, _) in arrivals.iter().filter(|(b, _)| *b <= n) {
                feed(&mut t, &mut applied, *b);
            }
            // Then every batch not given up is sent again in order, as the batcher does.
            for b in (1..=n).filter(|b| !given_up.contains(b)) {
                feed(&mut t, &mut applied, b);
            }
            prop_assert!(applied.windows(2).all(|w| w[0] < w[1]), "{:?}", applied);
            for b in 1..=n {
                if !given_up.contains(&b) {
                    prop_assert!(applied.contains(&b), "batch {} never applied: {:?}", b, applied);
                }
            }
        }
    }
}
