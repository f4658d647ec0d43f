//! `momctl subscribe`: a watch streamed to stdout. When the connection is lost it reconnects
//! and resumes after the last seq it printed of each topic (topics it printed nothing of
//! resume from the time the watch first started): nothing printed twice, nothing skipped.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mom_proto::{topic, NoticeKind, StartAt, Watch};
use momctl::client::{Client, ConnectOptions, Pager, WatchEvent};

use super::{is_broken_pipe, CmdResult, Failure, Reconnect};

/// How often an idle subscriber looks whether its pipe's reader went away.
const READER_CHECK: Duration = Duration::from_millis(100);
use crate::cli::SubscribeArgs;
use crate::output::{self, Format};

/// Parse `--from`: new, all, a seq, an RFC 3339 time, or an age such as `10m`.
pub fn parse_from(s: &str) -> Result<(StartAt, u64), String> {
    match s {
        "new" => return Ok((StartAt::New, 0)),
        "all" => return Ok((StartAt::All, 0)),
        "last" => return Ok((StartAt::Last, 1)),
        _ => {}
    }
    if let Ok(seq) = s.parse::<u64>() {
        return Ok((StartAt::Seq, seq));
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map_err(|_| "time before 1970")?
            .as_millis();
        return Ok((StartAt::Time, ms as u64));
    }
    if let Ok(age) = humantime::parse_duration(s) {
        let t = SystemTime::now().checked_sub(age).unwrap_or(UNIX_EPOCH);
        let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        return Ok((StartAt::Time, ms as u64));
    }
    Err(format!(
        "--from {s:?}: expected new, all, last, a seq number, a time (2026-01-02T15:04:05Z) or an age (10m)"
    ))
}

