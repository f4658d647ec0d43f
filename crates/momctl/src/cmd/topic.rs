//! `momctl topic ls|create|info|rm|purge|set`.

use mom_proto::{topic, Page, TopicCreate, TopicInfo, TopicSet};
use momctl::client::{Client, ConnectOptions};

use super::listing::{print_pages, Table, Widths};
use super::{CmdResult, Failure};
use crate::cli::TopicCmd;
use crate::output::{self, human_bytes, human_time};

pub async fn run(opts: &ConnectOptions, cmd: TopicCmd, json: bool) -> CmdResult {
    let name_ok = |t: &str| topic::validate_topic(t).map_err(|e| Failure::new(2, e.to_string()));
    match &cmd {
        TopicCmd::Info { topic }
        | TopicCmd::Create { topic, .. }
        | TopicCmd::Rm { topic, .. }
        | TopicCmd::Purge { topic, .. }
        | TopicCmd::Set { topic, .. } => name_ok(topic)?,
        TopicCmd::Ls {
            pattern: Some(p), ..
        } => topic::validate_pattern(p).map_err(|e| Failure::new(2, e.to_string()))?,
        TopicCmd::Ls { .. } => {}
    }
    let client = Client::connect(opts).await?;
    match cmd {
        TopicCmd::Ls {
            pattern,
            prefix,
            limit,
            all,
        } => {
            // Reply inboxes come and go with every request: shown when asked for, by --all
            // or by a filter that names them.
            let names_inboxes =
                |f: &Option<String>| f.as_deref().is_some_and(|p| p.starts_with("$inbox"));
            let inboxes = all || names_inboxes(&pattern) || names_inboxes(&prefix);
            let page = Page::first(None, prefix, pattern);
            let keep = |t: &TopicInfo| inboxes || !t.name.starts_with("$inbox.");
            let limit = limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
            print_pages(&client, page, limit, keep, json).await?;
        }
        TopicCmd::Create {
            topic,
            partitions,
            replicas,
        } => {
            let t = client
                .topic_create(TopicCreate {
                    id: 0,
                    topic,
                    partitions,
                    replicas: replicas.unwrap_or(0),
                })
                .await?;
            print_info(&t, json)?;
        }
        TopicCmd::Info { topic } => {
            let t = client.topic_info(&topic).await?;
            print_info(&t, json)?;
            if !json && t.partitions > 1 {
                // Each partition, as `topic ls 'NAME.*'` shows it.
                outln!();
                let page = Page::first(None, None, Some(format!("{topic}.*")));
                print_pages(&client, page, None, |_: &TopicInfo| true, false).await?;
            }
        }
        TopicCmd::Rm { topic, force } => {
            client.topic_rm(&topic, force).await?;
            if !json {
                eprintln!("momctl: removed topic {topic}");
            }
        }
        TopicCmd::Purge { topic, force } => {
            let (t, n) = client.topic_purge(&topic, force).await?;
            eprintln!(
                "momctl: purged {} from {topic}",
                super::count(n, "message", "messages")
            );
            if json {
                let mut v = serde_json::to_value(&t).map_err(|e| Failure::new(1, e.to_string()))?;
                if let Some(o) = v.as_object_mut() {
                    o.insert("purged".into(), n.into());
                }
                output::print_json(&v)?;
            }
        }
        TopicCmd::Set {
            topic,
            max_msgs,
            max_bytes,
            max_age,
            hard_max_bytes,
            hard_max_age,
        } => {
            let set = TopicSet {
                id: 0,
                topic,
                max_msgs,
                max_bytes,
                max_age_ms: max_age,
                hard_max_bytes,
                hard_max_age_ms: hard_max_age,
            };
            let nothing = TopicSet {
                id: 0,
                topic: set.topic.clone(),
                ..TopicSet::default()
            };
            if set == nothing {
                return Err(Failure::new(
                    2,
                    "nothing to set: give --max-msgs, --max-bytes, --max-age or a --hard-max-* limit",
                ));
            }
            let t = client.topic_set(set).await?;
            print_info(&t, json)?;
        }
    }
    Ok(())
}

fn age(ms: u64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
}

fn limit(v: u64, f: impl Fn(u64) -> String) -> String {
    if v == 0 {
        "unlimited".into()
    } else {
        f(v)
    }
}

fn print_info(t: &TopicInfo, json: bool) -> CmdResult {
    if json {
        output::print_json(t)?;
        return Ok(());
    }
    outln!("topic:      {}", t.name);
    if t.partitions > 1 {
        outln!(
            "partitions: {} ({}.0 … {}.{}; seqs are per partition)",
            t.partitions,
            t.name,
            t.name,
            t.partitions - 1
        );
    }
    if t.replicas > 0 {
        outln!("replicas:   {}", t.replicas);
    }
    outln!("messages:   {}", t.messages);
    outln!("bytes:      {}", human_bytes(t.bytes));
    if t.partitions > 1 {
        // Each partition has its own seqs: `topic ls 'NAME.*'` shows them.
    } else if t.messages == 0 {
        outln!("seq:        none stored (the next is {})", t.last_seq + 1);
    } else {
        outln!("seq:        {}..{}", t.first_seq, t.last_seq);
    }
    outln!("last:       {}", human_time(t.last_time));
    outln!("created:    {}", human_time(t.created));
    if !t.owner.is_empty() {
        outln!("owner:      {}", t.owner);
    }
    if t.damaged > 0 {
        outln!(
            "damaged:    {} on disk cannot be read (`momd verify` lists them)",
            super::count(t.damaged, "message", "messages")
        );
    }
    outln!("watchers:   {}", t.watchers);
    outln!("queues:     {}", t.queues);
    outln!(
        "rate:       {:.1} msgs/s in, {:.1} msgs/s out",
        t.in_rate,
        t.out_rate
    );
    outln!(
        "max msgs:   {}",
        limit(t.limits.max_msgs, |v| v.to_string())
    );
    outln!("max bytes:  {}", limit(t.limits.max_bytes, human_bytes));
    outln!("max age:    {}", limit(t.limits.max_age_ms, age));
    outln!(
        "hard limits: {} bytes, {} age (also drop what queues still hold)",
        limit(t.limits.hard_max_bytes, human_bytes),
        limit(t.limits.hard_max_age_ms, age)
    );
    Ok(())
}

impl Table for TopicInfo {
    const NAMES: (&'static str, &'static str) = ("topic", "topics");

    fn widths(rows: &[Self]) -> Widths {
        let w = rows.iter().map(|t| t.name.len()).max().unwrap_or(5);
        Widths([w.max(5), 0])
    }

    fn header(w: Widths) -> CmdResult {
        let [w, _] = w.0;
        outln!(
            "{:<w$}  {:>10}  {:>10}  {:>10}  {:>10}  {:>8}  {:>9}",
            "TOPIC",
            "MESSAGES",
            "BYTES",
            "FIRST",
            "LAST",
            "WATCHERS",
            "IN/S"
        );
        Ok(())
    }

    fn row(&self, w: Widths) -> CmdResult {
        let [w, _] = w.0;
        outln!(
            "{:<w$}  {:>10}  {:>10}  {:>10}  {:>10}  {:>8}  {:>9.1}",
            self.name,
            self.messages,
            human_bytes(self.bytes),
            self.first_seq,
            self.last_seq,
            self.watchers,
            self.in_rate
        );
        Ok(())
    }
}
