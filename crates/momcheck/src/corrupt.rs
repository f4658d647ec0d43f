//! Damage to momd's data files while it is down: bit flips anywhere in a segment file, or
//! the file cut short. The log's layout (crates/momd/src/store/segments.rs) is read to know
//! which messages each damage destroyed: `log/<segment number>.seg`, shared by all topics,
//! records of a 24-byte header (`MR`, version 2, 0, topic id u32 BE, first seq u64 BE, body
//! length u32 BE, CRC-32 u32 BE) and a MessagePack body: version 2 `[2, [[time, sender,
//! [[headers, msg_id, payload, crc], …]], …]]` (runs of messages), or version 1 `[1, time,
//! sender, [[headers, msg_id, payload, crc], …]]`; a record of seq 0 holds a new topic's
//! state. Which topic of the run a record holds is found from its msg ids (momd's topic ids
//! are its own).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::de::IgnoredAny;

use crate::ledger::{parse_id, Ctx, Id, SeqRange};
use crate::rng::Rng;

const HEADER_LEN: usize = 24;

/// One record of a segment file.
#[derive(Debug, Clone)]
pub struct SegRecord {
    pub offset: u64,
    /// Header and body.
    pub len: u64,
    pub first_seq: u64,
    pub count: u64,
    /// The first msg id of the record, if any.
    pub first_id: Option<String>,
    /// The run's topic the record belongs to (None: not one of the run's, such as
    /// `$sys.events`).
    pub topic: Option<u16>,
}

type Msg = (IgnoredAny, Option<String>, IgnoredAny, IgnoredAny);

#[derive(serde::Deserialize)]
struct BodyV1(
    #[allow(dead_code)] IgnoredAny,
    #[allow(dead_code)] IgnoredAny,
    #[allow(dead_code)] IgnoredAny,
    Vec<Msg>,
);

#[derive(serde::Deserialize)]
struct BodyV2(
    #[allow(dead_code)] IgnoredAny,
    Vec<(IgnoredAny, IgnoredAny, Vec<Msg>)>,
);

/// A record body's message count and first msg id.
fn parse_body(body: &[u8]) -> Option<(u64, Option<String>)> {
    // The version is the array's first element, right after its marker.
    match body.get(1) {
        Some(1) => {
            let b: BodyV1 = rmp_serde::from_slice(body).ok()?;
            Some((b.3.len() as u64, b.3.first().and_then(|m| m.1.clone())))
        }
        Some(2) => {
            let b: BodyV2 = rmp_serde::from_slice(body).ok()?;
            let count = b.1.iter().map(|r| r.2.len() as u64).sum();
            let first = b.1.iter().flat_map(|r| r.2.iter()).next();
            Some((count, first.and_then(|m| m.1.clone())))
        }
        _ => None,
    }
}

/// The records of a segment file, up to the first that does not read back.
pub fn parse_segment(bytes: &[u8]) -> Vec<SegRecord> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while let Some(h) = bytes.get(off..off + HEADER_LEN) {
        if &h[..2] != b"MR" || h[2] != 2 {
            break;
        }
        let first_seq = u64::from_be_bytes(h[8..16].try_into().unwrap_or_default());
        let body_len = u32::from_be_bytes(h[16..20].try_into().unwrap_or_default()) as usize;
        let Some(body) = bytes.get(off + HEADER_LEN..off + HEADER_LEN + body_len) else {
            break;
        };
        // Seq 0: a topic's state, written when it was created; no messages.
        let parsed = if first_seq == 0 {
            Some((0, None))
        } else {
            parse_body(body)
        };
        let Some((count, first_id)) = parsed else {
            break;
        };
        out.push(SegRecord {
            offset: off as u64,
            len: (HEADER_LEN + body_len) as u64,
            first_seq,
            count,
            first_id,
            topic: None,
        });
        off += HEADER_LEN + body_len;
    }
    out
}

/// A segment file of the log.
#[derive(Debug, Clone)]
pub struct Segment {
    pub path: PathBuf,
    /// Its records, up to the first that does not read back.
    pub records: Vec<SegRecord>,
    /// Every byte of the file was read as records (no damage from before stops reading).
    pub complete: bool,
}

/// Which topic of the run a record belongs to, from its first msg id and what the ledger
/// says was sent to which topic.
fn topic_of(ctx: &Ctx, r: &SegRecord) -> Option<u16> {
    let l = ctx.ledger();
    match parse_id(r.first_id.as_deref()?, ctx.probe) {
        Id::Msg(k) => {
            let (p, n) = crate::ledger::key_parts(k);
            l.sent.get(p as usize)?.get(n as usize).map(|s| s.topic)
        }
        _ => None,
    }
}

