//! The config file (TOML) under the flags: precedence is flag > `MOMD_*` environment > file >
//! built-in default. The file's values become the flags' defaults before clap parses, so a
//! key takes exactly what its flag takes (`max_frame = "16MiB"`, `fsync = "batch=5"`), is
//! checked by the same parser, and clap's `value_source` still tells flag and environment
//! apart; a default that came from the file is then reported as the file's, with its line.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use serde::Deserialize;
use toml::Spanned;

use crate::config::Args;

/// The file read when neither `--config` nor `MOMD_CONFIG` names one, if it exists.
pub const DEFAULT_PATH: &str = "/etc/mom/momd.toml";

type Key = Option<Spanned<toml::Value>>;

/// Every key the file may hold: one per flag of `momd` (tests check that none is missing,
/// and that dist/momd.toml names each). Unknown keys are refused, so a typo is an error,
/// not a setting silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Key,
    listen_plain: Key,
    tls_cert: Key,
    tls_key: Key,
    /// The HTTP API's listener (`--http`).
    http: Key,
    metrics: Key,
    metrics_topics: Key,
    data: Key,
    fsync: Key,
    max_frame: Key,
    max_payload: Key,
    max_inflight: Key,
    frame_timeout: Key,
    frame_budget: Key,
    inflight_budget: Key,
    write_timeout: Key,
    max_connections: Key,
    max_connections_per_user: Key,
    watch_buffer: Key,
    allow_anonymous: Key,
    token_ttl: Key,
    dedupe_window: Key,
    max_msgs: Key,
    max_bytes: Key,
    max_age: Key,
    max_topics: Key,
    topic_create_rate: Key,
    topic_create_burst: Key,
    cache_mb: Key,
    min_free_disk: Key,
    log_level: Key,
    log_format: Key,
    drain_timeout: Key,
    cluster_id: Key,
    node_id: Key,
    peer_listen: Key,
    peers: Key,
    data_groups: Key,
    cluster_secret_file: Key,
    peer_tls_cert: Key,
    peer_tls_key: Key,
    peer_tls_ca: Key,
}

impl FileConfig {
    fn entries(self) -> Vec<(&'static str, Spanned<toml::Value>)> {
        let FileConfig {
            listen,
            listen_plain,
            tls_cert,
            tls_key,
            http,
            metrics,
            metrics_topics,
            data,
            fsync,
            max_frame,
            max_payload,
            max_inflight,
            frame_timeout,
            frame_budget,
            inflight_budget,
            write_timeout,
            max_connections,
            max_connections_per_user,
            watch_buffer,
            allow_anonymous,
            token_ttl,
            dedupe_window,
            max_msgs,
            max_bytes,
            max_age,
            max_topics,
            topic_create_rate,
            topic_create_burst,
            cache_mb,
            min_free_disk,
            log_level,
            log_format,
            drain_timeout,
            cluster_id,
            node_id,
            peer_listen,
            peers,
            data_groups,
            cluster_secret_file,
            peer_tls_cert,
            peer_tls_key,
            peer_tls_ca,
        } = self;
        [
            ("listen", listen),
            ("listen_plain", listen_plain),
            ("tls_cert", tls_cert),
            ("tls_key", tls_key),
            ("http", http),
            ("metrics", metrics),
            ("metrics_topics", metrics_topics),
            ("data", data),
            ("fsync", fsync),
            ("max_frame", max_frame),
            ("max_payload", max_payload),
            ("max_inflight", max_inflight),
            ("frame_timeout", frame_timeout),
            ("frame_budget", frame_budget),
            ("inflight_budget", inflight_budget),
            ("write_timeout", write_timeout),
            ("max_connections", max_connections),
            ("max_connections_per_user", max_connections_per_user),
            ("watch_buffer", watch_buffer),
            ("allow_anonymous", allow_anonymous),
            ("token_ttl", token_ttl),
            ("dedupe_window", dedupe_window),
            ("max_msgs", max_msgs),
            ("max_bytes", max_bytes),
            ("max_age", max_age),
            ("max_topics", max_topics),
            ("topic_create_rate", topic_create_rate),
            ("topic_create_burst", topic_create_burst),
            ("cache_mb", cache_mb),
            ("min_free_disk", min_free_disk),
            ("log_level", log_level),
            ("log_format", log_format),
            ("drain_timeout", drain_timeout),
            ("cluster_id", cluster_id),
            ("node_id", node_id),
            ("peer_listen", peer_listen),
            ("peers", peers),
            ("data_groups", data_groups),
            ("cluster_secret_file", cluster_secret_file),
            ("peer_tls_cert", peer_tls_cert),
            ("peer_tls_key", peer_tls_key),
            ("peer_tls_ca", peer_tls_ca),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }
}

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env(String),
    File { path: PathBuf, line: usize },
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag => f.write_str("flag"),
            Source::Env(var) => write!(f, "env {var}"),
            Source::File { path, line } => write!(f, "file {}:{line}", path.display()),
            Source::Default => f.write_str("default"),
        }
    }
}

