//! Hostile cases about connections and frames: malformed floods, stalled and deeply nested
//! frames, idle connections, and clients that never read.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use mom_proto::{ClientFrame, ServerFrame, StartAt, Watch};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{Answers, Scale};
use crate::raw::{frame_of_body, Raw, Read1};

/// Read and count server frames until the server closes or `until`.
pub async fn count_frames(mut rd: OwnedReadHalf, until: Instant) -> Answers {
    let mut a = Answers::default();
    let mut buf = BytesMut::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while let Ok(Some(body)) = mom_proto::split_frame(&mut buf, 64 * 1024 * 1024) {
            match mom_proto::decode_body::<ServerFrame>(&body) {
                Ok(f) => a.frame(&f),
                Err(_) => *a.errors.entry("undecodable".into()).or_default() += 1,
            }
        }
        match tokio::time::timeout_at(until, rd.read(&mut chunk)).await {
            Err(_) => return a,
            Ok(Ok(0)) | Ok(Err(_)) => {
                a.closed += 1;
                return a;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// Connections that send nothing but 5-byte malformed frames (a length of 1 and the byte
/// 0xc1, which MessagePack never uses), before or after `hello`; each reconnects when momd
/// closes it.
pub async fn malformed(addr: &str, scale: Scale, after_hello: bool) -> anyhow::Result<String> {
    let conns = scale.pick(16, 4);
    let deadline = Instant::now() + scale.time;
    let chunk: Arc<Vec<u8>> = Arc::new([0u8, 0, 0, 1, 0xc1].repeat(64 * 1024 / 5));
    let mut tasks = JoinSet::new();
    for _ in 0..conns {
        let addr = addr.to_string();
        let chunk = chunk.clone();
        tasks.spawn(async move {
            let (mut sent, mut opened, mut answers) = (0u64, 0u64, Answers::default());
            while Instant::now() < deadline {
                let Ok(mut raw) = Raw::connect(&addr).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                opened += 1;
                if after_hello && raw.hello("momcheck malformed").await.is_err() {
                    continue;
                }
                let (rd, mut wr) = raw.stream.into_split();
                let reader = tokio::spawn(count_frames(rd, deadline + Duration::from_secs(1)));
                while Instant::now() < deadline {
                    match tokio::time::timeout_at(deadline, wr.write_all(&chunk)).await {
                        Ok(Ok(())) => sent += chunk.len() as u64,
                        _ => break,
                    }
                }
                drop(wr);
                if let Ok(a) = reader.await {
                    answers.merge(a);
                }
            }
            (sent, opened, answers)
        });
    }
    let (mut sent, mut opened, mut answers) = (0, 0, Answers::default());
    while let Some(r) = tasks.join_next().await {
        let (s, o, a) = r?;
        sent += s;
        opened += o;
        answers.merge(a);
    }
    Ok(format!(
        "{conns} clients opened {opened} connections and sent {:.0} MB of 5-byte malformed frames {} hello; momd answered {answers}",
        mb(sent),
        if after_hello { "after" } else { "before" }
    ))
}

/// Connections that announce a max-size frame and stall in it: half after 4 KiB, half one
/// byte short of its end.
pub async fn stalled_frames(addr: &str, scale: Scale) -> anyhow::Result<String> {
    let n = scale.pick(64, 16);
    let deadline = Instant::now() + scale.time;
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let addr = addr.to_string();
        tasks.spawn(async move {
            let mut raw = Raw::connect(&addr).await.ok()?;
            let max = raw.hello("momcheck stalled").await.ok()?.max_frame as usize;
            let prefix = (max as u32).to_be_bytes();
            let body = if i.is_multiple_of(2) { 4096 } else { max - 1 };
            let chunk = vec![0x81u8; 64 * 1024];
            raw.send_bytes(&prefix).await.ok()?;
            let mut left = body;
            while left > 0 && Instant::now() < deadline {
                let k = left.min(chunk.len());
                match tokio::time::timeout_at(deadline, raw.send_bytes(&chunk[..k])).await {
                    Ok(Ok(())) => left -= k,
                    _ => break,
                }
            }
            // Hold the connection, then see whether momd closed it.
            let r = match tokio::time::timeout_at(deadline, raw.read_frame(scale.time * 2)).await {
                Ok(Read1::Frame(_)) | Ok(Read1::Closed) => 1,
                _ => 0,
            };
            Some((body - left, r))
        });
    }
    let (mut sent, mut ok, mut closed) = (0usize, 0u64, 0u64);
    while let Some(r) = tasks.join_next().await {
        if let Some((s, c)) = r? {
            ok += 1;
            sent += s;
            closed += c;
        }
    }
    Ok(format!(
        "{ok} of {n} connections announced a max-size frame and stalled in it (half after 4 KiB, \
         half 1 byte short), {:.0} MB sent in all; momd closed {closed} within {:?}",
        mb(sent as u64),
        scale.time
    ))
}

/// A body of `depth` nested one-element arrays around nil.
fn nested_arrays(depth: usize) -> Vec<u8> {
    let mut v = vec![0x91u8; depth];
    v.push(0xc0);
    v
}

/// A body of `depth` nested one-entry maps (`{"a": {"a": …}}`) around nil.
fn nested_maps(depth: usize) -> Vec<u8> {
    let mut v = [0x81u8, 0xa1, b'a'].repeat(depth);
    v.push(0xc0);
    v
}

/// A ping with an unknown key holding `junk` (unknown keys must be skipped, however deep).
fn ping_with(junk: &[u8]) -> Vec<u8> {
    let mut v = vec![0x83u8, 0xa4];
    v.extend_from_slice(b"type");
    v.push(0xa4);
    v.extend_from_slice(b"ping");
    v.extend_from_slice(&[0xa2, b'i', b'd', 0x07, 0xa4]);
    v.extend_from_slice(b"junk");
    v.extend_from_slice(junk);
    v
}

/// Deeply nested MessagePack: bare and inside a frame's unknown key, before `hello` (64 KiB)
/// and after it (megabytes deep).
pub async fn nested(addr: &str, scale: Scale) -> anyhow::Result<String> {
    let conns = scale.pick(8, 2);
    let deadline = Instant::now() + scale.time;
    let pre: Arc<Vec<Vec<u8>>> = Arc::new(vec![
        frame_of_body(&nested_arrays(65_000)),
        frame_of_body(&nested_maps(21_000)),
        frame_of_body(&ping_with(&nested_arrays(60_000))),
    ]);
    let post: Arc<Vec<Vec<u8>>> = Arc::new(vec![
        frame_of_body(&nested_arrays(4 << 20)),
        frame_of_body(&ping_with(&nested_arrays(4 << 20))),
        frame_of_body(&ping_with(&nested_maps(1 << 20))),
    ]);
    let mut tasks = JoinSet::new();
    for c in 0..conns {
        let (addr, pre, post) = (addr.to_string(), pre.clone(), post.clone());
        tasks.spawn(async move {
            let (mut sent, mut answers) = (0u64, Answers::default());
            let mut i = c as usize;
            while Instant::now() < deadline {
                i += 1;
                let Ok(mut raw) = Raw::connect(&addr).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let before = i.is_multiple_of(2);
                if !before && raw.hello("momcheck nested").await.is_err() {
                    continue;
                }
                let set = if before { &pre } else { &post };
                let f = &set[i % set.len()];
                if raw.send_bytes(f).await.is_err() {
                    answers.closed += 1;
                    continue;
                }
                sent += 1;
                match raw.read_frame(Duration::from_secs(10)).await {
                    Read1::Frame(f) => answers.frame(&f),
                    Read1::Closed => answers.closed += 1,
                    Read1::Bad(e) => {
                        let e: String = e.chars().take(60).collect();
                        *answers
                            .errors
                            .entry(format!("undecodable reply ({e})"))
                            .or_default() += 1;
                    }
                    Read1::Timeout => {
                        *answers
                            .errors
                            .entry("no answer in 10 s".into())
                            .or_default() += 1
                    }
                }
            }
            (sent, answers)
        });
    }
    let (mut sent, mut answers) = (0u64, Answers::default());
    while let Some(r) = tasks.join_next().await {
        let (s, a) = r?;
        sent += s;
        answers.merge(a);
    }
    Ok(format!(
        "{sent} deeply nested frames (65,000 levels before hello, 4 million after, bare and \
         in an unknown key) on {conns} clients; momd answered {answers}"
    ))
}

/// Connections that say hello and then nothing, as many as the fd limit allows: opened
/// 200 at a time (for at most a minute), then held.
pub async fn idle(addr: &str, scale: Scale) -> anyhow::Result<String> {
    let want = scale.pick(10_000, 500);
    let n = want.min(scale.fd_limit.saturating_sub(1000) / 2);
    let t0 = Instant::now();
    let opening = t0 + Duration::from_secs(60);
    let gate = Arc::new(tokio::sync::Semaphore::new(200));
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let (addr, gate) = (addr.to_string(), gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            let mut raw = match tokio::time::timeout_at(opening, Raw::connect(&addr)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => return Err(format!("connect: {e}")),
                Err(_) => return Err("connect: no answer within a minute".into()),
            };
            match tokio::time::timeout_at(opening, raw.hello("momcheck idle")).await {
                Ok(Ok(_)) => Ok(raw),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err("hello: no welcome within a minute".into()),
            }
        });
    }
    let mut held = Vec::new();
    let mut failed = 0u64;
    let mut first_err = None;
    while let Some(r) = tasks.join_next().await {
        match r? {
            Ok(raw) => held.push(raw),
            Err(e) => {
                failed += 1;
                first_err.get_or_insert(e);
            }
        }
    }
    let opened_in = t0.elapsed();
    tokio::time::sleep(scale.time).await;
    let opened = held.len();
    drop(held);
    let capped = if n < want {
        format!(" (of {want}: the fd limit is {})", scale.fd_limit)
    } else {
        String::new()
    };
    let why = first_err.map_or(String::new(), |e| format!(" (first: {e})"));
    Ok(format!(
        "{opened} idle connections said hello in {opened_in:.1?}{capped}, {failed} could \
         not{why}; held {:?}",
        scale.time
    ))
}

