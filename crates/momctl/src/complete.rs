//! Dynamic shell completion: topic and queue names asked of the broker as the user types
//! (`source <(COMPLETE=bash momctl)`; zsh, fish and elvish likewise). The broker is the one
//! in `MOM_SERVER` (or the default); a broker that does not answer within a second offers
//! nothing rather than hang the shell.

use std::ffi::OsStr;
use std::time::Duration;

use clap_complete::engine::{ArgValueCompleter, CompletionCandidate};
use momctl::client::{Client, ConnectOptions};

#[derive(Clone, Copy)]
enum Kind {
    Topics,
    Queues,
}

pub fn topics() -> ArgValueCompleter {
    ArgValueCompleter::new(|cur: &OsStr| names(cur, Kind::Topics))
}

pub fn queues() -> ArgValueCompleter {
    ArgValueCompleter::new(|cur: &OsStr| names(cur, Kind::Queues))
}

fn names(cur: &OsStr, kind: Kind) -> Vec<CompletionCandidate> {
    let Some(cur) = cur.to_str() else {
        return Vec::new();
    };
    let server = std::env::var("MOM_SERVER").unwrap_or_else(|_| mom_proto::DEFAULT_ADDR.into());
    let Ok(servers) = momctl::client::parse_servers(&server) else {
        return Vec::new();
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    let page = mom_proto::Page::first(None, (!cur.is_empty()).then(|| cur.to_string()), None);
    let listed = rt.block_on(async {
        let mut opts = ConnectOptions::with_servers(servers, "momctl completion");
        opts.connect_timeout = Duration::from_secs(1);
        tokio::time::timeout(Duration::from_secs(2), async {
            let c = Client::connect(&opts).await.ok()?;
            match kind {
                // One page of the names that start with what was typed: enough for a shell.
                Kind::Topics => c
                    .topic_page(page)
                    .await
                    .ok()
                    .map(|p| p.items.into_iter().map(|t| t.name).collect::<Vec<_>>()),
                Kind::Queues => c
                    .queue_page(page)
                    .await
                    .ok()
                    .map(|p| p.items.into_iter().map(|q| q.name).collect()),
            }
        })
        .await
        .ok()
        .flatten()
    });
    let inboxes = cur.starts_with("$inbox");
    listed
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with(cur) && (inboxes || !n.starts_with("$inbox.")))
        .map(CompletionCandidate::new)
        .collect()
}