/// One setting as resolved: its key, its value as text (None: unset) and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub value: Option<String>,
    pub source: Source,
}

/// The parsed flags together with where each came from.
#[derive(Debug)]
pub struct Resolved {
    pub args: Args,
    pub settings: Vec<Setting>,
    /// The config file read, if any.
    pub file: Option<PathBuf>,
}

impl Resolved {
    #[cfg(test)]
    pub fn value(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|s| s.key == key)
            .and_then(|s| s.value.as_deref())
    }
}

/// Why the configuration cannot be used.
#[derive(Debug)]
pub enum ConfigError {
    /// From the file: names the key (when the error is about one) and the line.
    File {
        path: PathBuf,
        line: Option<usize>,
        key: Option<String>,
        message: String,
    },
    /// From the command line or the environment: clap's own message and exit code.
    Args(clap::Error),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::File {
                path,
                line,
                key,
                message,
            } => {
                write!(f, "{}", path.display())?;
                if let Some(line) = line {
                    write!(f, ":{line}")?;
                }
                if let Some(key) = key {
                    write!(f, ": key `{key}`")?;
                }
                write!(f, ": {message}")
            }
            ConfigError::Args(e) => write!(f, "{e}"),
        }
    }
}

/// The args that are settings (every flag but `--config`, `--help` and `--version`).
pub fn setting_ids() -> Vec<String> {
    Args::command()
        .get_arguments()
        .map(|a| a.get_id().as_str().to_string())
        .filter(|id| !matches!(id.as_str(), "config" | "help" | "version"))
        .collect()
}

/// Which file to read: `--config`/`MOMD_CONFIG`, else [`DEFAULT_PATH`] if it exists.
/// `--config` is read from argv by hand: its value decides the defaults clap parses with.
fn config_path(argv: &[OsString]) -> Option<PathBuf> {
    let mut it = argv.iter().skip(1);
    let mut found = None;
    while let Some(a) = it.next() {
        let Some(s) = a.to_str() else { continue };
        if s == "--" {
            break;
        }
        if s == "--config" {
            found = it.next().map(PathBuf::from);
        } else if let Some(v) = s.strip_prefix("--config=") {
            found = Some(PathBuf::from(v));
        }
    }
    found
        .or_else(|| std::env::var_os("MOMD_CONFIG").map(PathBuf::from))
        .or_else(|| {
            let p = Path::new(DEFAULT_PATH);
            p.exists().then(|| p.to_path_buf())
        })
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).unwrap_or(text).matches('\n').count() + 1
}

/// A key's value as its flag would take it on the command line.
fn as_flag_text(v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        other => Err(format!(
            "expected a string, a number or a boolean, found {}",
            other.type_str()
        )),
    }
}

