//! What momctl and momtui keep between runs, in the user's config dir (`~/.config/mom` on
//! Linux, or `MOM_CONFIG_DIR`): saved contexts (`contexts.json`: a server, a user and TLS
//! settings under a name, like `nats context`) and the tokens `momctl login` got
//! (`tokens.json`, one per server, readable by the user only). And how a connection's
//! credentials are chosen from flags, environment, context and saved token.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::client::ConnectOptions;

const CONTEXTS: &str = "contexts.json";
const TOKENS: &str = "tokens.json";

/// Where momctl keeps its files.
pub fn config_dir() -> Result<PathBuf, String> {
    if let Some(d) = std::env::var_os("MOM_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    directories::ProjectDirs::from("", "", "mom")
        .map(|d| d.config_dir().to_path_buf())
        .ok_or_else(|| "no home directory for momctl's config: set MOM_CONFIG_DIR".to_string())
}

/// A named set of connection settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// One server, or a comma-separated list to fail over between (as `-s` takes it).
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls_insecure: bool,
    /// TLS with the system's CA certificates.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Contexts {
    /// The context used when none is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// A token `momctl login` got, kept per server and user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedToken {
    pub user: String,
    pub token: String,
    /// When it expires, ms since the epoch.
    pub expires: u64,
}

/// The tokens saved for one server: one per user, and who logged in last (used when no
/// user is named).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerTokens {
    #[serde(default)]
    pub last: String,
    #[serde(default)]
    pub users: BTreeMap<String, SavedToken>,
}

impl ServerTokens {
    /// The token of `user`, or of the user who logged in last.
    pub fn pick(&self, user: Option<&str>) -> Option<&SavedToken> {
        self.users.get(user.unwrap_or(&self.last))
    }
}

/// Saved tokens by server address (or list of addresses, as `-s` was given).
pub type Tokens = BTreeMap<String, ServerTokens>;

fn read_json<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> Result<T, String> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| format!("{} does not read back: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Write `value` to `name` in the config dir, readable by the user only, whole or not at all.
fn write_json<T: Serialize>(name: &str, value: &T) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = config_dir()?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let body = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
    let res = (|| -> std::io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    res.map_err(|e| format!("cannot write {}: {e}", path.display()))
}

pub fn load_contexts() -> Result<Contexts, String> {
    read_json(&config_dir()?.join(CONTEXTS))
}

pub fn save_contexts(c: &Contexts) -> Result<(), String> {
    write_json(CONTEXTS, c)
}

pub fn load_tokens() -> Result<Tokens, String> {
    read_json(&config_dir()?.join(TOKENS))
}

pub fn save_tokens(t: &Tokens) -> Result<(), String> {
    write_json(TOKENS, t)
}

/// What the command line and the environment said about the connection.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// The server, when given by a flag or MOM_SERVER (else the context's, else the default).
    pub server: Option<String>,
    pub default_server: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub context: Option<String>,
    pub tls_ca: Option<PathBuf>,
    pub tls_insecure: bool,
    pub tls: bool,
    /// Use the token `momctl login` saved for the server (not when logging in again).
    pub use_saved_token: bool,
}

/// Marks an error of [`resolve`] that is a usage error (bad flags) rather than a refusal;
/// see [`is_usage`].
const USAGE: &str = "\u{0}";

/// Is this error of [`resolve`] a usage error? (Its message is then the rest.)
pub fn is_usage(e: &str) -> Option<&str> {
    e.strip_prefix(USAGE)
}

/// The connection options: flags and environment first, then the context (named, or the
/// current one), then the default server. Credentials: a token given, else a user with a
/// password, else the token saved for that server by `momctl login` (for that user, if one
/// is named), else none (a server without users).
pub fn resolve(
    inputs: Inputs,
    name: impl Into<String>,
    now_ms: u64,
) -> Result<ConnectOptions, String> {
    let contexts = load_contexts()?;
    let ctx_name = inputs.context.clone().or(contexts.current.clone());
    let ctx = match &ctx_name {
        Some(n) => Some(
            contexts
                .contexts
                .get(n)
                .cloned()
                .ok_or_else(|| format!("no context {n:?} (see `momctl context ls`)"))?,
        ),
        None => None,
    };
    let server = match (&inputs.server, &ctx) {
        (Some(s), _) => s.clone(),
        (None, Some(c)) => c.server.clone(),
        (None, None) => inputs.default_server.clone(),
    };
    let servers = crate::client::parse_servers(&server).map_err(|e| format!("{USAGE}{e}"))?;
    // A server (list) named on the command line or in MOM_SERVER that is not the context's
    // is another server: the context's user and TLS settings are not its own.
    let ctx = ctx.filter(|c| crate::client::parse_servers(&c.server).is_ok_and(|cs| cs == servers));
    let mut opts = ConnectOptions::with_servers(servers, name);
    // Tokens are saved under the list as written, in canonical form.
    let server = opts.server_list();
    opts.user = inputs.user.or(ctx.as_ref().and_then(|c| c.user.clone()));
    opts.tls_ca = inputs
        .tls_ca
        .or(ctx.as_ref().and_then(|c| c.tls_ca.clone()));
    opts.tls_insecure = inputs.tls_insecure || ctx.as_ref().is_some_and(|c| c.tls_insecure);
    opts.tls = inputs.tls || ctx.as_ref().is_some_and(|c| c.tls);
    if inputs.password.is_some() && opts.user.is_none() && inputs.token.is_none() {
        return Err(format!(
            "{USAGE}a password needs a user: --user NAME or MOM_USER"
        ));
    }
    if let Some(t) = inputs.token {
        opts.token = Some(t);
    } else if let (Some(_), Some(p)) = (&opts.user, inputs.password.clone()) {
        opts.password = Some(p);
    } else if inputs.use_saved_token {
        let tokens = load_tokens()?;
        if let Some(saved) = tokens
            .get(&server)
            .and_then(|t| t.pick(opts.user.as_deref()))
        {
            if saved.expires <= now_ms {
                return Err(format!(
                    "the token saved for {server} (user {}) has expired: run momctl login",
                    saved.user
                ));
            }
            opts.user = Some(saved.user.clone());
            opts.token = Some(saved.token.clone());
        }
    }
    Ok(opts)
}