/// The segment files of the log that hold records of the run's topics.
pub fn segments(ctx: &Ctx, data: &Path) -> anyhow::Result<Vec<Segment>> {
    let mut out = Vec::new();
    let dir = data.join("log");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Ok(out);
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    for path in files {
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut records = parse_segment(&bytes);
        for r in &mut records {
            r.topic = topic_of(ctx, r);
        }
        let end = records.last().map_or(0, |r| r.offset + r.len);
        if records.iter().any(|r| r.topic.is_some()) {
            out.push(Segment {
                path,
                complete: end == bytes.len() as u64,
                records,
            });
        }
    }
    Ok(out)
}

/// What one damage did.
#[derive(Debug, Clone)]
pub struct Damage {
    pub what: String,
    pub range: SeqRange,
    pub truncated: bool,
}

/// The seqs of one record of a run's topic.
fn range_of(r: &SegRecord) -> Option<SeqRange> {
    Some(SeqRange {
        topic: r.topic?,
        first: r.first_seq,
        last: r.first_seq + r.count.max(1) - 1,
    })
}

/// The record holding byte `off`.
fn record_at(seg: &Segment, off: u64) -> Option<usize> {
    seg.records
        .iter()
        .position(|r| (r.offset..r.offset + r.len).contains(&off))
}

/// Damage one segment file: flip 1–3 bits in records of the run's workload topics, or (one
/// time in three, if `truncate`) cut it short, near its end or anywhere. A file whose
/// reading stopped at damage from before is not cut: what it holds past there is unknown.
pub fn damage(
    seg: &Segment,
    rng: &mut Rng,
    topics: &[String],
    probe_topic: u16,
    flip: bool,
    truncate: bool,
) -> anyhow::Result<Vec<Damage>> {
    let mut bytes =
        std::fs::read(&seg.path).with_context(|| format!("reading {}", seg.path.display()))?;
    let end = seg.records.last().map_or(0, |r| r.offset + r.len);
    if end == 0 {
        return Ok(Vec::new());
    }
    let file = seg
        .path
        .strip_prefix(seg.path.ancestors().nth(2).unwrap_or(Path::new("")))
        .unwrap_or(&seg.path)
        .display()
        .to_string();
    let name = |t: u16| topics.get(t as usize).map_or("?", String::as_str);
    let mut out = Vec::new();
    if truncate && seg.complete && (!flip || rng.chance(1.0 / 3.0)) {
        let cut = if rng.chance(0.5) {
            end - rng.below(end.min(64 * 1024)) - 1
        } else {
            rng.below(end)
        };
        let Some(i) = record_at(seg, cut) else {
            return Ok(out);
        };
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&seg.path)
            .with_context(|| format!("opening {}", seg.path.display()))?;
        f.set_len(cut).context("truncating a segment file")?;
        f.sync_all()?;
        // Per topic, its records from the cut on, as runs of consecutive seqs (compaction
        // copies older records to the end of the log: a topic's seqs there need not follow
        // each other).
        let mut ranges: Vec<SeqRange> = Vec::new();
        for r in &seg.records[i..] {
            let Some(range) = range_of(r) else { continue };
            match ranges
                .iter_mut()
                .find(|x| x.topic == range.topic && x.last + 1 == range.first)
            {
                Some(x) => x.last = range.last,
                None => ranges.push(range),
            }
        }
        for range in ranges {
            out.push(Damage {
                what: format!(
                    "cut {file} at byte {cut} of {end}: {} seqs {}-{} gone",
                    name(range.topic),
                    range.first,
                    range.last
                ),
                range,
                truncated: true,
            });
        }
        return Ok(out);
    }
    // Flips land in records of the workload's topics (not the probe's: its latency is
    // measured across faults).
    let targets: Vec<&SegRecord> = seg
        .records
        .iter()
        .filter(|r| r.topic.is_some_and(|t| t != probe_topic))
        .collect();
    if targets.is_empty() {
        return Ok(out);
    }
    for _ in 0..rng.range(1, 3) {
        let r = targets[rng.below(targets.len() as u64) as usize];
        let off = r.offset + rng.below(r.len);
        let bit = rng.below(8);
        bytes[off as usize] ^= 1 << bit;
        if let Some(range) = range_of(r) {
            out.push(Damage {
                what: format!(
                    "flipped bit {bit} of byte {off} in {file} ({}): the record of seqs {}-{}",
                    name(range.topic),
                    range.first,
                    range.last
                ),
                range,
                truncated: false,
            });
        }
    }
    std::fs::write(&seg.path, &bytes).with_context(|| format!("writing {}", seg.path.display()))?;
    Ok(out)
}

