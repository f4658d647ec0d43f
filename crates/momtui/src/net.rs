//! The network side: one tokio task that keeps a connection (reconnecting with backoff,
//! moving on through the server list from the server it lost),
//! polls `stats` every second (the summary and the tables' windows, section 2.5 of
//! docs/protocol.md) and `cluster_status` while the cluster view is open, runs the stream's
//! watch, and carries out commands. The UI never waits for it: events go out over a
//! bounded channel, and at high rates the stream is sampled for display while every
//! message is still counted.

use std::time::Duration;

use mom_proto::{QueueCreate, StartAt, Stats};
use momctl::client::{message, Client, ConnectOptions, WatchEvent, WatchStream};
use tokio::sync::{mpsc, watch};

use crate::app::{Command, NetEvent, Sampler, Windows, PEEK, WINDOW};

/// Most messages handed to the UI per flush; the rest are counted only.
const SAMPLE: usize = 200;
const FLUSH: Duration = Duration::from_millis(100);

pub async fn run(
    opts: ConnectOptions,
    tx: mpsc::Sender<NetEvent>,
    mut cmds: mpsc::Receiver<Command>,
) {
    let mut pattern = ">".to_string();
    let mut windows = Windows::default();
    let mut cluster = false;
    let mut attempt = 0u32;
    // The server of the last connection: the next one starts after it in the list.
    let mut last: Option<String> = None;
    loop {
        let to = match &last {
            Some(s) => opts.starting_after(s),
            None => opts.clone(),
        };
        let reason = match session(
            &to,
            &mut last,
            &tx,
            &mut cmds,
            &mut pattern,
            &mut windows,
            &mut cluster,
        )
        .await
        {
            Ok(()) => return,
            Err(e) => e,
        };
        attempt += 1;
        if tx
            .send(NetEvent::Disconnected {
                attempt,
                reason: reason.clone(),
            })
            .await
            .is_err()
        {
            return;
        }
        // Backoff: 0.5 s doubling to 5 s; commands meanwhile are refused, not queued.
        let wait =
            Duration::from_millis(500 * (1u64 << attempt.min(4))).min(Duration::from_secs(5));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                c = cmds.recv() => match c {
                    None => return,
                    Some(Command::Watch { pattern: p, .. }) => pattern = p,
                    Some(Command::Windows(w)) => windows = w,
                    Some(Command::Cluster(on)) => cluster = on,
                    Some(Command::Save { path, lines }) => {
                        let _ = tx.try_send(save(path, lines).await);
                    }
                    Some(Command::Publish { .. }) => {
                        let _ = tx.try_send(NetEvent::Published(Err(format!("not connected: {reason}"))));
                    }
                    Some(_) => {
                        let _ = tx.try_send(NetEvent::Done(Err(format!("not connected: {reason}"))));
                    }
                },
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

/// One connection's life. Ok(()) when the UI is gone; Err(reason) when the connection is.
/// `cluster`: the cluster view is open.
async fn session(
    opts: &ConnectOptions,
    last: &mut Option<String>,
    tx: &mpsc::Sender<NetEvent>,
    cmds: &mut mpsc::Receiver<Command>,
    pattern: &mut String,
    windows: &mut Windows,
    cluster: &mut bool,
) -> Result<(), String> {
    let client = Client::connect(opts).await.map_err(|e| e.to_string())?;
    *last = Some(client.server().to_string());
    if tx
        .send(NetEvent::Connected {
            welcome: Box::new(client.welcome().clone()),
            server: client.server().to_string(),
        })
        .await
        .is_err()
    {
        return Ok(());
    }
    let mut watch = Some(start_watch(&client, tx, pattern, StartAt::New, 0).await?);
    // Requests run in tasks of their own: this loop must keep draining the watch, or the
    // connection's reader stalls and their replies could never arrive.
    let (lost_tx, mut lost) = mpsc::channel::<String>(1);
    let (windows_tx, windows_rx) = watch::channel(windows.clone());
    let stats = tokio::spawn(poll_stats(
        client.clone(),
        tx.clone(),
        lost_tx.clone(),
        windows_rx,
    ));
    let _stop_stats = AbortOnDrop(stats);
    let (cluster_tx, cluster_rx) = watch::channel(*cluster);
    let _stop_cluster = AbortOnDrop(tokio::spawn(poll_cluster(
        client.clone(),
        tx.clone(),
        cluster_rx,
    )));
    let mut flush_tick = tokio::time::interval(FLUSH);
    let mut sampler = Sampler::new(SAMPLE);
    loop {
        tokio::select! {
            why = lost.recv() => return Err(why.unwrap_or_default()),
            _ = flush_tick.tick() => {
                if !sampler.is_empty() {
                    let (sample, total, skipped) = sampler.take();
                    let ev = NetEvent::Messages {
                        sample,
                        total,
                        skipped,
                    };
                    // A busy UI misses a sample; the counts it gets next time are smaller.
                    if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(ev) {
                        return Ok(());
                    }
                }
            }
            ev = async { watch.as_mut().expect("guarded: watching").next().await }, if watch.is_some() => match ev.map_err(|e| e.to_string())? {
                // The sample keeps the newest messages of the interval, counting all.
                WatchEvent::Messages(msgs) => sampler.add(msgs),
                WatchEvent::Notice(n) => {
                    if n.kind == mom_proto::NoticeKind::SlowConsumer {
                        sampler.skipped += n.skipped;
                    }
                }
            },
            c = cmds.recv() => {
                let Some(c) = c else { return Ok(()) };
                match c {
                    Command::Windows(w) => {
                        // The poller asks for them at once.
                        *windows = w.clone();
                        windows_tx.send_replace(w);
                    }
                    Command::Cluster(on) => {
                        *cluster = on;
                        cluster_tx.send_replace(on);
                    }
                    Command::Watch { pattern: p, from, at } => {
                        // One watch per stream: the old one ends before the new one starts,
                        // so the broker never holds two for this dashboard. Nothing waits
                        // on the old stream meanwhile (unwatch consumes it), so the
                        // connection's reader is free to bring the answer.
                        if let Some(old) = watch.take() {
                            old.unwatch().await.map_err(|e| e.to_string())?;
                        }
                        sampler.clear();
                        let new = start_watch(&client, tx, &p, from, at).await;
                        match new {
                            Ok(w) => {
                                watch = Some(w);
                                *pattern = p;
                                sampler.clear();
                            }
                            Err(e) => {
                                let _ = tx.try_send(NetEvent::Done(Err(e)));
                            }
                        }
                    }
                    other => {
                        let (client, tx) = (client.clone(), tx.clone());
                        tokio::spawn(async move {
                            let ev = run_command(&client, other).await;
                            let _ = tx.send(ev).await;
                        });
                    }
                }
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Stats every second, and at once when the UI moves a window, until the connection fails
/// (said on `lost`) or the UI is gone.
async fn poll_stats(
    client: Client,
    tx: mpsc::Sender<NetEvent>,
    lost: mpsc::Sender<String>,
    mut windows: watch::Receiver<Windows>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = windows.changed() => {
                if changed.is_err() {
                    return;
                }
                tick.reset();
            }
        }
        let w = windows.borrow_and_update().clone();
        match stats_of(&client, &w).await {
            // The UI moved a window while these were fetched: they would show the old rows
            // under the new title; the new ones are asked for next.
            Ok(_) if windows.has_changed().unwrap_or(false) => {}
            Ok(s) => {
                if tx.send(NetEvent::Stats(Box::new(s))).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = lost.send(e.to_string()).await;
                return;
            }
        }
    }
}

/// `cluster_status` at once when the view opens, then a second after each answer, while
/// it stays open. A failure is shown in the view; a lost connection is the stats poller's
/// to report.
async fn poll_cluster(client: Client, tx: mpsc::Sender<NetEvent>, mut open: watch::Receiver<bool>) {
    loop {
        if !*open.borrow_and_update() {
            if open.changed().await.is_err() {
                return;
            }
            continue;
        }
        let reply = client
            .cluster_status()
            .await
            .map(Box::new)
            .map_err(|e| e.to_string());
        if tx.send(NetEvent::Cluster(reply)).await.is_err() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            changed = open.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// The summary and each table's window (at most `WINDOW` rows from its cursor, under its
/// pattern); each section's `*_next` is where the listing goes on after the window.
async fn stats_of(client: &Client, w: &Windows) -> momctl::client::Result<Stats> {
    let pages = [w.topics.page(), w.queues.page(), w.clients.page()];
    client.stats_sections(pages, Some(WINDOW)).await
}

async fn start_watch(
    client: &Client,
    tx: &mpsc::Sender<NetEvent>,
    pattern: &str,
    from: StartAt,
    at: u64,
) -> Result<WatchStream, String> {
    // Only looking: momtui must not count as a watcher or a responder for anyone.
    let w = client
        .watch_with(mom_proto::Watch {
            patterns: vec![pattern.to_string()],
            from,
            at,
            passive: true,
            ..mom_proto::Watch::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let _ = tx.send(NetEvent::Watching(pattern.to_string())).await;
    Ok(w)
}

async fn run_command(client: &Client, c: Command) -> NetEvent {
    let done = |r: Result<String, momctl::client::ClientError>| {
        NetEvent::Done(r.map_err(|e| e.to_string()))
    };
    match c {
        Command::Publish {
            topic,
            headers,
            payload,
            msg_id,
        } => {
            let res = client
                .publish(&topic, vec![message(payload.into_bytes(), headers, msg_id)])
                .await
                .map_err(|e| e.to_string())
                .map(|ack| {
                    let seq = ack.seqs.first().copied().unwrap_or(0);
                    if ack.duplicates > 0 {
                        format!("{topic}: a duplicate of seq {seq} (same msg id); not stored again")
                    } else {
                        format!("published to {topic} at seq {seq}")
                    }
                });
            NetEvent::Published(res)
        }
        Command::CreateQueue { name, binding } => done(
            client
                .queue_create(QueueCreate {
                    queue: name.clone(),
                    bindings: vec![binding.clone()],
                    ..QueueCreate::default()
                })
                .await
                .map(|_| format!("created queue {name} bound to {binding}")),
        ),
        Command::PurgeQueue(name) => done(client.queue_purge(&name).await.map(|q| {
            format!(
                "purged {} from queue {name}; {} unacked remain",
                messages(q.1),
                q.0.unacked
            )
        })),
        Command::DeleteQueue { name, force } => done(
            client
                .queue_delete(&name, force)
                .await
                .map(|_| format!("deleted queue {name}")),
        ),
        Command::RedriveQueue(name) => done(
            client
                .queue_redrive(&name)
                .await
                .map(|(_, n)| format!("{n} dead letters went back into queue {name}")),
        ),
        Command::SetQueue {
            name,
            max_deliver,
            ack_wait_ms,
        } => done(
            client
                .queue_set(&name, max_deliver, ack_wait_ms.map(Duration::from_millis))
                .await
                .map(|q| {
                    format!(
                        "queue {name}: ack wait {} ms, max deliver {}",
                        q.ack_wait_ms, q.max_deliver
                    )
                }),
        ),
        Command::PeekQueue(queue) => {
            let result = client
                .queue_peek(&queue, PEEK)
                .await
                .map_err(|e| e.to_string());
            NetEvent::Peeked { queue, result }
        }
        Command::PurgeTopic(topic) => done(
            client
                .topic_purge(&topic, false)
                .await
                .map(|(_, n)| format!("purged {} from topic {topic}", messages(n))),
        ),
        Command::DeleteTopic { name, force } => done(
            client
                .topic_rm(&name, force)
                .await
                .map(|_| format!("deleted topic {name}")),
        ),
        Command::CloseClient(id) => done(
            client
                .client_close(id)
                .await
                .map(|_| format!("closed the connection of client {id}")),
        ),
        Command::Save { path, lines } => save(path, lines).await,
        // Handled by the connection's loop.
        Command::Watch { .. } | Command::Windows(_) | Command::Cluster(_) => {
            NetEvent::Done(Ok(String::new()))
        }
    }
}

/// Write the saved stream, one JSON object per line.
async fn save(path: String, lines: Vec<String>) -> NetEvent {
    let n = lines.len();
    let mut text = lines.join("\n");
    text.push('\n');
    let res = tokio::task::spawn_blocking(move || {
        std::fs::write(&path, text)
            .map(|_| format!("saved {} to {path}", messages(n as u64)))
            .map_err(|e| format!("cannot write {path}: {e}"))
    })
    .await
    .unwrap_or_else(|e| Err(format!("cannot save: {e}")));
    NetEvent::Done(res)
}

/// `1 message`, `2 messages`.
fn messages(n: u64) -> String {
    if n == 1 {
        "1 message".into()
    } else {
        format!("{n} messages")
    }
}
