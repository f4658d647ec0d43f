//! Users: hashing and checking passwords (argon2id), and the changes an admin makes.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use mom_proto::{topic, ErrorCode, UserInfo};

use super::{Auth, Refusal, UserRecord, ANONYMOUS};

/// Longest user name.
const MAX_NAME: usize = 64;
/// Longest password taken (argon2 reads it whole; a megabyte password is a denial of service).
const MAX_PASSWORD: usize = 1024;

/// Hash a password (argon2id, a fresh random salt, the crate's default cost).
pub fn hash(password: &str) -> Result<String, String> {
    let bytes = super::random_bytes(16).map_err(|e| format!("no random bytes for a salt: {e}"))?;
    let salt = SaltString::encode_b64(&bytes).map_err(|e| format!("cannot make a salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Does `password` match the stored `hash`? (Slow on purpose: call off the async threads.)
pub fn verify(password: &str, hash: &str) -> bool {
    if password.len() > MAX_PASSWORD {
        return false;
    }
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash checked against when the user does not exist, so that costs the same time.
pub fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash("not a password of anyone").unwrap_or_default())
}

pub fn check_name(name: &str) -> Result<(), Refusal> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'));
    if !ok {
        return Err((
            ErrorCode::BadRequest,
            format!(
                "user name {name:?}: 1 to {MAX_NAME} of letters, digits, '_', '-', '.' and '@'"
            ),
        ));
    }
    if name == ANONYMOUS {
        return Err((
            ErrorCode::BadRequest,
            format!("{ANONYMOUS:?} is the name of clients of a server without users"),
        ));
    }
    Ok(())
}

pub fn check_password(password: &str) -> Result<(), Refusal> {
    if password.is_empty() || password.len() > MAX_PASSWORD {
        return Err((
            ErrorCode::BadRequest,
            format!("a password has 1 to {MAX_PASSWORD} bytes"),
        ));
    }
    Ok(())
}

pub fn check_patterns(patterns: &[String]) -> Result<(), Refusal> {
    for p in patterns {
        topic::validate_pattern(p).map_err(|e| (ErrorCode::BadRequest, e.to_string()))?;
    }
    Ok(())
}

fn merge(into: &mut Vec<String>, add: &[String]) {
    for p in add {
        if !into.contains(p) {
            into.push(p.clone());
        }
    }
}

/// Add (`grant`) or take away a user's patterns; taking away one it lacks is refused (and
/// may leave `rec` half changed: change a copy).
pub fn change_patterns(
    rec: &mut UserRecord,
    grant: bool,
    publish: &[String],
    subscribe: &[String],
) -> Result<(), Refusal> {
    if grant {
        merge(&mut rec.publish, publish);
        merge(&mut rec.subscribe, subscribe);
        return Ok(());
    }
    for p in publish.iter().chain(subscribe) {
        let held = rec.publish.contains(p) || rec.subscribe.contains(p);
        if !held {
            return Err((
                ErrorCode::NotFound,
                format!("user {:?} has no pattern {p:?}", rec.name),
            ));
        }
    }
    rec.publish.retain(|p| !publish.contains(p));
    rec.subscribe.retain(|p| !subscribe.contains(p));
    Ok(())
}

impl Auth {
    fn save(&self, rec: &UserRecord) -> Result<(), Refusal> {
        let v = rmp_serde::to_vec(rec).map_err(|e| (ErrorCode::Internal, e.to_string()))?;
        let (tree, _) = self.local_trees()?;
        tree.insert(rec.name.as_bytes(), v)
            .and_then(|_| tree.flush())
            .map_err(|e| {
                (
                    ErrorCode::Unavailable,
                    format!("cannot store the user: {e}"),
                )
            })?;
        self.users
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(rec.name.clone(), rec.clone());
        Ok(())
    }

    fn existing(&self, name: &str) -> Result<UserRecord, Refusal> {
        self.user(name)
            .ok_or_else(|| (ErrorCode::NotFound, format!("no user {name:?}")))
    }

    /// Create a user; `hash` is the password's hash (made off the async threads).
    pub fn add_user(
        &self,
        name: &str,
        hash: String,
        admin: bool,
        publish: &[String],
        subscribe: &[String],
        now_ms: u64,
    ) -> Result<UserInfo, Refusal> {
        check_name(name)?;
        check_patterns(publish)?;
        check_patterns(subscribe)?;
        if self.user(name).is_some() {
            return Err((ErrorCode::Conflict, format!("user {name:?} exists")));
        }
        let mut rec = UserRecord {
            name: name.to_string(),
            hash,
            admin,
            publish: Vec::new(),
            subscribe: Vec::new(),
            created: now_ms,
        };
        merge(&mut rec.publish, publish);
        merge(&mut rec.subscribe, subscribe);
        self.save(&rec)?;
        Ok(rec.info())
    }

    pub fn remove_user(&self, name: &str) -> Result<(), Refusal> {
        self.existing(name)?;
        let (tree, _) = self.local_trees()?;
        tree.remove(name.as_bytes())
            .and_then(|_| tree.flush())
            .map_err(|e| {
                (
                    ErrorCode::Unavailable,
                    format!("cannot remove the user: {e}"),
                )
            })?;
        self.users
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        Ok(())
    }

    pub fn set_password(&self, name: &str, hash: String) -> Result<UserInfo, Refusal> {
        let mut rec = self.existing(name)?;
        rec.hash = hash;
        self.save(&rec)?;
        Ok(rec.info())
    }

    /// Add (`grant`) or take away patterns.
    pub fn change_grants(
        &self,
        name: &str,
        grant: bool,
        publish: &[String],
        subscribe: &[String],
    ) -> Result<UserInfo, Refusal> {
        check_patterns(publish)?;
        check_patterns(subscribe)?;
        let mut rec = self.existing(name)?;
        change_patterns(&mut rec, grant, publish, subscribe)?;
        self.save(&rec)?;
        Ok(rec.info())
    }

    pub fn list_users(&self) -> Vec<UserInfo> {
        self.users().values().map(UserRecord::info).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_checks_its_password_only() {
        let h = hash("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(!h.contains("s3cret"));
        assert!(verify("s3cret", &h));
        assert!(!verify("s3cret!", &h));
        assert!(!verify("s3cret", "not a hash"));
        assert!(!verify("x", dummy_hash()));
    }
}
