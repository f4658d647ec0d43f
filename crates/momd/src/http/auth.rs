//! Who an HTTP request is: `Authorization: Bearer TOKEN` (a token of `momctl login` or
//! `POST /v1/login`), `Authorization: Basic` (user and password), or nothing — checked by
//! the same [`crate::auth::Auth::authenticate`] as a TCP `hello`, so the anonymous rule
//! (a server with no users takes 127.0.0.1 clients as the admin `anonymous`), the delay
//! after failures and token revocation are the same.
//!
//! A password check is slow on purpose (argon2id). So that Basic auth does not pay it on
//! every request, a verified user and password are remembered for a minute, keyed by a
//! salted SHA-256 of both and tied to the user's stored hash: a changed password or a
//! removed user is not let in by the memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use base64::Engine;
use mom_proto::{ErrorCode, Hello};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::{App, Peer};
use crate::auth::Identity;
use crate::broker::Cmd;

/// The caller of a request: who it authenticated as, and from where.
pub struct Who {
    pub id: Identity,
    pub peer: SocketAddr,
}

const REMEMBER: Duration = Duration::from_secs(60);
const REMEMBER_MAX: usize = 4096;

/// Who a remembered user and password are, the user's password hash then, and when.
type Recalled = (Identity, String, Instant);

/// Basic credentials checked recently.
#[derive(Clone)]
pub struct Remembered {
    salt: Arc<[u8]>,
    seen: Arc<Mutex<HashMap<[u8; 32], Recalled>>>,
}

impl Remembered {
    pub fn new() -> Remembered {
        Remembered {
            salt: crate::auth::random_bytes(32)
                .unwrap_or_else(|_| b"mom-http-basic".to_vec())
                .into(),
            seen: Arc::default(),
        }
    }

    fn key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(&self.salt);
        h.update(user.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }
}

/// The credentials of a request's `Authorization` header.
pub enum Credentials {
    None,
    Token(String),
    Password(String, String),
}

pub fn credentials(headers: &axum::http::HeaderMap) -> Result<Credentials, ApiError> {
    let Some(v) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(Credentials::None);
    };
    let bad = || {
        ApiError::new(
            ErrorCode::Unauthorized,
            "the Authorization header must be `Bearer TOKEN` or `Basic BASE64(user:password)`",
        )
    };
    let v = v.to_str().map_err(|_| bad())?.trim();
    let (scheme, rest) = v.split_once(' ').ok_or_else(bad)?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Credentials::Token(rest.to_string()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| bad())?;
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        let (user, password) = raw.split_once(':').ok_or_else(bad)?;
        return Ok(Credentials::Password(
            user.to_string(),
            password.to_string(),
        ));
    }
    Err(bad())
}

impl FromRequestParts<App> for Who {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Who, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<Peer>>()
            .map(|c| c.0 .0)
            .ok_or_else(|| ApiError::internal("no peer address"))?;
        let creds = credentials(&parts.headers)?;
        let id = authenticate(app, peer, creds).await?;
        Ok(Who { id, peer })
    }
}

pub async fn authenticate(
    app: &App,
    peer: SocketAddr,
    creds: Credentials,
) -> Result<Identity, ApiError> {
    let mut hello = Hello::default();
    let mut remember = None;
    match creds {
        Credentials::None => {}
        Credentials::Token(t) => hello.token = Some(t),
        Credentials::Password(user, password) => {
            let key = app.remembered.key(&user, &password);
            if let Some(id) = recall(app, &key) {
                return Ok(id);
            }
            hello.user = Some(user);
            hello.password = Some(password);
            remember = Some(key);
        }
    }
    match app.auth.authenticate(peer, &hello).await {
        Ok(id) => {
            if let (Some(key), Some(rec)) = (remember, app.auth.user(&id.user)) {
                let mut seen = app
                    .remembered
                    .seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if seen.len() >= REMEMBER_MAX {
                    seen.retain(|_, (_, _, at)| at.elapsed() < REMEMBER);
                    if seen.len() >= REMEMBER_MAX {
                        seen.clear();
                    }
                }
                seen.insert(key, (id.clone(), rec.hash, Instant::now()));
            }
            Ok(id)
        }
        Err((code, msg)) => {
            app.broker
                .handle
                .send(Cmd::AuthFailed {
                    addr: peer.to_string(),
                    user: hello.user.clone().unwrap_or_default(),
                    reason: msg.clone(),
                })
                .await;
            Err(ApiError::new(code, msg))
        }
    }
}

/// A Basic user and password verified less than a minute ago, if its user still has the
/// same password hash and role.
fn recall(app: &App, key: &[u8; 32]) -> Option<Identity> {
    let seen = app
        .remembered
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let (id, hash, at) = seen.get(key)?;
    if at.elapsed() >= REMEMBER {
        return None;
    }
    let rec = app.auth.user(&id.user)?;
    (rec.hash == *hash && rec.admin == id.admin).then(|| id.clone())
}
