//! momcheck's command line.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;

/// The faults a cycle can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// kill -9 of momd: during publishes and acks, during topic and queue admin, and during
    /// recovery itself. In a cluster: of a random node, then it is started again.
    Kill9,
    /// SIGSTOP, then SIGCONT.
    Pause,
    /// The data dir's filesystem filled up, then freed. In a cluster: one node's.
    DiskFull,
    /// Bit flips and truncation in segment files while momd is down.
    Corrupt,
    /// One hostile client case while the workload goes on. In a cluster: against a node
    /// chosen at random.
    Hostile,
    /// A restart with momd's clock jumped by hours.
    Clock,
    /// Cluster: kill -9 of the data group's leader, then it is started again.
    LeaderKill9,
    /// Cluster: SIGSTOP of the data group's leader, then SIGCONT.
    LeaderPause,
    /// Cluster: every link of one node cut both ways (a full partition), then healed.
    Isolate,
    /// Cluster: what one node sends another is lost, the other way still passes.
    OneWay,
    /// Cluster: a fourth node joins, catches up, is checked, and leaves.
    JoinLeave,
}

/// The faults of one momd.
pub const ALL_FAULTS: [Fault; 6] = [
    Fault::Kill9,
    Fault::Pause,
    Fault::DiskFull,
    Fault::Corrupt,
    Fault::Hostile,
    Fault::Clock,
];

/// The faults of a cluster (`--cluster`) run when none are named.
pub const CLUSTER_FAULTS: [Fault; 7] = [
    Fault::LeaderKill9,
    Fault::Kill9,
    Fault::LeaderPause,
    Fault::Isolate,
    Fault::OneWay,
    Fault::JoinLeave,
    Fault::Hostile,
];

