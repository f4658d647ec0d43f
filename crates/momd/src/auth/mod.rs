//! Users, passwords, tokens and what each user may do (DESIGN.md, Security).
//!
//! Users live in the data dir's index store (tree `users`): a name, an argon2id hash of the
//! password (never the password), a role, and the topic patterns the user may publish to and
//! subscribe to. Tokens are JWTs (HS256) signed with a key made at first start and kept in
//! the data dir (`auth.key`, mode 0600); a revoked token's id is kept until it would have
//! expired. With no user defined, clients from loopback connect as the admin `anonymous`
//! (and from anywhere with `--allow-anonymous`); once a user exists, every client
//! authenticates.
//!
//! Password checks are slow on purpose (argon2id): they run on the blocking pool, from the
//! connection's task, never in the broker's.
//!
//! A cluster node keeps none of this in its data dir: the users, revocations and the
//! signing key are the metadata group's (`replicated`), every change goes through it, and
//! each node's view here is loaded from what the group applied.

mod failures;
pub mod frames;
pub mod replicated;
mod tokens;
mod users;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use mom_proto::{topic, ErrorCode, Hello, UserInfo};
use serde::{Deserialize, Serialize};

pub use failures::Failures;
pub use replicated::{AuthState, Change, Replicator};
pub use tokens::Keys;

/// Who a connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub admin: bool,
    /// The id of the token it authenticated with, if it did.
    pub token_id: Option<String>,
}

/// Hash a password (argon2id, fresh salt).
pub fn hash_password(password: &str) -> Result<String, String> {
    users::check_password(password).map_err(|(_, m)| m)?;
    users::hash(password)
}

/// Is `name` a valid user name?
pub fn users_check_name(name: &str) -> Result<(), Refusal> {
    users::check_name(name)
}

/// `n` bytes from the kernel's random source (for salts, keys and token ids).
pub fn random_bytes(n: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut b = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b)
}

/// How long a client waits for a cluster node that has just started to catch up with its
/// cluster's users (a momctl waits 5 s for the answer to its hello).
const CATCH_UP_WAIT: Duration = Duration::from_secs(3);

/// The user of a server with no users.
pub const ANONYMOUS: &str = "anonymous";

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    /// argon2id, in PHC string form (salt and parameters included).
    pub hash: String,
    pub admin: bool,
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    pub created: u64,
}

impl UserRecord {
    pub fn info(&self) -> UserInfo {
        UserInfo {
            name: self.name.clone(),
            admin: self.admin,
            publish: self.publish.clone(),
            subscribe: self.subscribe.clone(),
            created: self.created,
        }
    }
}

/// A refusal: the code and the one-line reason the client gets.
pub type Refusal = (ErrorCode, String);

pub struct AuthConfig {
    pub allow_anonymous: bool,
    pub token_ttl: Duration,
    pub max_connections_per_user: usize,
}

/// Where the users are kept.
enum Backing {
    /// A single node: its data dir's trees (and its own key file).
    Local {
        users: sled::Tree,
        revoked: sled::Tree,
    },
    /// A cluster node: the metadata group, which loads this node's view as it applies
    /// (`load_replicated`).
    Cluster {
        /// Set once the node's cluster runs.
        replicator: OnceLock<Arc<dyn Replicator>>,
        /// This node applied a `Sync` it proposed after it started, so its view holds every
        /// change committed before. Until then its view may lack changes made while it was
        /// down (or may even be older than what it had applied: only the log is fsynced, not
        /// how far it was applied), so it authenticates no one.
        caught_up: tokio::sync::watch::Sender<bool>,
    },
}

pub struct Auth {
    backing: Backing,
    users: RwLock<BTreeMap<String, UserRecord>>,
    /// Revoked token ids, with when the token expires (ms since the epoch).
    revoked: RwLock<BTreeMap<String, u64>>,
    /// None on a cluster node until its cluster has a key.
    keys: RwLock<Option<Arc<Keys>>>,
    pub cfg: AuthConfig,
    pub failures: Failures,
}

fn unauthorized(msg: impl Into<String>) -> Refusal {
    (ErrorCode::Unauthorized, msg.into())
}

fn forbidden(msg: impl Into<String>) -> Refusal {
    (ErrorCode::Forbidden, msg.into())
}

