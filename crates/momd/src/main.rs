//! momd, the mom broker. Start reading at `broker.rs` (the task that owns the state and runs
//! group commit), then `core/` (the deterministic state machine), `store/` (sled) and
//! `session.rs` (one connection).

mod admission;
mod auth;
mod broker;
mod config;
mod core;
mod disk;
mod http;
mod lock;
mod outbox;
mod reader;
mod replay;
mod server;
mod session;
mod store;
mod tls;
mod user_cmd;
mod verify;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, BrokerConfig, Cmd};
use crate::config::Args;
use crate::core::{Core, CoreConfig, Dedupe, Topics};
use crate::store::Store;

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if args.command.is_some() {
        let data = match args.data_dir() {
            Ok(d) => d,
            Err(e) => {
                eprintln!("momd: {e:#}");
                return ExitCode::from(verify::EXIT_CANNOT_CHECK);
            }
        };
        return match args.command {
            Some(config::Command::Repair { .. }) => verify::repair(&data),
            Some(config::Command::User { cmd, .. }) => user_cmd::run(&data, cmd),
            _ => verify::verify(&data),
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("momd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("momd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // A delivery frame must hold one whole message: payload, headers and envelope.
    if args
        .max_payload
        .checked_add(2 * core::MAX_HEADER_BYTES)
        .is_none_or(|n| n > args.max_frame)
    {
        anyhow::bail!(
            "--max-payload ({}) must be at least 128 KiB below --max-frame ({})",
            args.max_payload,
            args.max_frame
        );
    }
    // Before the store is opened: a bad certificate should not wait for recovery.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
        _ => None,
    };
    let data = args.data_dir()?;
    std::fs::create_dir_all(&data)
        .with_context(|| format!("creating data dir {}", data.display()))?;
    let _lock = lock::lock(&data)?;

    let t0 = Instant::now();
    let disk = disk::Disk::open(&data, args.min_free_disk);
    if disk.full() {
        tracing::warn!(
            "the disk holding {} is full ({} bytes free, under --min-free-disk {}): \
             starting read-only; publishes are refused until it has room",
            data.display(),
            disk.free(),
            disk.floor()
        );
    }
    let store = Store::open(&data, args.cache_mb * 1024 * 1024)
        .with_context(|| format!("opening the store in {}", data.display()))?
        .with_index_room(disk.reserve_size());
    let auth = Arc::new(
        auth::Auth::open(
            store.db(),
            &data,
            auth::AuthConfig {
                allow_anonymous: args.allow_anonymous,
                token_ttl: args.token_ttl.max(Duration::from_secs(1)),
                max_connections_per_user: args.max_connections_per_user.max(1),
            },
        )
        .context("opening the users")?,
    );
    if !auth.has_users() && !auth::is_local(args.listen.ip()) {
        if args.allow_anonymous {
            tracing::warn!(
                "no users and --allow-anonymous: anyone who reaches {} is an admin",
                args.listen
            );
        } else {
            anyhow::bail!(
                "refusing to listen on {} with no users: anyone could connect as admin. Add \
                 one first (`momd user add NAME --admin --data {}`), or listen on 127.0.0.1, or \
                 give --allow-anonymous",
                args.listen,
                data.display()
            );
        }
    }
    let window_ms = args.dedupe_window.as_millis() as u64;
    let loaded = store
        .load(broker::now_ms(), window_ms)
        .context("loading topics")?;
    let mut dedupe = Dedupe::default();
    for (topic, id, seq, time) in loaded.dedupe {
        dedupe.insert(topic, id, seq, time);
    }
    let damage = loaded.damage;
    let mut topics = Topics::from_stored(loaded.topics, loaded.next_topic_id);
    // Counted in stats (each topic's `damaged`) as well as reported on $sys.events.
    for d in &damage {
        topics.note_damage(d.topic_id, d.first_seq, d.last_seq);
    }
    let stored: u64 = topics.iter().map(|t| t.msgs).sum();
    tracing::info!(
        data = %data.display(),
        topics = topics.len(),
        messages = stored,
        "recovered in {:.1?}",
        t0.elapsed()
    );
    let core = Core::new(
        CoreConfig {
            max_payload: args.max_payload,
            dedupe_window_ms: window_ms,
            default_limits: mom_proto::Limits {
                max_msgs: args.max_msgs,
                max_bytes: args.max_bytes,
                max_age_ms: args.max_age.as_millis() as u64,
                ..mom_proto::Limits::default()
            },
        },
        topics,
        dedupe,
    );
    let cfg = BrokerConfig {
        fsync: args.fsync,
        max_frame: args.max_frame,
        max_payload: args.max_payload,
        max_inflight: args.max_inflight.max(1),
        watch_budget: args.watch_buffer.max(64 * 1024),
        frame_timeout: args.frame_timeout.max(std::time::Duration::from_millis(10)),
        frame_budget: args.frame_budget,
        inflight_budget: args.inflight_budget.max(64 * 1024),
        write_timeout: args.write_timeout.max(Duration::from_millis(10)),
    };
    tracing::info!("{}", args.fsync.explain());
    let (broker, handle, rx) = Broker::new(
        core,
        store,
        loaded.server_id.clone(),
        cfg.clone(),
        loaded.queues,
        auth.clone(),
    );
    let mut broker = broker;
    broker.report_damage(&damage);
    broker.set_disk(disk);
    let broker_task = tokio::spawn(broker.run(rx));

    let shutdown = CancellationToken::new();
    let listeners = listen(&args, tls.clone(), auth.has_users()).await?;
    let http_listener = match args.http {
        Some(addr) => {
            if !auth.has_users() && !auth::is_local(addr.ip()) && !args.allow_anonymous {
                anyhow::bail!(
                    "refusing --http {addr} with no users: anyone could connect as admin. Add \
                     one first, or use 127.0.0.1, or give --allow-anonymous"
                );
            }
            let tcp = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--http: listening on {addr}"))?;
            Some(http::HttpListener::start(
                tcp,
                tls.clone(),
                args.max_connections.max(1),
                shutdown.clone(),
            )?)
        }
        None => None,
    };
    for l in &listeners {
        let local = l.tcp.local_addr()?;
        let how = if l.tls.is_some() { " (TLS)" } else { "" };
        tracing::info!(server_id = %loaded.server_id, "momd {} listening on {local}{how}", env!("CARGO_PKG_VERSION"));
    }
    if let Some(l) = &http_listener {
        let how = if tls.is_some() { "HTTPS" } else { "HTTP" };
        tracing::info!("{how} API on {}", axum::serve::Listener::local_addr(l)?);
    }

    let signals = tokio::spawn(wait_for_signal(shutdown.clone()));
    let cfg = Arc::new(cfg);
    let ctx = session::Ctx::new(&cfg, auth);
    let http = http_listener.map(|l| {
        tokio::spawn(http::serve(
            l,
            handle.clone(),
            cfg.clone(),
            ctx.clone(),
            shutdown.clone(),
        ))
    });
    let tracker = server::serve(
        listeners,
        handle.clone(),
        cfg,
        args.max_connections.max(1),
        ctx,
        shutdown.clone(),
    )
    .await;
    signals.abort();
    if let Some(h) = http {
        // Long polls and streams end with the shutdown signal; a request in flight finishes.
        if tokio::time::timeout(Duration::from_secs(15), h)
            .await
            .is_err()
        {
            tracing::warn!("some HTTP requests did not finish in 15 s");
        }
    }
    tracing::info!("shutting down: finishing requests in flight");
    if tokio::time::timeout(Duration::from_secs(15), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish in 15 s");
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    handle.send(Cmd::Shutdown { done: tx }).await;
    let flushed = rx.await.unwrap_or(false);
    drop(handle);
    let _ = broker_task.await;
    if flushed {
        tracing::info!("stopped; everything acknowledged is on disk");
    } else {
        // Acknowledged messages were flushed when they were acknowledged; what failed now
        // is only what was never acknowledged.
        tracing::warn!("stopped; the last flush failed (nothing unacknowledged is promised)");
    }
    Ok(())
}

/// Bind `--listen` (TLS when `tls` is given) and `--listen-plain`.
async fn listen(
    args: &Args,
    tls: Option<tokio_rustls::TlsAcceptor>,
    has_users: bool,
) -> anyhow::Result<Vec<server::Listener>> {
    if let Some(addr) = args.listen_plain {
        if !auth::is_local(addr.ip()) {
            if !has_users && !args.allow_anonymous {
                anyhow::bail!(
                    "refusing --listen-plain {addr} with no users: anyone could connect as \
                     admin. Add a user first, or use 127.0.0.1, or give --allow-anonymous"
                );
            }
            tracing::warn!(
                "--listen-plain {addr} is not a loopback address: what its clients send, \
                 passwords and tokens included, crosses the network unencrypted"
            );
        }
    }
    let plain = args.listen_plain.map(|addr| (addr, None));
    let mut listeners = Vec::new();
    for (addr, tls) in std::iter::once((args.listen, tls)).chain(plain) {
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        listeners.push(server::Listener { tcp, tls });
    }
    Ok(listeners)
}

async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    shutdown.cancel();
}