/// Faults a cluster run takes when named: `diskfull` fills one node's data dir, each a
/// tmpfs of its own (needs root, and memory for what the nodes write).
pub const CLUSTER_OPTIONAL: [Fault; 1] = [Fault::DiskFull];

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill9 => "kill9",
            Fault::Pause => "pause",
            Fault::DiskFull => "diskfull",
            Fault::Corrupt => "corrupt",
            Fault::Hostile => "hostile",
            Fault::Clock => "clock",
            Fault::LeaderKill9 => "leader-kill9",
            Fault::LeaderPause => "leader-pause",
            Fault::Isolate => "isolate",
            Fault::OneWay => "one-way",
            Fault::JoinLeave => "join-leave",
        }
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        ALL_FAULTS
            .iter()
            .chain(CLUSTER_FAULTS.iter())
            .copied()
            .find(|f| f.name() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown fault {s:?}; faults are {} (with --cluster: {}, and {})",
                    ALL_FAULTS.map(Fault::name).join(","),
                    CLUSTER_FAULTS.map(Fault::name).join(","),
                    CLUSTER_OPTIONAL.map(Fault::name).join(",")
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
      momcheck --momd target/debug/momd --cycles 5 --json\n  \
      momcheck --cluster --cycles 100              # three nodes, their leader killed, paused, cut off\n\n\
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

    /// Check a cluster instead of one momd: three nodes on 127.0.0.1, 127.0.0.2 and
    /// 127.0.0.3, every peer link through a proxy that can cut it one way or both. The
    /// publishers fail over between the nodes; at the end every node must hold every
    /// acknowledged message once, in the same order, and the queue's consumers (on any node)
    /// must have been given every one. No checkpoints (only the final check).
    #[arg(long)]
    pub cluster: bool,

    /// Faults to inject, comma-separated, taken in turn in a seeded order. One momd
    /// (default all): kill9, pause, diskfull, corrupt, hostile, clock. With --cluster
    /// (default all): leader-kill9, kill9 (a random node), leader-pause, isolate (one node
    /// cut off both ways), one-way (one direction between the leader and another node),
    /// join-leave (a fourth node joins, is checked, and leaves), hostile (the hostile
    /// cases against a random node).
    #[arg(long, value_delimiter = ',')]
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

    /// Peak RSS momd may reach (VmHWM, polled), a size such as 512MiB; with --cluster,
    /// each node. Over it is a violation.
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

    /// Size of the tmpfs the data dir lives on when `diskfull` is among the faults (with
    /// --cluster, each node's). Default: 2GiB; 8GiB with --cluster, whose nodes keep a
    /// snapshot and the Raft log beside the store (a tmpfs takes memory only for what is
    /// written).
    #[arg(long, value_parser = parse_size)]
    pub disk_size: Option<u64>,

    /// With --cluster: spread the nodes' topics over N data groups (momd `--data-groups`), each
    /// with its own leader, log and snapshots (the partitioned topic's partitions spread
    /// over them). With more than one the workload has no queue (queues are not yet spread
    /// over several groups): publishers and watchers only.
    #[arg(long, default_value_t = 1)]
    pub data_groups: u16,

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
    /// The faults in the order given, without repeats; all the mode's faults if none was
    /// given.
    pub fn fault_list(&self) -> Vec<Fault> {
        if self.faults.is_empty() {
            let mode = self.mode_faults();
            return mode.to_vec();
        }
        let mut v: Vec<Fault> = Vec::new();
        for f in &self.faults {
            if !v.contains(f) {
                v.push(*f);
            }
        }
        v
    }

    /// The faults this mode (one momd, or `--cluster`) can inject.
    fn mode_faults(&self) -> &'static [Fault] {
        if self.cluster {
            &CLUSTER_FAULTS
        } else {
            &ALL_FAULTS
        }
    }

    /// The tmpfs size of a data dir for `diskfull` (`--disk-size`).
    pub fn disk_size(&self) -> u64 {
        self.disk_size
            .unwrap_or(if self.cluster { 8 << 30 } else { 2 << 30 })
    }

    /// A fault of the other mode is a usage error.
    pub fn validate(&self) -> Result<(), String> {
        let mode = self.mode_faults();
        let optional: &[Fault] = if self.cluster { &CLUSTER_OPTIONAL } else { &[] };
        match self
            .faults
            .iter()
            .find(|f| !mode.contains(f) && !optional.contains(f))
        {
            None => Ok(()),
            Some(f) if self.cluster => Err(format!(
                "--faults {}: a fault of one momd; with --cluster the faults are {}",
                f.name(),
                mode.iter().map(|f| f.name()).collect::<Vec<_>>().join(",")
            )),
            Some(f) => Err(format!(
                "--faults {}: a cluster fault; add --cluster, or use {}",
                f.name(),
                mode.iter().map(|f| f.name()).collect::<Vec<_>>().join(",")
            )),
        }
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
        let o = Opts::try_parse_from(["momcheck"]).unwrap();
        assert_eq!(o.fault_list(), ALL_FAULTS.to_vec());
        let o = Opts::try_parse_from(["momcheck", "--cluster"]).unwrap();
        assert_eq!(o.fault_list(), CLUSTER_FAULTS.to_vec());
        let o = Opts::try_parse_from(["momcheck", "--cluster", "--faults", "clock"]).unwrap();
        assert!(o.validate().is_err());
        let o = Opts::try_parse_from(["momcheck", "--faults", "one-way"]).unwrap();
        assert!(o.validate().is_err());
        let o = Opts::try_parse_from(["momcheck", "--cluster", "--faults", "isolate,kill9"]);
        assert!(o.unwrap().validate().is_ok());
        let o = Opts::try_parse_from(["momcheck", "--cluster", "--faults", "hostile"]);
        assert!(o.unwrap().validate().is_ok());
        // A full disk in a cluster when named, not by default; each node's tmpfs larger.
        let o = Opts::try_parse_from(["momcheck", "--cluster", "--faults", "diskfull"]).unwrap();
        assert!(o.validate().is_ok());
        assert!(!CLUSTER_FAULTS.contains(&Fault::DiskFull));
        assert_eq!(o.disk_size(), 8 << 30);
        let o = Opts::try_parse_from(["momcheck", "--disk-size", "256MiB"]).unwrap();
        assert_eq!(o.disk_size(), 256 << 20);
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("2h").is_err());
    }
}
