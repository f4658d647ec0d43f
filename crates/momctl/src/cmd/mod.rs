//! One module per subcommand.

/// `println!` that returns the write error instead of panicking, so a closed stdout ends a
/// command quietly (see [`Failure`]'s `From<io::Error>`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)?
    }};
}

pub mod ack;
pub mod auth;
pub mod bench;
pub mod client;
pub mod cluster;
pub mod context;
pub mod exec;
pub mod listing;
pub mod ping;
pub mod pipe;
pub mod publish;
pub mod queue;
pub mod recv;
pub mod request;
pub mod stats;
pub mod subscribe;
pub mod topic;

use std::process::ExitCode;
use std::time::Duration;

use momctl::client::{Client, ClientError, ConnectOptions, EXIT_CONNECTION_LOST};

/// How a command ends: an exit code and, for failures, the one-line reason.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::new(e.exit_code(), e.to_string())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        if is_broken_pipe(&e) {
            // stdout was closed (`| head`): not a failure, and nothing to say.
            return Failure::new(0, "");
        }
        Failure::new(1, e.to_string())
    }
}

pub type CmdResult = Result<(), Failure>;

pub fn finish(res: CmdResult) -> ExitCode {
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) if f.code == 0 => ExitCode::SUCCESS,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("momctl: {}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}

/// Is this write error a closed stdout (`| head`)? Then the command ends quietly.
pub fn is_broken_pipe(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}

/// A queue name is checked before anything is sent: topic rules, not reserved.
pub fn queue_name_ok(name: &str) -> CmdResult {
    mom_proto::topic::validate_publish_topic(name)
        .map_err(|e| Failure::new(2, e.to_string().replace("topic name", "queue name")))
}

/// A pull (`fetch`) in flight, kept across the turns of a `select!` loop: a fetch is not
/// cancel-safe (what the broker hands it would stay leased to nobody).
pub type Pull = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<mom_proto::Message>, ClientError>> + Send>,
>;

/// What a long-running command does when its connection is lost.
#[derive(Debug, Clone)]
pub struct Reconnect {
    pub enabled: bool,
    /// Give up after this long without a connection; zero: never.
    pub give_up_after: Duration,
    /// The command's own `--timeout`: reconnecting stops there too (exit 3).
    pub deadline: Option<tokio::time::Instant>,
    /// Cancelled when the command is asked to stop (a worker's SIGTERM or Ctrl-C).
    pub stop: Option<tokio_util::sync::CancellationToken>,
}

impl Reconnect {
    pub fn until(mut self, deadline: Option<tokio::time::Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Connect again after `lost`, the connection of `from`, with backoff (0.1 s doubling
    /// to 2 s). Each attempt goes through the server list starting with the server after
    /// `from`'s, so a node that went away is tried last. Without reconnecting, or once it
    /// gives up, the failure says the connection was lost (exit 8) and `what` (e.g. how
    /// many messages were handled); past the command's deadline it is a timeout (exit 3).
    pub async fn again(
        &self,
        opts: &ConnectOptions,
        from: &Client,
        lost: &ClientError,
        what: &str,
    ) -> Result<Client, Failure> {
        let fail = |code: u8, extra: &str| {
            let mut msg = lost.to_string();
            if !what.is_empty() {
                msg = format!("{msg}; {what}");
            }
            Failure::new(code, format!("{msg}{extra}"))
        };
        if !self.enabled {
            return Err(fail(EXIT_CONNECTION_LOST, ""));
        }
        let opts = opts.starting_after(from.server());
        if opts.servers.len() > 1 {
            eprintln!(
                "momctl: {lost} ({}); reconnecting to {}",
                from.server(),
                opts.servers.join(", ")
            );
        } else {
            eprintln!("momctl: {lost}; reconnecting to {}", opts.server_list());
        }
        let started = tokio::time::Instant::now();
        let never = started + Duration::from_secs(3600 * 24 * 365);
        let stop = self.stop.clone().unwrap_or_default();
        let mut wait = Duration::from_millis(100);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = tokio::time::sleep_until(self.deadline.unwrap_or(never)), if self.deadline.is_some() => {
                    return Err(fail(3, "; timed out while reconnecting"));
                }
                _ = stop.cancelled(), if self.stop.is_some() => {
                    return Err(fail(EXIT_CONNECTION_LOST, "; stopped while reconnecting"));
                }
            }
            match Client::connect(&opts).await {
                Ok(c) => {
                    eprintln!("momctl: reconnected to {}", c.server());
                    return Ok(c);
                }
                Err(e) => {
                    if !self.give_up_after.is_zero() && started.elapsed() >= self.give_up_after {
                        return Err(fail(
                            EXIT_CONNECTION_LOST,
                            &format!(
                                "; gave up reconnecting after {} ({e})",
                                humantime::format_duration(self.give_up_after)
                            ),
                        ));
                    }
                }
            }
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }
}

/// `1 message`, `2 messages`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// Parse a delivery id `TOPIC:SEQ` (the seq after the last colon).
pub fn parse_delivery(s: &str) -> Result<mom_proto::MsgKey, Failure> {
    let bad = || Failure::new(2, format!("{s:?} is not a delivery id: expected TOPIC:SEQ"));
    let (topic, seq) = s.trim().rsplit_once(':').ok_or_else(bad)?;
    let seq = seq.parse::<u64>().map_err(|_| bad())?;
    if topic.is_empty() {
        return Err(bad());
    }
    Ok(mom_proto::MsgKey {
        topic: topic.to_string(),
        seq,
    })
}
