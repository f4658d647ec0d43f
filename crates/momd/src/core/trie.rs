//! An index of topic patterns by token, so finding who wants a topic costs the depth of the
//! topic, not the number of patterns held (NATS and Mosquitto match subjects the same way).
//!
//! Each node is one token position: literal children by token, one `*` child, the ids whose
//! pattern ends here, and the ids whose pattern ends with `>` right after this node. The
//! rules are those of [`mom_proto::topic::matches`]: a wildcard in the first position does
//! not match a reserved topic (first token starting with `$`).

use std::collections::HashMap;

/// Literal children: a short list searched in order while there are few (most nodes of a
/// pattern have one child), a hash map once there are many (`devices.<id>` for every device).
#[derive(Debug, Clone)]
enum Children {
    Few(Vec<(Box<str>, Node)>),
    Many(HashMap<Box<str>, Node>),
}

/// Children kept in a list up to this many.
const FEW: usize = 8;

impl Default for Children {
    fn default() -> Self {
        Children::Few(Vec::new())
    }
}

impl Children {
    fn is_empty(&self) -> bool {
        match self {
            Children::Few(v) => v.is_empty(),
            Children::Many(m) => m.is_empty(),
        }
    }

    fn get(&self, tok: &str) -> Option<&Node> {
        match self {
            Children::Few(v) => v.iter().find(|(t, _)| &**t == tok).map(|(_, n)| n),
            Children::Many(m) => m.get(tok),
        }
    }

    fn get_mut(&mut self, tok: &str) -> Option<&mut Node> {
        match self {
            Children::Few(v) => v.iter_mut().find(|(t, _)| &**t == tok).map(|(_, n)| n),
            Children::Many(m) => m.get_mut(tok),
        }
    }

    fn get_or_insert(&mut self, tok: &str) -> &mut Node {
        if let Children::Few(v) = self {
            if v.len() >= FEW && !v.iter().any(|(t, _)| &**t == tok) {
                *self = Children::Many(std::mem::take(v).into_iter().collect());
            }
        }
        match self {
            Children::Few(v) => {
                let i = match v.iter().position(|(t, _)| &**t == tok) {
                    Some(i) => i,
                    None => {
                        v.reserve_exact(1);
                        v.push((tok.into(), Node::default()));
                        v.len() - 1
                    }
                };
                &mut v[i].1
            }
            Children::Many(m) => m.entry(tok.into()).or_default(),
        }
    }

