//! Damage to momd's data files while it is down: bit flips anywhere in a segment file, or
//! the file cut short. The segment layout (crates/momd/src/store/segments.rs) is read to
//! know which messages each damage destroyed: `topics/<topic id>/<first seq>.seg`, records
//! of a 20-byte header (`MR`, version 1, 0, first seq u64 BE, body length u32 BE, CRC-32 of
//! the body u32 BE) and a MessagePack body: version 2 `[2, [[time, sender, [[headers,
//! msg_id, payload, crc], …]], …]]` (runs of messages), or version 1 `[1, time, sender,
//! [[headers, msg_id, payload, crc], …]]`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::de::IgnoredAny;

use crate::ledger::{parse_id, Ctx, Id, SeqRange};
use crate::rng::Rng;

const HEADER_LEN: usize = 20;

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
        if &h[..2] != b"MR" || h[2] != 1 {
            break;
        }
        let first_seq = u64::from_be_bytes(h[4..12].try_into().unwrap_or_default());
        let body_len = u32::from_be_bytes(h[12..16].try_into().unwrap_or_default()) as usize;
        let Some(body) = bytes.get(off + HEADER_LEN..off + HEADER_LEN + body_len) else {
            break;
        };
        let Some((count, first_id)) = parse_body(body) else {
            break;
        };
        out.push(SegRecord {
            offset: off as u64,
            len: (HEADER_LEN + body_len) as u64,
            first_seq,
            count,
            first_id,
        });
        off += HEADER_LEN + body_len;
    }
    out
}

/// A segment file of a topic of the run.
#[derive(Debug, Clone)]
pub struct Segment {
    pub path: PathBuf,
    pub topic: u16,
    pub records: Vec<SegRecord>,
    /// The last seq the file may hold beyond its readable records, when reading stopped at
    /// a record that does not read back (damaged earlier): the next file's first seq − 1,
    /// or the last seq acknowledged in the topic. A cut loses those too.
    pub unread_up_to: Option<u64>,
}

/// Which topic of the run a record belongs to, from its msg ids and what the ledger says
/// was sent to which topic.
fn topic_of(ctx: &Ctx, records: &[SegRecord]) -> Option<u16> {
    let l = ctx.ledger();
    records
        .iter()
        .find_map(|r| match parse_id(r.first_id.as_deref()?, ctx.probe) {
            Id::Msg(k) => {
                let (p, n) = crate::ledger::key_parts(k);
                l.sent.get(p as usize)?.get(n as usize).map(|s| s.topic)
            }
            _ => None,
        })
}

/// The segment files of the workload's topics (not the probe's: its latency is measured
/// across faults, and not `$` topics).
pub fn segments(ctx: &Ctx, data: &Path) -> anyhow::Result<Vec<Segment>> {
    let mut out = Vec::new();
    let probe_topic = ctx.topics.len() as u16 - 1;
    let dir = data.join("topics");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Ok(out);
    };
    for t in rd {
        let t = t?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(t.path())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        files.sort();
        let mut parsed = Vec::new();
        for f in files {
            let bytes = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
            let records = parse_segment(&bytes);
            let end = records.last().map_or(0, |r| r.offset + r.len);
            parsed.push((f, records, end == bytes.len() as u64));
        }
        let all: Vec<SegRecord> = parsed
            .iter()
            .flat_map(|(_, r, _)| r.iter().cloned())
            .collect();
        let Some(topic) = topic_of(ctx, &all) else {
            continue;
        };
        if topic == probe_topic {
            continue;
        }
        let last_acked = ctx
            .ledger()
            .sent
            .iter()
            .flatten()
            .filter(|s| s.topic == topic)
            .map(|s| s.seq)
            .max()
            .unwrap_or(0);
        let firsts: Vec<Option<u64>> = parsed
            .iter()
            .map(|(p, _, _)| p.file_stem()?.to_str()?.parse().ok())
            .collect();
        for (i, (path, records, complete)) in parsed.into_iter().enumerate() {
            if records.is_empty() {
                continue;
            }
            let unread_up_to = (!complete).then(|| match firsts.get(i + 1).copied().flatten() {
                Some(next) => next.saturating_sub(1),
                None => last_acked,
            });
            out.push(Segment {
                path,
                topic,
                records,
                unread_up_to,
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// What one damage did.
#[derive(Debug, Clone)]
pub struct Damage {
    pub what: String,
    pub range: SeqRange,
    pub truncated: bool,
}

/// The seqs of the records from index `i` to `j` (inclusive).
fn range_of(seg: &Segment, i: usize, j: usize) -> SeqRange {
    let last = &seg.records[j];
    SeqRange {
        topic: seg.topic,
        first: seg.records[i].first_seq,
        last: last.first_seq + last.count.max(1) - 1,
    }
}

/// The record holding byte `off`.
fn record_at(seg: &Segment, off: u64) -> Option<usize> {
    seg.records
        .iter()
        .position(|r| (r.offset..r.offset + r.len).contains(&off))
}

/// Damage one segment file: flip 1–3 bits, or (one time in three, if `truncate`) cut it
/// short, near its end or anywhere.
pub fn damage(
    seg: &Segment,
    rng: &mut Rng,
    topics: &[String],
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
        .strip_prefix(seg.path.ancestors().nth(3).unwrap_or(Path::new("")))
        .unwrap_or(&seg.path)
        .display()
        .to_string();
    let topic = topics.get(seg.topic as usize).map_or("?", String::as_str);
    let mut out = Vec::new();
    if truncate && (!flip || rng.chance(1.0 / 3.0)) {
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
        let mut range = range_of(seg, i, seg.records.len() - 1);
        range.last = range.last.max(seg.unread_up_to.unwrap_or(0));
        out.push(Damage {
            what: format!(
                "cut {file} ({topic}) at byte {cut} of {end}: seqs {}-{} gone",
                range.first, range.last
            ),
            range,
            truncated: true,
        });
        return Ok(out);
    }
    for _ in 0..rng.range(1, 3) {
        let off = rng.below(end);
        let bit = rng.below(8);
        bytes[off as usize] ^= 1 << bit;
        if let Some(i) = record_at(seg, off) {
            let range = range_of(seg, i, i);
            out.push(Damage {
                what: format!(
                    "flipped bit {bit} of byte {off} in {file} ({topic}): the record of seqs {}-{}",
                    range.first, range.last
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
            file.extend_from_slice(b"MR\x01\x00");
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

    /// A cut in a file whose reading stopped at an earlier damaged record loses the records
    /// past that one too: the damage must name them, or the checker calls them lost.
    #[test]
    fn a_cut_past_an_unreadable_record_names_every_seq_it_removes() {
        let mut file = segment_file(&[
            (1, vec!["p0.0", "p0.1"]),
            (3, vec!["p0.2"]),
            (4, vec!["p0.3", "p0.4"]),
            (6, vec!["p0.5"]),
        ]);
        let third = parse_segment(&file)[2].offset as usize;
        file[third] = b'X';
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topics/1/00000000000000000001.seg");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &file).unwrap();
        let records = parse_segment(&file);
        assert_eq!(records.len(), 2);
        let seg = Segment {
            path: path.clone(),
            topic: 0,
            records,
            unread_up_to: Some(6),
        };
        let topics = vec!["mc.t.0".to_string()];
        for seed in 0..20 {
            std::fs::write(&path, &file).unwrap();
            let d = damage(&seg, &mut Rng::new(seed), &topics, false, true).unwrap();
            assert_eq!(d.len(), 1);
            assert!(d[0].truncated);
            assert_eq!(d[0].range.last, 6, "{}", d[0].what);
        }
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