/// Read and check the file: every key known, every value taken by its flag's parser.
fn read_file(
    path: &Path,
    cmd: &clap::Command,
) -> Result<Vec<(&'static str, String, usize)>, ConfigError> {
    let err = |line, key: Option<&str>, message: String| ConfigError::File {
        path: path.to_path_buf(),
        line,
        key: key.map(str::to_string),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(None, None, e.to_string()))?;
    let file: FileConfig = toml::from_str(&text).map_err(|e| {
        let line = e.span().map(|s| line_of(&text, s.start));
        let key = e
            .span()
            .and_then(|s| text.get(s))
            .filter(|k| !k.is_empty() && !k.contains(['\n', '=']))
            .map(|k| k.trim_matches('"').to_string());
        err(line, key.as_deref(), e.message().trim().to_string())
    })?;
    let mut out = Vec::new();
    for (key, value) in file.entries() {
        let line = line_of(&text, value.span().start);
        let Some(arg) = cmd.get_arguments().find(|a| a.get_id() == key) else {
            return Err(err(
                Some(line),
                Some(key),
                format!("this momd has no --{} flag", key.replace('_', "-")),
            ));
        };
        let text_value =
            as_flag_text(value.get_ref()).map_err(|m| err(Some(line), Some(key), m))?;
        check_value(arg, &text_value).map_err(|m| err(Some(line), Some(key), m))?;
        out.push((key, text_value, line));
    }
    Ok(out)
}

/// Run `value` through its flag's own parser, alone (no environment, no other flags).
fn check_value(arg: &clap::Arg, value: &str) -> Result<(), String> {
    if !arg.get_action().takes_values() {
        return match value {
            "true" | "false" => Ok(()),
            _ => Err(format!("expected true or false, found {value:?}")),
        };
    }
    let alone = arg.clone().env(None::<&str>).required(false).global(false);
    let long = arg.get_long().unwrap_or(arg.get_id().as_str()).to_string();
    clap::Command::new("momd")
        .no_binary_name(true)
        .arg(alone)
        .try_get_matches_from([format!("--{long}={value}")])
        .map(|_| ())
        .map_err(|e| clap_message(&e))
}

/// clap's error in one line, without its "error: " prefix and usage hints.
fn clap_message(e: &clap::Error) -> String {
    let s = e.render().to_string();
    let first = s.lines().next().unwrap_or_default();
    first.trim_start_matches("error: ").trim().to_string()
}

/// Parse `argv` with the environment and the config file under it.
pub fn resolve(argv: Vec<OsString>) -> Result<Resolved, ConfigError> {
    let path = config_path(&argv);
    let mut cmd = Args::command();
    let mut from_file = Vec::new();
    if let Some(path) = &path {
        from_file = read_file(path, &cmd)?;
        for (key, value, _) in &from_file {
            cmd = cmd.mut_arg(*key, |a| a.default_value(value.clone()));
        }
    }
    let matches = cmd.try_get_matches_from(argv).map_err(ConfigError::Args)?;
    let args = Args::from_arg_matches(&matches).map_err(ConfigError::Args)?;
    let settings = settings(&matches, path.as_deref(), &from_file);
    Ok(Resolved {
        args,
        settings,
        file: path,
    })
}