/// Damage momd names in `momd verify` output: `damaged: topic "NAME" seqs A-B (…` or
/// `seq A (…`.
pub fn parse_verify(ctx: &Ctx, out: &str) -> Vec<SeqRange> {
    out.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("damaged: topic ")?;
            let (name, rest) = parse_quoted(rest)?;
            let topic = ctx.topic_index(&name)?;
            let rest = rest.trim_start();
            let (first, last) = if let Some(r) = rest.strip_prefix("seqs ") {
                let span = r.split_whitespace().next()?;
                let (a, b) = span.split_once('-')?;
                (a.parse().ok()?, b.parse().ok()?)
            } else {
                let s: u64 = rest
                    .strip_prefix("seq ")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                (s, s)
            };
            Some(SeqRange { topic, first, last })
        })
        .collect()
}

/// A JSON-style quoted string at the start of `s`, and what follows it.
fn parse_quoted(s: &str) -> Option<(String, &str)> {
    let s = s.strip_prefix('"')?;
    let end = s.find('"')?;
    Some((s[..end].to_string(), &s[end + 1..]))
}

/// What momd's start-up log says about damage: (`damaged record kept` lines' ranges,
/// `record torn` lines' (topic, first seq)).
pub fn parse_log(ctx: &Ctx, log: &str) -> (Vec<SeqRange>, Vec<(u16, u64)>) {
    let field = |l: &str, name: &str| -> Option<String> {
        let i = l.find(&format!(" {name}="))?;
        let v = &l[i + name.len() + 2..];
        Some(v.split_whitespace().next()?.trim_matches('"').to_string())
    };
    let mut damaged = Vec::new();
    let mut torn = Vec::new();
    for l in log.lines() {
        let Some(topic) = field(l, "topic").and_then(|t| ctx.topic_index(&t)) else {
            continue;
        };
        if l.contains("damaged record kept") {
            if let Some((a, b)) = field(l, "seqs").and_then(|s| {
                let (a, b) = s.split_once('-')?;
                Some((a.parse().ok()?, b.parse().ok()?))
            }) {
                damaged.push(SeqRange {
                    topic,
                    first: a,
                    last: b,
                });
            }
        } else if l.contains("record torn by a crash") {
            if let Some(s) = field(l, "seq").and_then(|s| s.parse().ok()) {
                torn.push((topic, s));
            }
        }
    }
    (damaged, torn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_names() {
        assert_eq!(
            parse_quoted("\"mc.t.1\" seqs 1-2"),
            Some(("mc.t.1".to_string(), " seqs 1-2"))
        );
        assert_eq!(parse_quoted("mc"), None);
    }

    /// A segment file of records `(first seq, msg ids)`, as momd writes them.
    fn segment_file(records: &[(u64, Vec<&str>)]) -> Vec<u8> {
        let body = |ids: &[&str]| {
            type Msg = (
                std::collections::BTreeMap<String, String>,
                Option<String>,
                serde_bytes_like::B,
                u32,
            );
            let msgs: Vec<Msg> = ids
                .iter()
                .map(|i| {
                    (
                        Default::default(),
                        Some(i.to_string()),
                        serde_bytes_like::B(vec![1, 2]),
                        7,
                    )
                })
                .collect();
            // Version 2, as momd writes: one run per message here.
            let runs: Vec<_> = msgs
                .into_iter()
                .enumerate()
                .map(|(i, m)| (5u64 + i as u64, ("u", 1u64, "n"), vec![m]))
                .collect();
            rmp_serde::to_vec(&(2u8, runs)).unwrap()
        };
        let mut file = Vec::new();
        for (seq, ids) in records {
            let b = body(ids);
            file.extend_from_slice(b"MR\x02\x00");
            file.extend_from_slice(&7u32.to_be_bytes());
            file.extend_from_slice(&seq.to_be_bytes());
            file.extend_from_slice(&(b.len() as u32).to_be_bytes());
            file.extend_from_slice(&0u32.to_be_bytes());
            file.extend_from_slice(&b);
        }
        file
    }

    #[test]
    fn a_version_1_body_parses() {
        let msgs = vec![(
            std::collections::BTreeMap::<String, String>::new(),
            Some("p0.7".to_string()),
            serde_bytes_like::B(vec![1]),
            7u32,
        )];
        let b = rmp_serde::to_vec(&(1u8, 5u64, ("u", 1u64, "n"), msgs)).unwrap();
        assert_eq!(parse_body(&b), Some((1, Some("p0.7".to_string()))));
    }

    #[test]
    fn a_segment_of_two_records_parses() {
        let file = segment_file(&[(1, vec!["p0.0", "p0.1"]), (3, vec!["p0.2"])]);
        let recs = parse_segment(&file);
        assert_eq!(recs.len(), 2);
        assert_eq!((recs[0].first_seq, recs[0].count), (1, 2));
        assert_eq!((recs[1].first_seq, recs[1].count), (3, 1));
        assert_eq!(recs[1].first_id.as_deref(), Some("p0.2"));
        assert_eq!(recs[1].offset, recs[0].len);
        assert_eq!(parse_segment(&file[..file.len() - 1]).len(), 1);
    }

    /// A cut names, per topic, every record from the cut on; a file whose reading stopped
    /// at damage from before is never cut (what it holds past there is unknown).
    #[test]
    fn a_cut_names_each_topic_s_records_past_it_and_a_damaged_file_is_not_cut() {
        let file = segment_file(&[
            (1, vec!["p0.0", "p0.1"]),
            (1, vec!["p1.0"]),
            (3, vec!["p0.2"]),
            (2, vec!["p1.1", "p1.2"]),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log/00000000000000000001.seg");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut records = parse_segment(&file);
        assert_eq!(records.len(), 4);
        for (r, t) in records.iter_mut().zip([0u16, 1, 0, 1]) {
            r.topic = Some(t);
        }
        let seg = Segment {
            path: path.clone(),
            records: records.clone(),
            complete: true,
        };
        let topics = vec!["mc.t.0".to_string(), "mc.t.1".to_string()];
        for seed in 0..20 {
            std::fs::write(&path, &file).unwrap();
            let d = damage(&seg, &mut Rng::new(seed), &topics, 9, false, true).unwrap();
            let cut = std::fs::metadata(&path).unwrap().len();
            let i = record_at(&seg, cut).unwrap();
            for r in &records[i..] {
                let t = r.topic.unwrap();
                let got = d.iter().find(|d| d.range.topic == t).unwrap();
                assert!(d.iter().all(|d| d.truncated));
                assert!(got.range.first <= r.first_seq && got.range.last >= r.first_seq);
            }
            // Both topics' last records are past any cut: each range ends at seq 3.
            assert!(
                !d.is_empty() && d.iter().all(|d| d.range.last == 3),
                "{d:?}"
            );
        }
        let damaged = Segment {
            complete: false,
            ..seg
        };
        std::fs::write(&path, &file).unwrap();
        for seed in 0..20 {
            let d = damage(&damaged, &mut Rng::new(seed), &topics, 9, false, true).unwrap();
            assert!(d.iter().all(|d| !d.truncated));
        }
    }

    /// Compaction copies a topic's older records to the log's end: a cut past both names
    /// each run of seqs, not one span from the first record's seq.
    #[test]
    fn a_cut_names_copied_records_out_of_seq_order() {
        let file = segment_file(&[
            (5, vec!["p0.4"]),
            (6, vec!["p0.5"]),
            (1, vec!["p0.0", "p0.1"]),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log/00000000000000000002.seg");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut records = parse_segment(&file);
        for r in &mut records {
            r.topic = Some(0);
        }
        let seg = Segment {
            path: path.clone(),
            records,
            complete: true,
        };
        let topics = vec!["mc.t.0".to_string()];
        let mut seen_both = false;
        for seed in 0..40 {
            std::fs::write(&path, &file).unwrap();
            let d = damage(&seg, &mut Rng::new(seed), &topics, 9, false, true).unwrap();
            // Seq 1-2 is always past the cut (it is the last record).
            assert!(
                d.iter().any(|d| d.range.first == 1 && d.range.last == 2),
                "{d:?}"
            );
            seen_both |= d.iter().any(|d| d.range.first == 5 && d.range.last == 6);
        }
        assert!(seen_both);
    }

    mod serde_bytes_like {
        /// Bytes serialized as MessagePack bin, as momd writes payloads.
        pub struct B(pub Vec<u8>);
        impl serde::Serialize for B {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }
    }
}