/// Is `ip` the machine itself as a local client reaches it: 127.0.0.1 or ::1. Other
/// 127.x.y.z addresses count as remote: they serve containers and network namespaces, and
/// they let the anonymous rule be tested on one machine.
pub fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4 == std::net::Ipv4Addr::LOCALHOST,
        IpAddr::V6(v6) => {
            v6 == std::net::Ipv6Addr::LOCALHOST
                || v6.to_ipv4_mapped() == Some(std::net::Ipv4Addr::LOCALHOST)
        }
    }
}

impl Auth {
    /// Open the users and token key of the data dir `dir` (made at first start).
    pub fn open(db: &sled::Db, dir: &Path, cfg: AuthConfig) -> anyhow::Result<Auth> {
        let users_tree = db.open_tree("users")?;
        let revoked_tree = db.open_tree("revoked_tokens")?;
        let mut users = BTreeMap::new();
        for kv in users_tree.iter() {
            let (_, v) = kv?;
            match rmp_serde::from_slice::<UserRecord>(&v) {
                Ok(u) => {
                    users.insert(u.name.clone(), u);
                }
                Err(e) => anyhow::bail!("a user record in the data dir does not read back: {e}"),
            }
        }
        let mut revoked = BTreeMap::new();
        for kv in revoked_tree.iter() {
            let (k, v) = kv?;
            let exp = v
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map_or(u64::MAX, u64::from_be_bytes);
            revoked.insert(String::from_utf8_lossy(&k).into_owned(), exp);
        }
        Ok(Auth {
            backing: Backing::Local {
                users: users_tree,
                revoked: revoked_tree,
            },
            users: RwLock::new(users),
            revoked: RwLock::new(revoked),
            keys: RwLock::new(Some(Arc::new(Keys::open(dir)?))),
            cfg,
            failures: Failures::default(),
        })
    }

    /// The users of a cluster node: none until the metadata group loads them.
    pub fn replicated(cfg: AuthConfig) -> Auth {
        Auth {
            backing: Backing::Cluster {
                replicator: OnceLock::new(),
                caught_up: tokio::sync::watch::channel(false).0,
            },
            users: RwLock::new(BTreeMap::new()),
            revoked: RwLock::new(BTreeMap::new()),
            keys: RwLock::new(None),
            cfg,
            failures: Failures::default(),
        }
    }

    /// Is this a cluster node's (the users kept by the metadata group)?
    pub fn is_replicated(&self) -> bool {
        matches!(self.backing, Backing::Cluster { .. })
    }

    /// Where this cluster node's changes go, once its cluster runs.
    pub fn set_replicator(&self, r: Arc<dyn Replicator>) {
        if let Backing::Cluster { replicator, .. } = &self.backing {
            let _ = replicator.set(r);
        }
    }

    /// This cluster node's view holds every change committed before it started.
    pub fn set_caught_up(&self) {
        if let Backing::Cluster { caught_up, .. } = &self.backing {
            caught_up.send_replace(true);
        }
    }

    /// Replace this node's view with what the metadata group applied.
    pub fn load_replicated(&self, state: &AuthState) {
        *self.users.write().unwrap_or_else(|p| p.into_inner()) = state.users.clone();
        *self.revoked.write().unwrap_or_else(|p| p.into_inner()) = state.revoked.clone();
        let keys = state
            .token_key
            .as_ref()
            .map(|k| Arc::new(Keys::from_secret(&k.0)));
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
    }

    fn keys(&self) -> Option<Arc<Keys>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The data dir's trees of a single node.
    fn local_trees(&self) -> Result<(&sled::Tree, &sled::Tree), Refusal> {
        match &self.backing {
            Backing::Local { users, revoked } => Ok((users, revoked)),
            Backing::Cluster { .. } => Err((
                ErrorCode::Internal,
                "a cluster node's users change through its metadata group".into(),
            )),
        }
    }