fn settings(
    matches: &ArgMatches,
    path: Option<&Path>,
    from_file: &[(&'static str, String, usize)],
) -> Vec<Setting> {
    let cmd = Args::command();
    setting_ids()
        .into_iter()
        .map(|key| {
            let value = matches
                .get_raw(&key)
                .map(|mut v| v.next().unwrap_or_default().to_string_lossy().into_owned());
            let source = match matches.value_source(&key) {
                Some(ValueSource::CommandLine) => Source::Flag,
                Some(ValueSource::EnvVariable) => {
                    let var = cmd
                        .get_arguments()
                        .find(|a| a.get_id() == key.as_str())
                        .and_then(|a| a.get_env())
                        .map(|e| e.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    Source::Env(var)
                }
                _ => match (from_file.iter().find(|(k, _, _)| *k == key), path) {
                    (Some((_, _, line)), Some(path)) => Source::File {
                        path: path.to_path_buf(),
                        line: *line,
                    },
                    _ => Source::Default,
                },
            };
            Setting { key, value, source }
        })
        .collect()
}

/// `momd check-config`: the effective settings as TOML, each with its source.
pub fn render(resolved: &Resolved) -> String {
    let mut out = String::new();
    match &resolved.file {
        Some(p) => out.push_str(&format!("# config file: {}\n", p.display())),
        None => out.push_str(&format!(
            "# config file: none ({DEFAULT_PATH} does not exist; --config names one)\n"
        )),
    }
    for s in &resolved.settings {
        let line = match &s.value {
            Some(v) if v.parse::<i64>().is_ok() || v == "true" || v == "false" => {
                format!("{} = {v}", s.key)
            }
            Some(v) => format!(
                "{} = {}",
                s.key,
                serde_json::to_string(v).unwrap_or_default()
            ),
            None => format!("# {} (unset)", s.key),
        };
        out.push_str(&format!("{line:<44} # {}\n", s.source));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(text.as_bytes()).expect("write");
        f
    }

    fn argv(extra: &[&str]) -> Vec<OsString> {
        std::iter::once("momd")
            .chain(extra.iter().copied())
            .map(OsString::from)
            .collect()
    }

    #[test]
    fn every_flag_is_a_file_key() {
        let doc: String = setting_ids()
            .iter()
            .map(|k| format!("{k} = \"x\"\n"))
            .collect();
        toml::from_str::<FileConfig>(&doc).expect("every flag has a key in FileConfig");
    }

    #[test]
    fn file_values_are_defaults_under_flags() {
        let f = file("max_frame = \"16MiB\"\nfsync = \"never\"\nmax_msgs = 7\n");
        let path = f.path().to_str().expect("utf-8 temp path");
        let r = resolve(argv(&["--config", path, "--max-msgs", "9"])).expect("valid");
        assert_eq!(r.args.max_frame, 16 << 20);
        assert_eq!(r.args.max_msgs, 9);
        assert_eq!(r.args.fsync, crate::config::FsyncMode::Never);
        let src = |k: &str| {
            r.settings
                .iter()
                .find(|s| s.key == k)
                .map(|s| s.source.clone())
                .expect("known key")
        };
        assert_eq!(src("max_msgs"), Source::Flag);
        assert_eq!(
            src("fsync"),
            Source::File {
                path: f.path().to_path_buf(),
                line: 2
            }
        );
        assert_eq!(src("cache_mb"), Source::Default);
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let f = file("listen = \"127.0.0.1:7000\"\n\nmax_fram = 5\n");
        let path = f.path().to_str().expect("utf-8 temp path");
        let e = resolve(argv(&["--config", path])).expect_err("unknown key");
        let msg = e.to_string();
        assert!(msg.contains(":3:") && msg.contains("max_fram"), "{msg}");
    }

    #[test]
    fn a_bad_value_is_named_with_its_key_and_line() {
        let f = file("# a comment\nfsync = \"sometimes\"\n");
        let path = f.path().to_str().expect("utf-8 temp path");
        let e = resolve(argv(&["--config", path])).expect_err("bad value");
        let msg = e.to_string();
        assert!(
            msg.contains(":2:") && msg.contains("key `fsync`") && msg.contains("sometimes"),
            "{msg}"
        );
        let f = file("max_frame = [1]\n");
        let path = f.path().to_str().expect("utf-8 temp path");
        let msg = resolve(argv(&["--config", path]))
            .expect_err("array")
            .to_string();
        assert!(
            msg.contains(":1:") && msg.contains("key `max_frame`"),
            "{msg}"
        );
    }

    #[test]
    fn dist_momd_toml_parses_and_names_every_key() {
        let dist = concat!(env!("CARGO_MANIFEST_DIR"), "/../../dist/momd.toml");
        let text = std::fs::read_to_string(dist).expect("dist/momd.toml");
        toml::from_str::<FileConfig>(&text).expect("dist/momd.toml parses");
        // Every key appears, set or commented out (`# key =`), so it cannot drift.
        for key in setting_ids() {
            let set = format!("\n{key} = ");
            let commented = format!("\n# {key} = ");
            assert!(
                text.contains(&set) || text.contains(&commented),
                "dist/momd.toml does not name `{key}`"
            );
        }
        let r = resolve(argv(&["--config", dist])).expect("dist/momd.toml is valid");
        // Its values are the defaults.
        for s in r.settings.iter().filter(|s| s.source != Source::Default) {
            let d = resolve(argv(&["--config", "/dev/null"])).expect("defaults");
            assert_eq!(
                d.value(&s.key).map(str::to_string),
                s.value,
                "dist/momd.toml sets `{}` to other than its default",
                s.key
            );
        }
    }
}