    fn remove(&mut self, tok: &str) {
        match self {
            Children::Few(v) => v.retain(|(t, _)| &**t != tok),
            Children::Many(m) => {
                m.remove(tok);
            }
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Node {
    children: Children,
    star: Option<Box<Node>>,
    /// Ids whose pattern ends at this node.
    here: Vec<u64>,
    /// Ids whose pattern is this node's path followed by `>`.
    rest: Vec<u64>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.star.is_none()
            && self.here.is_empty()
            && self.rest.is_empty()
    }
}

/// Patterns (assumed valid, see [`mom_proto::topic::validate_pattern`]) each held for an id.
#[derive(Debug, Default, Clone)]
pub struct PatternIndex {
    root: Node,
    len: usize,
    /// Nodes below the root: what the index costs (about 170 bytes each).
    nodes: usize,
}

fn remove_one(ids: &mut Vec<u64>, id: u64) -> bool {
    match ids.iter().position(|x| *x == id) {
        Some(i) => {
            ids.swap_remove(i);
            true
        }
        None => false,
    }
}

impl PatternIndex {
    /// How many (pattern, id) entries are held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nodes below the root, each a token position some held pattern goes through.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// Hold `pattern` for `id`. Holding the same pair twice holds it twice.
    pub fn insert(&mut self, pattern: &str, id: u64) {
        let mut node = &mut self.root;
        let mut tokens = pattern.split('.').peekable();
        while let Some(tok) = tokens.next() {
            if tok == ">" && tokens.peek().is_none() {
                node.rest.push(id);
                self.len += 1;
                return;
            }
            node = if tok == "*" {
                if node.star.is_none() {
                    self.nodes += 1;
                }
                node.star.get_or_insert_with(Box::default)
            } else {
                if node.children.get(tok).is_none() {
                    self.nodes += 1;
                }
                node.children.get_or_insert(tok)
            };
        }
        node.here.push(id);
        self.len += 1;
    }

    /// Stop holding `pattern` for `id` (once); nodes left empty are freed.
    pub fn remove(&mut self, pattern: &str, id: u64) -> bool {
        let tokens: Vec<&str> = pattern.split('.').collect();
        let removed = remove_in(&mut self.root, &tokens, id, &mut self.nodes);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Push the id of every held pattern that matches `topic`. An id appears once per
    /// matching pattern it holds: callers that want each id once sort and dedup.
    pub fn matches(&self, topic: &str, out: &mut Vec<u64>) {
        walk(&self.root, Some(topic), topic.starts_with('$'), out);
    }

    /// The ids matching `topic`, each once, ascending.
    pub fn matching(&self, topic: &str) -> Vec<u64> {
        let mut out = Vec::new();
        self.matches(topic, &mut out);
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// `topic`: the tokens left to match, as the rest of the name (none: every token matched).
/// `reserved`: this is the first position of a reserved topic, where wildcards do not match.
/// Called for every message published, so it splits as it goes rather than collecting.
fn walk(node: &Node, topic: Option<&str>, reserved: bool, out: &mut Vec<u64>) {
    let Some(topic) = topic else {
        out.extend_from_slice(&node.here);
        return;
    };
    let (tok, rest) = match topic.split_once('.') {
        Some((tok, rest)) => (tok, Some(rest)),
        None => (topic, None),
    };
    if !reserved {
        // `>` needs at least one more token, which `tok` is.
        out.extend_from_slice(&node.rest);
        if let Some(star) = &node.star {
            walk(star, rest, false, out);
        }
    }
    if let Some(child) = node.children.get(tok) {
        walk(child, rest, false, out);
    }
}

fn remove_in(node: &mut Node, tokens: &[&str], id: u64, nodes: &mut usize) -> bool {
    let Some((tok, rest)) = tokens.split_first() else {
        return remove_one(&mut node.here, id);
    };
    if *tok == ">" && rest.is_empty() {
        return remove_one(&mut node.rest, id);
    }
    if *tok == "*" {
        let Some(star) = node.star.as_deref_mut() else {
            return false;
        };
        let removed = remove_in(star, rest, id, nodes);
        if star.is_empty() {
            node.star = None;
            *nodes -= 1;
        }
        removed
    } else {
        let Some(child) = node.children.get_mut(tok) else {
            return false;
        };
        let removed = remove_in(child, rest, id, nodes);
        if child.is_empty() {
            node.children.remove(tok);
            *nodes -= 1;
        }
        removed
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use mom_proto::topic;
    use proptest::prelude::*;

    #[test]
    fn wildcards_and_reserved_topics() {
        let mut ix = PatternIndex::default();
        ix.insert("orders.*.created", 1);
        ix.insert("orders.>", 2);
        ix.insert(">", 3);
        ix.insert("$sys.>", 4);
        ix.insert("orders", 5);
        assert_eq!(ix.matching("orders.eu.created"), vec![1, 2, 3]);
        assert_eq!(ix.matching("orders.eu"), vec![2, 3]);
        assert_eq!(ix.matching("orders"), vec![3, 5]);
        assert_eq!(ix.matching("$sys.events"), vec![4]);
        assert_eq!(ix.matching("$sys"), Vec::<u64>::new());
        assert!(ix.remove("orders.>", 2));
        assert!(!ix.remove("orders.>", 2));
        assert!(!ix.remove("never.held", 2));
        assert_eq!(ix.matching("orders.eu"), vec![3]);
        for (p, id) in [
            ("orders.*.created", 1),
            (">", 3),
            ("$sys.>", 4),
            ("orders", 5),
        ] {
            assert!(ix.remove(p, id));
        }
        assert_eq!((ix.len(), ix.nodes()), (0, 0));
        assert!(ix.root.is_empty(), "every node is freed: {:?}", ix.root);
    }

    /// Tokens for generated names: two plain ones and a reserved one.
    pub(in crate::core) fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("$c".to_string())
        ]
    }

    pub(in crate::core) fn topic_name() -> impl Strategy<Value = String> {
        proptest::collection::vec(token(), 1..5).prop_map(|t| t.join("."))
    }

    pub(in crate::core) fn pattern() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(prop_oneof![token(), Just("*".to_string())], 0..4),
            any::<bool>(),
        )
            .prop_filter_map("a pattern has at least one token", |(mut t, gt)| {
                if gt {
                    t.push(">".to_string());
                }
                (!t.is_empty()).then(|| t.join("."))
            })
    }

    proptest! {
        /// The index answers what a scan of every pattern with `topic::matches` answers,
        /// also after some patterns were removed.
        #[test]
        fn the_index_agrees_with_a_scan(
            held in proptest::collection::vec((pattern(), 0u64..6), 0..40),
            drop in proptest::collection::vec(any::<bool>(), 40),
            topics in proptest::collection::vec(topic_name(), 1..20),
        ) {
            let mut ix = PatternIndex::default();
            for (p, id) in &held {
                ix.insert(p, *id);
            }
            let mut kept = Vec::new();
            for ((p, id), d) in held.iter().zip(drop.iter().chain(std::iter::repeat(&false))) {
                if *d {
                    prop_assert!(ix.remove(p, *id));
                } else {
                    kept.push((p.clone(), *id));
                }
            }
            prop_assert_eq!(ix.len(), kept.len());
            let mut fresh = PatternIndex::default();
            for (p, id) in &kept {
                fresh.insert(p, *id);
            }
            prop_assert_eq!(ix.nodes(), fresh.nodes(), "removal frees exactly the unused nodes");
            for t in &topics {
                let mut want: Vec<u64> =
                    kept.iter().filter(|(p, _)| topic::matches(p, t)).map(|(_, id)| *id).collect();
                want.sort_unstable();
                want.dedup();
                prop_assert_eq!(ix.matching(t), want, "topic {}", t);
            }
        }
    }
}
