//! momctl, mom's command line. Flags are in `cli.rs`, one module per subcommand in `cmd/`,
//! the client library in `client/` (also used by momtui and the benchmarks).

mod cli;
mod cmd;
mod output;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use momctl::client::ConnectOptions;

use crate::cli::{Cli, Command};
use crate::cmd::Failure;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.cmd {
        clap_complete::generate(shell, &mut Cli::command(), "momctl", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return cmd::finish(Err(Failure::new(1, format!("cannot start: {e}")))),
    };
    let mut opts = ConnectOptions::new(cli.global.server.clone(), "momctl");
    opts.user = cli.global.user.clone();
    opts.password = cli.global.password.clone();
    let json = cli.global.json;
    let res = rt.block_on(async move {
        match cli.cmd {
            Command::Publish(a) => cmd::publish::run(&opts, a, json).await,
            Command::Subscribe(a) => cmd::subscribe::run(&opts, a, json).await,
            Command::Topic(t) => cmd::topic::run(&opts, t, json).await,
            Command::Recv(a) => cmd::recv::run(&opts, a, json).await,
            Command::Queue(q) => cmd::queue::run(&opts, q, json).await,
            Command::Request {
                topic,
                msg,
                timeout,
                headers,
            } => cmd::request::request(&opts, topic, msg, timeout, headers).await,
            Command::Reply { pattern, command } => {
                cmd::request::reply(&opts, pattern, command).await
            }
            Command::Unsubscribe { name, patterns } => {
                cmd::queue::unsubscribe(&opts, name, patterns, json).await
            }
            Command::Stats { watch } => cmd::stats::run(&opts, watch, json).await,
            Command::Ping { count } => cmd::ping::run(&opts, count, json).await,
            Command::Completions { .. } => Ok(()),
        }
    });
    let code = cmd::finish(res);
    // Do not wait for the stdin reader thread or idle connections.
    rt.shutdown_background();
    code
}
