//! momcheck's command line.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;

/// The faults a cycle can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// kill -9 of momd: during publishes and acks, during topic and queue admin, and during
    /// recovery itself.
    Kill9,
    /// SIGSTOP, then SIGCONT.
    Pause,
    /// The data dir's filesystem filled up, then freed.
    DiskFull,
    /// Bit flips and truncation in segment files while momd is down.
    Corrupt,
    /// One hostile client case while the workload goes on.
    Hostile,
    /// A restart with momd's clock jumped by hours.
    Clock,
}

pub const ALL_FAULTS: [Fault; 6] = [
    Fault::Kill9,
    Fault::Pause,
    Fault::DiskFull,
    Fault::Corrupt,
    Fault::Hostile,
    Fault::Clock,
];

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill9 => "kill9",
            Fault::Pause => "pause",
            Fault::DiskFull => "diskfull",
            Fault::Corrupt => "corrupt",
            Fault::Hostile => "hostile",
            Fault::Clock => "clock",
        }
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        ALL_FAULTS
            .iter()
            .copied()
            .find(|f| f.name() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown fault {s:?}; faults are {}",
                    ALL_FAULTS.map(Fault::name).join(",")
                )
            })
    }
}

/// How `corrupt` damages a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CorruptMode {
    Flip,
    Truncate,
}

/// momcheck: run momd under a workload, inject faults and hostile clients, and count what
/// went missing.
#[derive(Debug, Parser)]
#[command(
    name = "momcheck",
    version,
    about = "Fault-injection checker of momd: publishers, queue consumers and watchers under \
             kill -9, pauses, a full disk, damaged data files, clock jumps and hostile \
             clients; then every acknowledged message is looked for",
    after_help = "Examples:\n  \
      momcheck --cycles 200 --faults kill9,pause,diskfull,corrupt,hostile,clock\n  \
      momcheck --seed 1234 --cycles 200            # re-run a failure: same seed, same faults\n  \
      momcheck --faults hostile --cycles 11 --small  # each hostile case once, scaled down\n  \
      momcheck --momd target/debug/momd --cycles 5 --json\n\n\
      The verdict is one line on stdout; details go to stderr. Exit 0 when nothing was lost, \
      duplicated or reordered and momd stayed within its bounds; 1 on any violation; 2 on \
      usage errors; 3 when the check itself could not run."
)]
pub struct Opts {
    /// The broker binary. Default: `momd` beside this executable.
    #[arg(long)]
    pub momd: Option<PathBuf>,

    /// Seed of every random choice (faults, their moments, damage, hostile cases). Default:
    /// random; printed at start and in the verdict.
    #[arg(long)]
    pub seed: Option<u64>,

    /// Fault cycles to run.
    #[arg(long, default_value_t = 20)]
    pub cycles: u32,

    /// Faults to inject, comma-separated, taken in turn in a seeded order:
    /// kill9, pause, diskfull, corrupt, hostile, clock.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill9,pause,diskfull,corrupt,hostile,clock"
    )]
    pub faults: Vec<Fault>,

    /// Publishing connections, each with its own message ids (re-sent with the same ids
    /// after a lost connection).
    #[arg(long, default_value_t = 4)]
    pub publishers: u32,

    /// Consumers of the durable queue bound to the workload's topics.
    #[arg(long, default_value_t = 3)]
    pub consumers: u32,

    /// Live watchers of the workload's topics (resuming after reconnects).
    #[arg(long, default_value_t = 2)]
    pub watchers: u32,

    /// Topics the publishers spread their messages over.
    #[arg(long, default_value_t = 4)]
    pub topics: u32,

    /// Target publish rate of all publishers together, messages per second.
    #[arg(long, default_value_t = 2000)]
    pub rate: u32,

    /// Peak RSS momd may reach (VmHWM, polled), a size such as 512MiB. Over it is a
    /// violation.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub max_rss: u64,

    /// Scale the hostile cases down (hundreds of connections and topics, not tens of
    /// thousands), as the short run in `cargo test` does.
    #[arg(long)]
    pub small: bool,

    /// Hostile cases to run, comma-separated, taken in turn in a seeded order (default:
    /// all): malformed-pre-hello, malformed-post-hello, stalled-frames, nested-msgpack,
    /// huge-headers, watch-patterns, many-topics-queues, idle-connections, unread-watcher,
    /// fast-publisher, unread-replies.
    #[arg(long, value_delimiter = ',')]
    pub hostile_cases: Vec<crate::hostile::Case>,

    /// How long each hostile case runs.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub hostile_time: Duration,

    /// What `corrupt` does to segment files: `flip` (bit flips anywhere: damage momd must
    /// report, never drop silently) and `truncate` (a file cut short, near its end or
    /// anywhere).
    #[arg(long, value_delimiter = ',', default_value = "flip,truncate")]
    pub corrupt: Vec<CorruptMode>,

    /// Size of the tmpfs the data dir lives on when `diskfull` is among the faults.
    #[arg(long, default_value = "2GiB", value_parser = parse_size)]
    pub disk_size: u64,

    /// Read everything back and check it every N cycles (0: only at the end).
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: u32,

    /// Keep the work dir (data, momd logs) when a violation is found. It is always kept
    /// when momcheck itself fails.
    #[arg(long)]
    pub keep: bool,

    /// Print the summary as one JSON object instead of the verdict line.
    #[arg(long)]
    pub json: bool,
}

impl Opts {
    /// The faults in the order given, without repeats.
    pub fn fault_list(&self) -> Vec<Fault> {
        let mut v: Vec<Fault> = Vec::new();
        for f in &self.faults {
            if !v.contains(f) {
                v.push(*f);
            }
        }
        v
    }

    /// The momd binary: `--momd`, else the one beside this executable.
    pub fn momd_bin(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.momd {
            anyhow::ensure!(p.is_file(), "--momd {}: no such file", p.display());
            return Ok(p.clone());
        }
        let exe = std::env::current_exe()?;
        let p = exe.with_file_name("momd");
        anyhow::ensure!(
            p.is_file(),
            "no momd beside {} (build it: cargo build --release -p momd), or pass --momd PATH",
            exe.display()
        );
        Ok(p)
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    mom_proto::parse::size(s)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration such as 5s or 500ms"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: units are ms, s, m")),
    };
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_and_durations_parse() {
        let o = Opts::try_parse_from(["momcheck", "--faults", "kill9,clock,kill9"]).unwrap();
        assert_eq!(o.fault_list(), vec![Fault::Kill9, Fault::Clock]);
        assert!(Opts::try_parse_from(["momcheck", "--faults", "meteor"]).is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("2h").is_err());
    }
}
