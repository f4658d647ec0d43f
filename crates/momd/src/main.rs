//! momd, the mom broker. Start reading at `broker.rs` (the task that owns the state and runs
//! group commit), then `core/` (the deterministic state machine), `store/` (sled) and
//! `session.rs` (one connection).

mod admission;
mod auth;
mod backup;
mod broker;
mod cluster;
mod config;
mod config_file;
mod core;
mod disk;
mod http;
mod lock;
mod logging;
mod metrics;
mod outbox;
mod reader;
mod reload;
mod replay;
mod server;
mod session;
mod store;
mod systemd;
mod tls;
mod user_cmd;
mod verify;

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, Cmd};
use crate::config::Args;
use crate::core::shards::Shards;
use crate::core::{Core, Dedupe, Topics};
use crate::store::Store;

fn main() -> ExitCode {
    metrics::mark_start();
    let argv: Vec<OsString> = std::env::args_os().collect();
    let resolved = match config_file::resolve(argv.clone()) {
        Ok(r) => r,
        Err(config_file::ConfigError::Args(e)) => e.exit(),
        Err(e) => {
            eprintln!("momd: {e}");
            return ExitCode::FAILURE;
        }
    };
    if matches!(resolved.args.command, Some(config::Command::CheckConfig)) {
        print!("{}", config_file::render(&resolved));
        return match resolved.args.check() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("momd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let args = &resolved.args;
    let log = logging::init(&args.log_level, args.log_format == "json");
    if let Some(config::Command::Restore { dir, data }) = &args.command {
        return backup::restore(dir, data);
    }
    if args.command.is_some() {
        let data = match args.data_dir() {
            Ok(d) => d,
            Err(e) => {
                eprintln!("momd: {e:#}");
                return ExitCode::from(verify::EXIT_CANNOT_CHECK);
            }
        };
        return match resolved.args.command {
            Some(config::Command::Repair { .. }) => verify::repair(&data),
            Some(config::Command::User { cmd, .. }) => user_cmd::run(&data, cmd),
            Some(config::Command::Backup { dir, .. }) => backup::backup(&data, &dir),
            Some(config::Command::Info { .. }) => backup::info(&data),
            _ => verify::verify(&data),
        };
    }
    if let Some(file) = &resolved.file {
        tracing::info!("config file {}", file.display());
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
    match rt.block_on(run(resolved, argv, log)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("momd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    resolved: config_file::Resolved,
    argv: Vec<OsString>,
    log: logging::LogHandle,
) -> anyhow::Result<()> {
    let args = resolved.args;
    args.check().map_err(anyhow::Error::msg)?;
    // Before the store is opened: a bad certificate should not wait for recovery.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(Arc::new(std::sync::RwLock::new(tls::acceptor(cert, key)?)))
        }
        _ => None,
    };
    let data = args.data_dir()?;
    std::fs::create_dir_all(&data)
        .with_context(|| format!("creating data dir {}", data.display()))?;
    let _lock = lock::lock(&data)?;
    let secret = cluster_secret(&args)?;
    let peer_tls = match (&args.peer_tls_cert, &args.peer_tls_key, &args.peer_tls_ca) {
        (Some(cert), Some(key), Some(ca)) => Some(Arc::new(tls::peer_tls(cert, key, ca)?)),
        _ => None,
    };
    // Before anything is written: a cluster node's data dir starts with its identity.
    let identity = match cluster_settings(&args) {
        Some(c) => Some(cluster::identity::check_cluster(
            &data,
            &c.cluster_id,
            c.node_id,
            args.data_groups,
        )?),
        None => {
            cluster::identity::check_single(&data)?;
            None
        }
    };
    backup::check_format(&data)?;

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
    if identity.is_some() && store::snapshot::resume_install(&data)? {
        // A crash interrupted the install of a data group snapshot after it was decided on.
        tracing::info!("finished installing the data group snapshot a stop interrupted");
    }
    let store = Store::open(&data, args.cache_mb * 1024 * 1024)
        .with_context(|| format!("opening the store in {}", data.display()))?
        .with_index_room(disk.reserve_size());
    // A cluster node's store is the data groups' logs applied (`store/replica.rs`), each
    // its shard of the topics.
    let shards = match &identity {
        Some(i) => Shards::new(i.data_groups).with_context(|| {
            format!(
                "data dir {}: its identity names {} data groups (1 to 64)",
                data.display(),
                i.data_groups
            )
        })?,
        None => Shards::ONE,
    };
    let store = if identity.is_some() {
        store.into_replica().with_shards(shards)
    } else {
        store
    };
    let auth_cfg = auth::AuthConfig {
        allow_anonymous: args.allow_anonymous,
        token_ttl: args.token_ttl.max(Duration::from_secs(1)),
        max_connections_per_user: args.max_connections_per_user.max(1),
    };
    // A cluster node's users are the metadata group's, loaded as the cluster starts.
    let auth = Arc::new(if identity.is_some() {
        auth::Auth::replicated(auth_cfg)
    } else {
        auth::Auth::open(store.db(), &data, auth_cfg).context("opening the users")?
    });
    if identity.is_some() {
        tracing::info!(
            "cluster mode: users and tokens are the cluster's; while it has no user, clients \
             from {} connect as admins",
            if args.allow_anonymous {
                "anywhere (--allow-anonymous)"
            } else {
                "127.0.0.1 and ::1"
            }
        );
    } else if !auth.has_users() && !auth::is_local(args.listen.ip()) {
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
    let mut topics = Topics::from_stored_in(loaded.topics, loaded.next_topic_id, shards);
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
    let core = Core::new(reload::core_config(&args), topics, dedupe);
    let mut applied = Vec::new();
    if store.is_replica() {
        for s in shards.all() {
            let a = store
                .meta(&cluster::data::applied_key(s))
                .context("reading the applied Raft state")?;
            applied.push(a);
        }
    }
    let mut cfg = reload::broker_config(&args);
    if identity.is_some() {
        // A cluster node acknowledges once the data group's Raft log is fsynced on a
        // majority; its store is that log applied, written out every REPLICA_FSYNC, and a
        // crash applies again what it lost (`store/replica.rs`).
        cfg.fsync = config::FsyncMode::Batch(REPLICA_FSYNC);
        tracing::info!(
            "cluster mode: a publish is acknowledged once the data group's log holds it on a \
             majority of the nodes, each having fsynced it; --fsync does not apply"
        );
    } else {
        tracing::info!("{}", args.fsync.explain());
    }
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
    broker.set_metrics_topics(args.metrics_topics);
    // A cluster node does not know its cluster's users yet: its anonymous clients are held
    // to loopback per connection (`Auth::authenticate`).
    // Taken from before anyone can reach momd: a SIGHUP (a reload) that came between the
    // listeners and the handlers would end the process.
    let signals = Signals::install();
    let listeners = listen(&args, tls.clone(), auth.has_users() || identity.is_some()).await?;
    // Running before the cluster starts: Raft applies what its log holds past the store's
    // applied state as it starts, through the broker.
    let broker_task = tokio::spawn(broker.run(rx));
    let cluster = match (cluster_settings(&args), &identity) {
        (Some(mut settings), Some(identity)) => {
            settings.secret = secret.clone();
            settings.tls = peer_tls.clone();
            settings.shards = shards;
            if let Some(l) = listeners.first() {
                settings.client_addr = l.tcp.local_addr()?.to_string();
            }
            let c = cluster::start(
                settings,
                &data,
                identity,
                handle.clone(),
                applied,
                auth.clone(),
            )
            .await?;
            handle.send(Cmd::SetCluster { cluster: c.clone() }).await;
            Some(c)
        }
        _ => None,
    };

    let shutdown = CancellationToken::new();
    let http_listener = match args.http {
        Some(addr) => {
            if !auth.has_users()
                && !auth.is_replicated()
                && !auth::is_local(addr.ip())
                && !args.allow_anonymous
            {
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

    let metrics = match args.metrics {
        Some(addr) => {
            Some(metrics::serve(addr, handle.clone(), cluster.clone(), shutdown.clone()).await?)
        }
        None => None,
    };
    // The listeners are bound, so connections are taken (the kernel queues them until the
    // accept loops run just below).
    systemd::ready(&format!("listening on {}", args.listen));
    systemd::spawn_watchdog(shutdown.clone());
    let shared_cfg: server::SharedCfg = Arc::new(std::sync::RwLock::new(Arc::new(cfg.clone())));
    let ctx = session::Ctx::new(&cfg, auth);
    let http = http_listener.map(|l| {
        tokio::spawn(http::serve(
            l,
            handle.clone(),
            shared_cfg.clone(),
            ctx.clone(),
            shutdown.clone(),
        ))
    });
    let live = reload::Live {
        argv,
        settings: resolved.settings,
        started: cfg,
        log,
        broker: handle.clone(),
        cfg: shared_cfg.clone(),
        tls,
        data: data.clone(),
    };
    let signals = tokio::spawn(wait_for_signal(shutdown.clone(), live, signals));
    // A cluster node whose Raft stopped on a storage error stops too, with an error.
    let failed: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let watch_failed = cluster.clone().map(|c| {
        let (failed, shutdown) = (failed.clone(), shutdown.clone());
        tokio::spawn(async move {
            let why = c.failed().await;
            tracing::error!(
                "{why}: this node cannot go on in the cluster and stops; started again \
                 once its disk takes writes, it rejoins and catches up"
            );
            *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
            shutdown.cancel();
        })
    });
    let tracker = server::serve(
        listeners,
        handle.clone(),
        shared_cfg.clone(),
        args.max_connections.max(1),
        ctx,
        shutdown.clone(),
    )
    .await;
    signals.abort();
    if let Some(w) = watch_failed {
        w.abort();
    }
    systemd::stopping();
    if let Some(h) = http {
        // Long polls and streams end with the shutdown signal; a request in flight finishes.
        if tokio::time::timeout(Duration::from_secs(15), h)
            .await
            .is_err()
        {
            tracing::warn!("some HTTP requests did not finish in 15 s");
        }
    }
    // Each connection waits up to drain_timeout for its requests, then up to 2 s for its
    // peer to take the last frames; past that, the broker stops regardless.
    let drain = shared_cfg
        .read()
        .map(|c| c.drain_timeout)
        .unwrap_or(Duration::from_secs(5));
    tracing::info!("shutting down: finishing requests in flight (at most {drain:?})");
    if tokio::time::timeout(drain + Duration::from_secs(3), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish in {drain:?}");
    }
    if let Some(m) = metrics {
        let _ = tokio::time::timeout(Duration::from_secs(2), m).await;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    handle.send(Cmd::Shutdown { done: tx }).await;
    let flushed = rx.await.unwrap_or(false);
    drop(handle);
    let _ = broker_task.await;
    if let Some(c) = &cluster {
        c.shutdown().await;
    }
    if flushed {
        tracing::info!("stopped; everything acknowledged is on disk");
    } else {
        // Acknowledged messages were flushed when they were acknowledged; what failed now
        // is only what was never acknowledged.
        tracing::warn!("stopped; the last flush failed (nothing unacknowledged is promised)");
    }
    let failed = failed.lock().unwrap_or_else(|p| p.into_inner()).take();
    match failed {
        Some(why) => Err(anyhow::anyhow!(why)),
        None => Ok(()),
    }
}

/// How often a cluster node's store is written out (its durability is the Raft log's).
const REPLICA_FSYNC: Duration = Duration::from_millis(200);

/// The cluster flags, when momd runs in cluster mode (`Args::check` made sure all four are
/// given together).
fn cluster_settings(args: &Args) -> Option<cluster::Settings> {
    Some(cluster::Settings {
        cluster_id: args.cluster_id.clone()?,
        node_id: args.node_id?,
        peer_listen: args.peer_listen?,
        peers: args.peers.clone()?.0,
        client_addr: args.listen.to_string(),
        secret: None,
        tls: None,
        // The data dir's number (`cluster/identity.rs`), set once it is read.
        shards: Shards::ONE,
    })
}

/// The cluster secret of `--cluster-secret-file`, if given: read, checked, kept as a key.
fn cluster_secret(args: &Args) -> anyhow::Result<Option<Arc<mom_raft::net::Secret>>> {
    let Some(path) = &args.cluster_secret_file else {
        return Ok(None);
    };
    let bytes = std::fs::read(path)
        .with_context(|| format!("reading the cluster secret {}", path.display()))?;
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    let secret = mom_raft::net::Secret::new(&bytes[..end])
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            if m.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    "the cluster secret {} can be read by other users (chmod 600 it)",
                    path.display()
                );
            }
        }
    }
    Ok(Some(Arc::new(secret)))
}

/// Bind `--listen` (TLS when `tls` is given) and `--listen-plain`.
async fn listen(
    args: &Args,
    tls: Option<server::TlsSlot>,
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

/// The signals momd answers, taken (their default action, ending the process, replaced)
/// from the moment they are installed.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Option<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
            signal(SignalKind::user_defined1()),
        ) {
            (Ok(term), Ok(int), Ok(hup), Ok(usr1)) => Some(Signals {
                term,
                int,
                hup,
                usr1,
            }),
            _ => {
                tracing::warn!("cannot install signal handlers");
                None
            }
        }
    }
}

/// SIGTERM and SIGINT stop momd (a drain); SIGHUP reloads the configuration.
async fn wait_for_signal(
    shutdown: CancellationToken,
    mut live: reload::Live,
    signals: Option<Signals>,
) {
    let Some(Signals {
        mut term,
        mut int,
        mut hup,
        mut usr1,
    }) = signals
    else {
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                systemd::reloading();
                live.reload().await;
                systemd::ready("reloaded");
            }
            _ = usr1.recv() => {
                tracing::info!("SIGUSR1: taking a checkpoint for `momd backup`");
                let (tx, rx) = tokio::sync::oneshot::channel();
                live.broker.send(Cmd::Checkpoint { reply: tx }).await;
                if let Ok(Err(why)) | Err(why) = rx.await.map_err(|e| e.to_string()) {
                    tracing::error!("backup checkpoint failed: {why}");
                    backup::checkpoint_failed(&live.data, &why);
                }
            }
        }
    }
    shutdown.cancel();
}
