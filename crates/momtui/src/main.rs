//! momtui, mom's live dashboard. State and its updates are in `app.rs` (pure), drawing in
//! `ui/` (pure), the network in `net.rs` (a tokio task the UI never waits for), and the
//! terminal's setup and restore here.

mod app;
mod net;
mod ui;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use crossterm::event::{DisableMouseCapture, EnableMouseCapture, Event as TermEvent, EventStream};
use crossterm::execute;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::app::{App, Event};

/// momtui: watch what a mom broker holds, live.
#[derive(Debug, Parser)]
#[command(
    name = "momtui",
    version,
    about = "Live dashboard of a mom broker: topics, subscriptions, clients and messages",
    after_help = "Examples:\n  momtui\n  momtui -s 10.0.0.5:7878 --buffer 5000\n  momtui -s broker:7878 --tls-ca ca.pem\n  momtui -s node1:7878,node2:7878,node3:7878\n  momtui --context prod      # a context saved by `momctl context add`\n  NO_COLOR=1 momtui\n\nPress ? inside for every key."
)]
struct Args {
    /// Broker address: HOST or HOST:PORT (default: the context's, else 127.0.0.1:7878), or
    /// a comma-separated list of them: the first that answers is used, and a reconnect moves
    /// on to the next.
    #[arg(short, long, env = "MOM_SERVER", value_name = "ADDR[,ADDR...]",
          value_parser = momctl::client::server_list_arg)]
    server: Option<String>,

    /// Messages of the live stream kept for display (older ones scroll away).
    #[arg(long, default_value_t = 1000)]
    buffer: usize,

    /// User name (for brokers with users).
    #[arg(long, env = "MOM_USER")]
    user: Option<String>,

    /// Password (for brokers with users).
    #[arg(long, env = "MOM_PASSWORD", hide_env_values = true)]
    password: Option<String>,

    /// A token from `momctl login` (by default the one it saved for the server is used).
    #[arg(long, env = "MOM_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Use a saved context (server, user, TLS settings): see `momctl context`.
    #[arg(long, env = "MOM_CONTEXT")]
    context: Option<String>,

    /// Speak TLS, trusting the CA certificate(s) in this PEM file.
    #[arg(long, env = "MOM_TLS_CA", value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,

    /// Speak TLS without checking the server's certificate (for testing only).
    #[arg(long, env = "MOM_TLS_INSECURE")]
    tls_insecure: bool,

    /// Speak TLS, trusting the system's CA certificates.
    #[arg(long, env = "MOM_TLS")]
    tls: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !std::io::stdout().is_terminal() {
        eprintln!("momtui: stdout is not a terminal; use `momctl stats` in scripts");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("momtui: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = rt.block_on(run(args));
    rt.shutdown_background();
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("momtui: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Puts the terminal back however the program ends (return, error, panic unwinding).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = execute!(std::io::stdout(), DisableMouseCapture);
        ratatui::restore();
        let _ = execute!(std::io::stdout(), crossterm::cursor::Show);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let inputs = momctl::profile::Inputs {
        server: args.server.clone(),
        default_server: mom_proto::DEFAULT_ADDR.to_string(),
        user: args.user.clone(),
        password: args.password.clone(),
        token: args.token.clone(),
        context: args.context.clone(),
        tls_ca: args.tls_ca.clone(),
        tls_insecure: args.tls_insecure,
        tls: args.tls,
        use_saved_token: true,
    };
    let mut opts = momctl::profile::resolve(inputs, "momtui", now_ms())
        .map_err(|e| anyhow::Error::msg(momctl::profile::is_usage(&e).unwrap_or(&e).to_string()))?;
    if let (Some(user), None, None) = (&opts.user, &opts.token, &opts.password) {
        // A user named, nothing saved for it: ask, as `momctl login` does, before the
        // screen is taken.
        let pw = rpassword::prompt_password(format!("password for {user}: ")).map_err(|e| {
            anyhow::anyhow!("no terminal to ask for the password ({e}): run `momctl login` first")
        })?;
        opts.password = Some(pw);
    }
    if opts.tls_insecure {
        // Now, while stderr is still the terminal's: not over the dashboard.
        momctl::client::tls::warn_insecure();
    }

    // ratatui::init also installs a panic hook that restores the terminal first.
    let mut terminal = ratatui::init();
    let _restore = Restore;
    execute!(std::io::stdout(), EnableMouseCapture)?;

    let (net_tx, mut net_rx) = mpsc::channel(64);
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let server = opts.server_list();
    let net = tokio::spawn(net::run(opts, net_tx, cmd_rx));

    let mut app = App::new(&server, args.buffer, color);
    app.update(Event::Tick(now_ms()));
    let mut keys = EventStream::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    while !app.quit {
        terminal.draw(|f| ui::draw(f, &mut app))?;
        let ev = tokio::select! {
            k = keys.next() => match k {
                Some(Ok(TermEvent::Key(k))) => Event::Key(k),
                Some(Ok(TermEvent::Mouse(m))) => Event::Mouse(m),
                Some(Ok(_)) => Event::Tick(now_ms()),
                Some(Err(e)) => return Err(e.into()),
                None => break,
            },
            n = net_rx.recv() => match n {
                Some(n) => Event::Net(n),
                None => break,
            },
            _ = tick.tick() => Event::Tick(now_ms()),
            _ = term.recv() => break,
            _ = hup.recv() => break,
        };
        for c in app.update(ev) {
            if cmd_tx.try_send(c).is_err() {
                app.set_error("busy; try again");
            }
        }
        if let Some(text) = app.clipboard.take() {
            copy_osc52(&text);
        }
    }
    net.abort();
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Put text on the clipboard of the terminal (and of the machine in front of it, over ssh
/// and in tmux with `set-clipboard on`): OSC 52.
fn copy_osc52(text: &str) {
    use base64::Engine;
    use std::io::Write;
    let b64 = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    let mut out = std::io::stdout();
    let _ = write!(out, "\x1b]52;c;{b64}\x07");
    let _ = out.flush();
}