    /// Make a change: on a single node, in its data dir; on a cluster node, through the
    /// metadata group (answered once it is committed and applied here).
    pub async fn commit(&self, change: Change) -> Result<(), Refusal> {
        match &self.backing {
            Backing::Cluster { replicator, .. } => match replicator.get() {
                Some(r) => r.propose(change).await,
                None => Err((
                    ErrorCode::Unavailable,
                    "this node's cluster is not running yet".into(),
                )),
            },
            Backing::Local { .. } => match change {
                Change::AddUser(r) => self
                    .add_user(
                        &r.name,
                        r.hash,
                        r.admin,
                        &r.publish,
                        &r.subscribe,
                        r.created,
                    )
                    .map(drop),
                Change::RemoveUser { name } => self.remove_user(&name),
                Change::SetPassword { name, hash } => self.set_password(&name, hash).map(drop),
                Change::Grants {
                    name,
                    grant,
                    publish,
                    subscribe,
                } => self
                    .change_grants(&name, grant, &publish, &subscribe)
                    .map(drop),
                Change::RevokeToken { jti, exp, .. } => self.record_revocation(jti, exp),
                // A single node's key is its own file.
                Change::TokenKey(_) | Change::Sync => Ok(()),
            },
        }
    }

    /// On a cluster node without a token key yet: propose one (the first committed stays).
    async fn ensure_token_key(&self) -> Result<(), Refusal> {
        if self.keys().is_some() {
            return Ok(());
        }
        let key = random_bytes(replicated::KEY_LEN).map_err(|e| {
            (
                ErrorCode::Internal,
                format!("no random bytes for a key: {e}"),
            )
        })?;
        self.commit(Change::TokenKey(replicated::TokenKey(key)))
            .await
    }