/// Make a socket's receive buffer small, so the server's send buffer is what fills.
fn small_rcvbuf(s: &tokio::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let v: libc::c_int = 4096;
    // SAFETY: setsockopt on a socket we own, with a c_int option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Watchers of every workload topic from the first message that never read a byte.
pub async fn unread_watcher(addr: &str, scale: Scale) -> anyhow::Result<String> {
    let n = scale.pick(8, 2);
    let mut held = Vec::new();
    for i in 0..n {
        let mut raw = Raw::connect(addr).await?;
        small_rcvbuf(&raw.stream);
        raw.hello("momcheck unread watcher").await?;
        raw.send(&ClientFrame::Watch(Watch {
            id: 2 + i,
            patterns: vec![
                crate::workload::TOPIC_PATTERN.into(),
                crate::workload::PROBE_TOPIC.into(),
            ],
            from: StartAt::All,
            ..Watch::default()
        }))
        .await?;
        held.push(raw);
    }
    tokio::time::sleep(scale.time).await;
    drop(held);
    Ok(format!(
        "{n} watchers of everything from the first message, never reading, for {:?}",
        scale.time
    ))
}

/// A `stats` request, `{"type": "stats", "id": id}`, as a whole frame.
fn stats_frame(id: u64) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Stats {
        #[serde(rename = "type")]
        kind: &'static str,
        id: u64,
    }
    let mut body = Vec::new();
    if mom_proto::encode_body(&Stats { kind: "stats", id }, &mut body).is_err() {
        return Vec::new();
    }
    frame_of_body(&body)
}

/// Connections that pipeline `stats` requests and never read a reply.
pub async fn unread_replies(addr: &str, scale: Scale) -> anyhow::Result<String> {
    let n = scale.pick(8, 2);
    let deadline = Instant::now() + scale.time;
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let addr = addr.to_string();
        tasks.spawn(async move {
            let mut raw = Raw::connect(&addr).await.ok()?;
            small_rcvbuf(&raw.stream);
            raw.hello("momcheck unread replies").await.ok()?;
            let mut batch = Vec::new();
            for id in 0..1000u64 {
                batch.extend_from_slice(&stats_frame(id + 2));
            }
            let mut sent = 0u64;
            while Instant::now() < deadline {
                match tokio::time::timeout_at(deadline, raw.stream.write_all(&batch)).await {
                    Ok(Ok(())) => sent += 1000,
                    _ => break,
                }
            }
            Some((sent, raw))
        });
    }
    let mut sent = 0;
    let mut held = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Some((s, raw)) = r? {
            sent += s;
            held.push(raw);
        }
    }
    let conns = held.len();
    drop(held);
    Ok(format!(
        "{conns} connections pipelined {sent} stats requests (momd stopped reading them when \
         its replies went unread) and read no reply"
    ))
}
