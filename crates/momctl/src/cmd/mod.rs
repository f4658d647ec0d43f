//! One module per subcommand.

/// `println!` that returns the write error instead of panicking, so a closed stdout ends a
/// command quietly (see [`Failure`]'s `From<io::Error>`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)?
    }};
}

pub mod ping;
pub mod publish;
pub mod queue;
pub mod recv;
pub mod request;
pub mod stats;
pub mod subscribe;
pub mod topic;

use std::process::ExitCode;

use momctl::client::ClientError;

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
