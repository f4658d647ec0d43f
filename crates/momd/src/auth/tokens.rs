//! Tokens: JWTs signed (HS256) with a key made at first start and kept in the data dir as
//! `auth.key`, readable by momd's user only. A token names its user and expires; its id
//! (`jti`) is what a revocation records.

use std::io::Write;
use std::path::Path;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use mom_proto::ErrorCode;
use serde::{Deserialize, Serialize};

use super::Refusal;

const KEY_FILE: &str = "auth.key";
const KEY_LEN: usize = super::replicated::KEY_LEN;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    /// Seconds since the epoch.
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
}

pub struct Keys {
    enc: EncodingKey,
    dec: DecodingKey,
}

fn random_hex(bytes: usize) -> Result<String, Refusal> {
    let b = super::random_bytes(bytes)
        .map_err(|e| (ErrorCode::Internal, format!("no random bytes: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The refusal of a token this server did not sign.
pub fn not_ours() -> Refusal {
    (
        ErrorCode::Unauthorized,
        "invalid token (not one of this server's): run momctl login".to_string(),
    )
}

impl Keys {
    /// Read the signing key of the data dir `dir`, or make it.
    pub fn open(dir: &Path) -> anyhow::Result<Keys> {
        let path = dir.join(KEY_FILE);
        let key = match std::fs::read(&path) {
            Ok(k) if k.len() == KEY_LEN => k,
            Ok(_) => anyhow::bail!(
                "{} is not a key of {KEY_LEN} bytes; remove it to make a new one (every \
                 token given so far then stops working)",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let k = super::random_bytes(KEY_LEN)?;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)?;
                f.write_all(&k)?;
                f.sync_all()?;
                k
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Keys::from_secret(&key))
    }

    /// Keys from a secret (a cluster's, replicated by its metadata group).
    pub fn from_secret(key: &[u8]) -> Keys {
        Keys {
            enc: EncodingKey::from_secret(key),
            dec: DecodingKey::from_secret(key),
        }
    }

    /// A token of `user` from `now_ms` for `ttl_ms`: the token and when it expires (ms).
    pub fn sign(&self, user: &str, now_ms: u64, ttl_ms: u64) -> Result<(String, u64), Refusal> {
        let exp_ms = now_ms.saturating_add(ttl_ms);
        let claims = Claims {
            sub: user.to_string(),
            iat: now_ms / 1000,
            exp: exp_ms.div_ceil(1000),
            jti: random_hex(16)?,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.enc)
            .map(|t| (t, claims.exp * 1000))
            .map_err(|e| (ErrorCode::Internal, format!("cannot sign a token: {e}")))
    }

    fn validation(check_exp: bool) -> Validation {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.validate_exp = check_exp;
        v.set_required_spec_claims(&["exp", "sub"]);
        v
    }

    /// The claims of a valid, unexpired token of this server.
    pub fn verify(&self, token: &str) -> Result<Claims, Refusal> {
        jsonwebtoken::decode::<Claims>(token, &self.dec, &Self::validation(true))
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => (
                    ErrorCode::Unauthorized,
                    "token expired: run momctl login".to_string(),
                ),
                _ => not_ours(),
            })
    }

    /// The claims of a token of this server, expired or not (to revoke it).
    pub fn verify_ignoring_expiry(&self, token: &str) -> Result<Claims, Refusal> {
        jsonwebtoken::decode::<Claims>(token, &self.dec, &Self::validation(false))
            .map(|d| d.claims)
            .map_err(|_| {
                (
                    ErrorCode::BadRequest,
                    "not a token of this server".to_string(),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_user_expires_and_is_this_servers_only() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::open(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let (t, exp) = keys.sign("alice", now, 3_600_000).unwrap();
        assert!(exp >= now + 3_600_000);
        assert_eq!(keys.verify(&t).unwrap().sub, "alice");
        let (old, _) = keys.sign("alice", now - 7_200_000, 3_600_000).unwrap();
        assert!(keys.verify(&old).unwrap_err().1.contains("expired"));
        assert_eq!(keys.verify_ignoring_expiry(&old).unwrap().sub, "alice");
        // Another data dir's key does not accept it; the same dir's does, after a restart.
        let other = tempfile::tempdir().unwrap();
        assert!(Keys::open(other.path()).unwrap().verify(&t).is_err());
        assert!(Keys::open(dir.path()).unwrap().verify(&t).is_ok());
    }
}