pub async fn run(
    opts: &ConnectOptions,
    args: SubscribeArgs,
    json: bool,
    reconnect: Reconnect,
) -> CmdResult {
    for p in &args.patterns {
        topic::validate_pattern(p).map_err(|e| Failure::new(2, e.to_string()))?;
    }
    let (from, at) = match args.last {
        Some(0) => return Err(Failure::new(2, "--last must be at least 1")),
        Some(n) => (StartAt::Last, n),
        None => parse_from(&args.from).map_err(|e| Failure::new(2, e))?,
    };
    let format = Format::from_args(json, &args.output)?;
    if args.count == Some(0) {
        return Ok(());
    }
    if let Some(name) = args.durable {
        super::queue_name_ok(&name)?;
        if from == StartAt::Last {
            return Err(Failure::new(
                2,
                "--durable starts at new, all, a seq or a time",
            ));
        }
        return super::recv::durable(
            opts,
            name,
            args.patterns,
            (from, at),
            args.count,
            args.timeout,
            format,
            reconnect,
        )
        .await;
    }
    let deadline = args.timeout.map(|d| tokio::time::Instant::now() + d);
    let reconnect = reconnect.until(deadline);
    let mut client = Client::connect(opts).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let mut got: u64 = 0;
    let want = args.count.unwrap_or(u64::MAX);
    // Per topic, the last seq printed and its time: a resumed watch starts after it.
    let mut printed: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let pipe = super::pipe::Pipe::stdout();
    let mut connected_before = false;
    // Where topics this watch has printed nothing of resume: `from` as asked, or for a
    // watch of what is new, the broker's time when it first started.
    let mut resume_from: Option<(StartAt, u64)> = None;
    'connection: loop {
        let (f, a) = resume_from.unwrap_or((from, at));
        // The topics the server has now, when we resume: a topic it does not have is not
        // resumed by seq (it was removed, and one created under its name starts anew).
        let mut present: Option<std::collections::BTreeSet<String>> = None;
        if connected_before {
            // A topic removed and created again while we were away starts its seqs anew:
            // resuming it after the old seq would skip its first messages.
            match topics_of(&client, &args.patterns).await {
                Ok(topics) => {
                    let created: BTreeMap<&str, u64> = topics
                        .iter()
                        .map(|t| (t.name.as_str(), t.created))
                        .collect();
                    printed
                        .retain(|t, (_, time)| created.get(t.as_str()).is_none_or(|c| c <= time));
                    present = Some(topics.iter().map(|t| t.name.clone()).collect());
                }
                Err(e) if e.is_connection_lost() => {
                    client = reconnect
                        .again(opts, &client, &e, &printed_count(got))
                        .await?;
                    continue;
                }
                // Without the list, resume by seq as it is.
                Err(e) => eprintln!("momctl: warning: cannot list topics to resume by ({e})"),
            }
        }
        connected_before = true;
        let w = Watch {
            patterns: args.patterns.clone(),
            from: f,
            at: a,
            passive: args.passive,
            // What was printed of a topic the server lacks stays in `printed`: if it
            // comes back as it was (a cluster node behind), what we have is skipped here.
            after: printed
                .iter()
                .filter(|(t, _)| present.as_ref().is_none_or(|p| p.contains(*t)))
                .map(|(t, (seq, _))| (t.clone(), *seq))
                .collect(),
            ..Watch::default()
        };
        let mut watch = match client.watch_with(w).await {
            Ok(w) => w,
            Err(e) if e.is_connection_lost() => {
                flush_quietly(&mut out)?;
                client = reconnect
                    .again(opts, &client, &e, &printed_count(got))
                    .await?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if resume_from.is_none() {
            resume_from = Some(match from {
                StartAt::New | StartAt::Last => (StartAt::Time, watch.started()),
                other => (other, at),
            });
        }
        // A watch of what is new has nothing stored to catch up with.
        if args.until_end && from == StartAt::New && printed.is_empty() {
            return flush_quietly(&mut out);
        }
        loop {
            let never = tokio::time::Instant::now() + Duration::from_secs(3600 * 24 * 365);
            let next = async {
                // An idle watch into a pipe whose reader went away (`| head -1`) ends too.
                let mut reader_check = tokio::time::interval(READER_CHECK);
                loop {
                    tokio::select! {
                        ev = watch.next() => return Some(ev),
                        _ = reader_check.tick(), if pipe.is_some() => {
                            if pipe.as_ref().is_some_and(super::pipe::Pipe::reader_gone) {
                                return None;
                            }
                        }
                    }
                }
            };
            let ev = match tokio::time::timeout_at(deadline.unwrap_or(never), next).await {
                Ok(Some(ev)) => ev,
                Ok(None) => return flush_quietly(&mut out),
                Err(_) => {
                    flush_quietly(&mut out)?;
                    return match args.count {
                        Some(n) => Err(Failure::new(
                            3,
                            format!(
                                "timed out after {:?} with {got} of {n} messages",
                                args.timeout.unwrap_or(Duration::ZERO)
                            ),
                        )),
                        None => Ok(()),
                    };
                }
            };
            match ev {
                Ok(WatchEvent::Messages(msgs)) => {
                    for m in &msgs {
                        // Safety net for a resume: per topic, never the same seq twice.
                        // (A topic removed and created again restarts its seqs, later.)
                        if printed
                            .get(&m.topic)
                            .is_some_and(|(s, t)| m.seq <= *s && m.time <= *t)
                        {
                            continue;
                        }
                        if let Err(e) = output::write_message(&mut out, m, &format) {
                            return quiet_on_pipe(e);
                        }
                        printed.insert(m.topic.clone(), (m.seq, m.time));
                        got += 1;
                        if got >= want {
                            return flush_quietly(&mut out);
                        }
                    }
                    if let Err(e) = out.flush() {
                        return quiet_on_pipe(e);
                    }
                }
                Ok(WatchEvent::Notice(n)) => match n.kind {
                    NoticeKind::SlowConsumer => {
                        eprintln!("momctl: warning: {} messages were skipped: this subscriber did not keep up", n.skipped)
                    }
                    NoticeKind::Live => {
                        if n.skipped > 0 {
                            eprintln!("momctl: warning: {}", n.message)
                        }
                        if args.until_end {
                            return flush_quietly(&mut out);
                        }
                    }
                    NoticeKind::Ended | NoticeKind::Unknown => {}
                },
                Err(e) if e.is_connection_lost() => {
                    flush_quietly(&mut out)?;
                    client = reconnect
                        .again(opts, &client, &e, &printed_count(got))
                        .await?;
                    continue 'connection;
                }
                Err(e) => {
                    flush_quietly(&mut out)?;
                    return Err(Failure::new(
                        e.exit_code(),
                        format!("{e} (after {got} messages)"),
                    ));
                }
            }
        }
    }
}

/// What a lost connection's message says was done.
fn printed_count(got: u64) -> String {
    format!("{} printed", super::count(got, "message", "messages"))
}

fn quiet_on_pipe(e: std::io::Error) -> CmdResult {
    if is_broken_pipe(&e) {
        Ok(())
    } else {
        Err(Failure::new(1, format!("writing stdout: {e}")))
    }
}

fn flush_quietly(out: &mut impl Write) -> CmdResult {
    match out.flush() {
        Ok(()) => Ok(()),
        Err(e) => quiet_on_pipe(e),
    }
}

/// The topics some pattern matches, filtered on the broker (a page at a time).
async fn topics_of(
    client: &Client,
    patterns: &[String],
) -> momctl::client::Result<Vec<mom_proto::TopicInfo>> {
    let mut all = Vec::new();
    for p in patterns {
        let page = mom_proto::Page::first(None, None, Some(p.clone()));
        all.extend(Pager::new(page, None).collect(client, |_| true).await?);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_values() {
        assert_eq!(parse_from("new"), Ok((StartAt::New, 0)));
        assert_eq!(parse_from("all"), Ok((StartAt::All, 0)));
        assert_eq!(parse_from("42"), Ok((StartAt::Seq, 42)));
        assert_eq!(
            parse_from("2026-01-02T03:04:05Z"),
            Ok((StartAt::Time, 1_767_323_045_000))
        );
        let (k, t) = parse_from("10m").unwrap();
        assert_eq!(k, StartAt::Time);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(now - t >= 600_000 && now - t < 660_000);
        assert!(parse_from("yesterday-ish").is_err());
    }
}
