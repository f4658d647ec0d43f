//! momctl, mom's command line. Flags are in `cli.rs`, one module per subcommand in `cmd/`,
//! the client library in `client/` (also used by momtui and the benchmarks).

mod cli;
mod cmd;
mod complete;
mod output;

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command};
use crate::cmd::Failure;

fn main() -> ExitCode {
    // `COMPLETE=bash momctl …`: the shell asks for completions (topic and queue names too).
    clap_complete::CompleteEnv::with_factory(Cli::command).complete();
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let given = |id: &str| {
        matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    if matches.value_source("password") == Some(ValueSource::CommandLine) {
        eprintln!(
            "momctl: warning: a password on the command line shows in `ps`; use MOM_PASSWORD, \
             --password-stdin or `momctl login`"
        );
    }
    let server_given = given("server");
    if let Command::Completions { shell } = cli.cmd {
        // Into a buffer first: the generator panics on a closed stdout (`| head`).
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "momctl", &mut script);
        let res = std::io::Write::write_all(&mut std::io::stdout(), &script);
        return cmd::finish(res.map_err(Failure::from));
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return cmd::finish(Err(Failure::new(1, format!("cannot start: {e}")))),
    };
    let g = &cli.global;
    let inputs = momctl::profile::Inputs {
        server: server_given.then(|| g.server.clone()),
        default_server: mom_proto::DEFAULT_ADDR.to_string(),
        user: g.user.clone(),
        password: g.password.clone(),
        token: g.token.clone(),
        context: g.context.clone(),
        tls_ca: g.tls_ca.clone(),
        tls_insecure: g.tls_insecure,
        tls: g.tls,
        use_saved_token: true,
    };
    let now = now_ms();
    if let Command::Context(c) = cli.cmd {
        let given = cmd::context::Given {
            server: g.server.clone(),
            user: g.user.clone(),
            tls_ca: g.tls_ca.clone(),
            tls_insecure: g.tls_insecure,
            tls: g.tls,
        };
        return cmd::finish(cmd::context::run(c, given, cli.global.json));
    }
    // `login` asks for a new token: an old saved one (even expired) plays no part.
    let mut inputs = inputs;
    inputs.use_saved_token = !matches!(cli.cmd, Command::Login(_));
    let opts = match momctl::profile::resolve(inputs, client_name(&cli.cmd), now) {
        Ok(o) => o,
        Err(e) => {
            let f = match momctl::profile::is_usage(&e) {
                Some(m) => Failure::new(2, m),
                None => Failure::new(5, e),
            };
            return cmd::finish(Err(f));
        }
    };
    let json = cli.global.json;
    // Long-running commands reconnect unless told not to; publish only when asked (its
    // resends need ids, see `publish --help`).
    let reconnect = |r: &cli::ReconnectArgs, default: bool| cmd::Reconnect {
        enabled: !r.no_reconnect && (r.reconnect || default),
        give_up_after: r.reconnect_for,
        deadline: None,
        stop: None,
    };
    let res = rt.block_on(async move {
        match cli.cmd {
            Command::Publish(a) => {
                let r = reconnect(&a.reconnect, false);
                cmd::publish::run(&opts, a, json, r).await
            }
            Command::Subscribe(a) => {
                let r = reconnect(&a.reconnect, true);
                cmd::subscribe::run(&opts, a, json, r).await
            }
            Command::Topic(t) => cmd::topic::run(&opts, t, json).await,
            Command::Recv(a) => {
                let r = reconnect(&a.reconnect, a.follow || a.exec);
                cmd::recv::run(&opts, a, json, r).await
            }
            Command::Ack { name, deliveries } => cmd::ack::run(&opts, name, deliveries, None).await,
            Command::Nack {
                name,
                deliveries,
                delay,
            } => cmd::ack::run(&opts, name, deliveries, Some(delay)).await,
            Command::Queue(q) => cmd::queue::run(&opts, q, json).await,
            Command::Request {
                topic,
                msg,
                timeout,
                headers,
                replies,
            } => cmd::request::request(&opts, topic, msg, timeout, headers, replies, json).await,
            Command::Reply {
                pattern,
                all,
                reconnect: r,
                command,
            } => cmd::request::reply(&opts, pattern, all, command, reconnect(&r, true)).await,
            Command::Unsubscribe { name, patterns } => {
                cmd::queue::unsubscribe(&opts, name, patterns, json).await
            }
            Command::Client(c) => cmd::client::run(&opts, c, json).await,
            Command::Stats { watch, limit } => cmd::stats::run(&opts, watch, limit, json).await,
            Command::Ping { count } => cmd::ping::run(&opts, count, json).await,
            Command::Cluster(c) => cmd::cluster::run(&opts, c, json).await,
            Command::Bench(b) => cmd::bench::run(&opts, b, json).await,
            Command::Login(a) => cmd::auth::login(&opts, a, json, now).await,
            Command::Logout => cmd::auth::logout(&opts, now).await,
            Command::Whoami => cmd::auth::whoami(&opts, json).await,
            Command::User(u) => cmd::auth::user(&opts, u, json).await,
            Command::Context(_) => Ok(()),
            Command::Completions { .. } => Ok(()),
        }
    });
    let code = cmd::finish(res);
    // Do not wait for the stdin reader thread or idle connections.
    rt.shutdown_background();
    code
}

/// The name this connection gives the broker: the command and what it works on
/// (`momctl recv jobs`), so `stats` and momtui tell clients apart.
fn client_name(cmd: &Command) -> String {
    let (verb, obj): (&str, Option<&str>) = match cmd {
        Command::Publish(a) => ("publish", Some(&a.topic)),
        Command::Subscribe(a) => ("subscribe", a.patterns.first().map(String::as_str)),
        Command::Recv(a) => ("recv", Some(&a.name)),
        Command::Ack { name, .. } => ("ack", Some(name)),
        Command::Nack { name, .. } => ("nack", Some(name)),
        Command::Unsubscribe { name, .. } => ("unsubscribe", Some(name)),
        Command::Queue(_) => ("queue", None),
        Command::Request { topic, .. } => ("request", Some(topic)),
        Command::Reply { pattern, .. } => ("reply", Some(pattern)),
        Command::Topic(_) => ("topic", None),
        Command::Client(_) => ("client", None),
        Command::Stats { .. } => ("stats", None),
        Command::Ping { .. } => ("ping", None),
        Command::Cluster(_) => ("cluster", None),
        Command::Bench(_) => ("bench", None),
        Command::Login(_) => ("login", None),
        Command::Logout => ("logout", None),
        Command::Whoami => ("whoami", None),
        Command::User(_) => ("user", None),
        Command::Context(_) => ("context", None),
        Command::Completions { .. } => ("completions", None),
    };
    let mut name = format!("momctl {verb}");
    if let Some(o) = obj {
        name.push(' ');
        name.push_str(o);
    }
    // The broker's limit on client names is 256 bytes.
    if name.len() > 200 {
        let mut cut = 200;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    name
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