    fn users(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, UserRecord>> {
        self.users.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn has_users(&self) -> bool {
        !self.users().is_empty()
    }

    pub fn user(&self, name: &str) -> Option<UserRecord> {
        self.users().get(name).cloned()
    }

    /// On a cluster node: waits (a little) until its view of the users is current.
    async fn caught_up(&self) -> Result<(), Refusal> {
        let Backing::Cluster { caught_up, .. } = &self.backing else {
            return Ok(());
        };
        let mut rx = caught_up.subscribe();
        let current = matches!(
            tokio::time::timeout(CATCH_UP_WAIT, rx.wait_for(|c| *c)).await,
            Ok(Ok(_))
        );
        if current {
            return Ok(());
        }
        Err((
            ErrorCode::Unavailable,
            "this cluster node has not caught up with its cluster's users yet (it needs to \
             reach a majority of the nodes): try again in a moment, or another node"
                .into(),
        ))
    }

    /// Who the client of `hello`, from `peer`, is; or why it may not connect.
    pub async fn authenticate(&self, peer: SocketAddr, hello: &Hello) -> Result<Identity, Refusal> {
        self.caught_up().await?;
        if !self.has_users() {
            if is_local(peer.ip()) || self.cfg.allow_anonymous {
                return Ok(Identity {
                    user: ANONYMOUS.into(),
                    admin: true,
                    token_id: None,
                });
            }
            return Err(unauthorized(
                "this server has no users: it takes anonymous clients from 127.0.0.1 and ::1 only",
            ));
        }
        let res = if let Some(token) = &hello.token {
            self.check_token(token)
        } else if let (Some(user), Some(password)) = (&hello.user, &hello.password) {
            self.check_password(user, password).await
        } else {
            // Not a failed guess: no delay, and nothing to count.
            return Err(unauthorized(
                "authentication required: run `momctl login` (with MOM_USER set), or give \
                 a user and password or a token",
            ));
        };
        match res {
            Ok(id) => {
                self.failures.succeeded(peer.ip());
                Ok(id)
            }
            Err(e) => {
                // Each failure from an address waits longer before it is answered.
                let delay = self.failures.failed(peer.ip());
                tokio::time::sleep(delay).await;
                Err(e)
            }
        }
    }

    async fn check_password(&self, user: &str, password: &str) -> Result<Identity, Refusal> {
        let rec = self.user(user);
        let hash = rec.as_ref().map(|r| r.hash.clone());
        let password = password.to_string();
        // An unknown user costs a hash check too, so timing does not tell who exists.
        let ok = tokio::task::spawn_blocking(move || match hash {
            Some(h) => users::verify(&password, &h),
            None => {
                users::verify(&password, users::dummy_hash());
                false
            }
        })
        .await
        .unwrap_or(false);
        match rec {
            Some(r) if ok => Ok(Identity {
                user: r.name,
                admin: r.admin,
                token_id: None,
            }),
            _ => Err(unauthorized("wrong user or password")),
        }
    }

    fn check_token(&self, token: &str) -> Result<Identity, Refusal> {
        let claims = self.keys().ok_or_else(tokens::not_ours)?.verify(token)?;
        if self
            .revoked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&claims.jti)
        {
            return Err(unauthorized("token revoked: run momctl login"));
        }
        let Some(rec) = self.user(&claims.sub) else {
            return Err(unauthorized(format!(
                "token of user {:?}, who no longer exists",
                claims.sub
            )));
        };
        Ok(Identity {
            user: rec.name,
            admin: rec.admin,
            token_id: Some(claims.jti),
        })
    }

    /// A token for `who`, valid for `ttl_ms` (0: the default; never more than the default).
    /// A cluster node's first token makes the cluster's key.
    pub async fn create_token(
        &self,
        who: &Identity,
        ttl_ms: u64,
        now_ms: u64,
    ) -> Result<(String, u64), Refusal> {
        let max = self.cfg.token_ttl.as_millis() as u64;
        let ttl = if ttl_ms == 0 { max } else { ttl_ms.min(max) };
        self.ensure_token_key().await?;
        let keys = self.keys().ok_or_else(|| {
            (
                ErrorCode::Unavailable,
                "the cluster has no token key yet: try again".to_string(),
            )
        })?;
        keys.sign(&who.user, now_ms, ttl)
    }

    /// Revoke a token (kept until it would have expired, across restarts, on every node of
    /// a cluster). A user revokes its own tokens; an admin any.
    pub async fn revoke_token(
        &self,
        who: &Identity,
        token: Option<&str>,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let (jti, exp) = match token {
            Some(t) => {
                let keys = self.keys().ok_or_else(|| {
                    (
                        ErrorCode::BadRequest,
                        "not a token of this server".to_string(),
                    )
                })?;
                let c = keys.verify_ignoring_expiry(t)?;
                if c.sub != who.user && !who.admin {
                    return Err(forbidden(
                        "a token of another user; only an admin may revoke it",
                    ));
                }
                (c.jti, c.exp.saturating_mul(1000))
            }
            None => match &who.token_id {
                Some(j) => (j.clone(), u64::MAX),
                None => return Err((
                    ErrorCode::BadRequest,
                    "this connection did not authenticate with a token; name the token to revoke"
                        .into(),
                )),
            },
        };
        self.commit(Change::RevokeToken {
            jti,
            exp,
            now: now_ms,
        })
        .await
    }

    /// A single node's revocation, kept in its data dir.
    fn record_revocation(&self, jti: String, exp: u64) -> Result<(), Refusal> {
        let (_, tree) = self.local_trees()?;
        tree.insert(jti.as_bytes(), &exp.to_be_bytes()[..])
            .and_then(|_| tree.flush())
            .map_err(|e| {
                (
                    ErrorCode::Unavailable,
                    format!("cannot record the revocation: {e}"),
                )
            })?;
        self.revoked
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(jti, exp);
        Ok(())
    }

    /// Forget revocations of tokens that have expired anyway. (A cluster forgets them as
    /// the next revocation is applied.)
    pub fn purge_revoked(&self, now_ms: u64) {
        let Ok((_, tree)) = self.local_trees() else {
            return;
        };
        let expired: Vec<String> = self
            .revoked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, exp)| **exp < now_ms)
            .map(|(j, _)| j.clone())
            .collect();
        for j in expired {
            let _ = tree.remove(j.as_bytes());
            self.revoked
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&j);
        }
    }

    /// May `who` publish to `topic`?
    pub fn may_publish(&self, who: &Identity, topic: &str) -> bool {
        // Looked at in place: this runs for every publish.
        who.admin
            || self
                .users()
                .get(&who.user)
                .is_some_and(|u| u.publish.iter().any(|p| topic::matches(p, topic)))
    }

    /// May `who` watch `pattern` (or bind or consume a queue on it)?
    pub fn may_subscribe(&self, who: &Identity, pattern: &str) -> bool {
        if who.admin {
            return true;
        }
        // The broker's own topics are for admins only, whatever was granted.
        if pattern == "$sys" || pattern.starts_with("$sys.") {
            return false;
        }
        // Looked at in place: this runs for every watch, and a user's record is not small.
        self.users().get(&who.user).is_some_and(|u| {
            u.subscribe
                .iter()
                .any(|p| topic::pattern_within(pattern, p))
        })
    }
}
