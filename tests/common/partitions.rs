//! Partitioned topics, as the tests check them.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{json_lines, Momd};

/// The partition of a key among `n`, as docs/protocol.md specifies it: FNV-1a (32 bits).
pub fn partition_of(key: &str, n: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % n
}

/// Every message of `pattern`, as `subscribe --json` prints them.
pub fn read_json(m: &Momd, pattern: &str, n: usize) -> Vec<Value> {
    let n = n.to_string();
    let out = m.ctl_ok(
        &[
            "subscribe",
            pattern,
            "--from",
            "all",
            "-n",
            &n,
            "--timeout",
            "20s",
            "--json",
        ],
        None,
    );
    json_lines(&out)
}

/// Checks what `msgs` (payloads `KEY:I`, I counting up per key) say: each in its key's
/// partition, each key's in order, each partition's seqs 1, 2, 3, … in order.
pub fn check_partitioned(msgs: &[Value], n: u32) -> BTreeMap<String, Vec<u64>> {
    let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut per_part: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for m in msgs {
        let payload = m["payload"].as_str().expect("payload");
        let (key, i) = payload.split_once(':').expect("KEY:I");
        assert_eq!(m["key"], key, "{m}");
        let topic = m["topic"].as_str().expect("topic");
        let want = format!(
            "{}.{}",
            topic.rsplit_once('.').map_or("", |t| t.0),
            partition_of(key, n)
        );
        assert_eq!(topic, want, "{m}");
        per_key
            .entry(key.to_string())
            .or_default()
            .push(i.parse().expect("I"));
        per_part
            .entry(topic.to_string())
            .or_default()
            .push(m["seq"].as_u64().expect("seq"));
    }
    for (key, is) in &per_key {
        assert!(is.windows(2).all(|w| w[0] < w[1]), "{key}: {is:?}");
    }
    for (p, seqs) in &per_part {
        let want: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, &want, "{p}");
    }
    per_key
}

/// `--json-input` lines of messages `from..to`, message i keyed `keys[i % len]` with
/// payload `KEY:I` and msg id `mI`.
pub fn keyed_input(keys: &[String], from: usize, to: usize) -> String {
    (from..to)
        .map(|i| {
            let key = &keys[i % keys.len()];
            format!("{{\"payload\":\"{key}:{i}\",\"key\":\"{key}\",\"msg_id\":\"m{i}\"}}\n")
        })
        .collect()
}
