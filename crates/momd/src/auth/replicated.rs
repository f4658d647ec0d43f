//! Users, token revocations and the token signing key as a cluster holds them: part of the
//! metadata group's state (`cluster/meta.rs`), changed only by committed `Change`s, applied
//! on every node in log order.
//!
//! What varies is chosen by the node that took the request and travels in the change: the
//! password's argon2id hash (salted there; the password itself never leaves that node), the
//! creation time, a new signing key, the clock a revocation purges against. Applying is
//! then deterministic, and refuses what the state forbids (a name taken, a user gone) the
//! same way on every node.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use mom_proto::ErrorCode;
use serde::{Deserialize, Serialize};

use super::{users, Refusal, UserRecord};

/// The token signing key (HS256), the same on every node. Never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenKey(pub Vec<u8>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenKey(<{} bytes>)", self.0.len())
    }
}

/// The users of a cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuthState {
    pub users: BTreeMap<String, UserRecord>,
    /// Revoked token ids, with when the token expires (ms since the epoch).
    pub revoked: BTreeMap<String, u64>,
    /// Made by the node that first needed to sign a token; the first one committed stays.
    pub token_key: Option<TokenKey>,
}

/// A change to the users, proposed by the node that took the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// A new user (the record holds the password's hash).
    AddUser(UserRecord),
    RemoveUser {
        name: String,
    },
    SetPassword {
        name: String,
        hash: String,
    },
    /// Add (`grant`) or take away patterns.
    Grants {
        name: String,
        grant: bool,
        publish: Vec<String>,
        subscribe: Vec<String>,
    },
    /// Refuse token `jti` until `exp`; revocations of tokens expired before `now` (the
    /// proposer's clock) are forgotten meanwhile.
    RevokeToken {
        jti: String,
        exp: u64,
        now: u64,
    },
    /// The key tokens are signed with, unless one is set already.
    TokenKey(TokenKey),
    /// Changes nothing: once a node applied it, it knows every change committed before.
    Sync,
}

/// Length of a token signing key.
pub const KEY_LEN: usize = 32;

impl AuthState {
    /// Applies a committed change, or says why it is refused.
    pub fn apply(&mut self, change: Change) -> Result<(), Refusal> {
        let not_found = |name: &str| (ErrorCode::NotFound, format!("no user {name:?}"));
        match change {
            Change::AddUser(rec) => match self.users.get(&rec.name) {
                // The same proposal committed twice (its first answer was lost and the
                // proposer sent it again): the hash's salt makes a record unique.
                Some(r) if *r == rec => Ok(()),
                Some(_) => Err((ErrorCode::Conflict, format!("user {:?} exists", rec.name))),
                None => {
                    self.users.insert(rec.name.clone(), rec);
                    Ok(())
                }
            },
            Change::RemoveUser { name } => match self.users.remove(&name) {
                Some(_) => Ok(()),
                None => Err(not_found(&name)),
            },
            Change::SetPassword { name, hash } => match self.users.get_mut(&name) {
                Some(r) => {
                    r.hash = hash;
                    Ok(())
                }
                None => Err(not_found(&name)),
            },
            Change::Grants {
                name,
                grant,
                publish,
                subscribe,
            } => {
                let rec = self.users.get_mut(&name).ok_or_else(|| not_found(&name))?;
                // On a copy: a refused revoke changes nothing.
                let mut changed = rec.clone();
                users::change_patterns(&mut changed, grant, &publish, &subscribe)?;
                *rec = changed;
                Ok(())
            }
            Change::RevokeToken { jti, exp, now } => {
                self.revoked.retain(|_, e| *e >= now);
                self.revoked.insert(jti, exp);
                Ok(())
            }
            Change::TokenKey(key) => {
                if key.0.len() != KEY_LEN {
                    return Err((
                        ErrorCode::BadRequest,
                        format!("a token key has {KEY_LEN} bytes"),
                    ));
                }
                if self.token_key.is_none() {
                    self.token_key = Some(key);
                }
                Ok(())
            }
            Change::Sync => Ok(()),
        }
    }
}

/// What a proposal answers: `Ok` once the change is committed and applied on this node.
pub type Proposal<'a> = Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send + 'a>>;

/// Where a cluster node's changes go: the metadata group (`cluster/meta.rs`).
pub trait Replicator: Send + Sync {
    fn propose(&self, change: Change) -> Proposal<'_>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice(hash: &str) -> UserRecord {
        UserRecord {
            name: "alice".into(),
            hash: hash.into(),
            admin: false,
            publish: vec!["orders.>".into()],
            subscribe: vec![],
            created: 1,
        }
    }

    #[test]
    fn user_changes_apply_and_refuse_alike_everywhere() {
        let mut s = AuthState::default();
        assert_eq!(s.apply(Change::AddUser(alice("h1"))), Ok(()));
        // The same record again is the same proposal: done already.
        assert_eq!(s.apply(Change::AddUser(alice("h1"))), Ok(()));
        let e = s.apply(Change::AddUser(alice("h2"))).unwrap_err();
        assert_eq!(e.0, ErrorCode::Conflict);
        assert_eq!(s.users["alice"].hash, "h1");

        let set = |name: &str| Change::SetPassword {
            name: name.into(),
            hash: "h3".into(),
        };
        assert_eq!(s.apply(set("alice")), Ok(()));
        assert_eq!(s.users["alice"].hash, "h3");
        assert_eq!(s.apply(set("bob")).unwrap_err().0, ErrorCode::NotFound);

        let grants = |grant, publish: &[&str]| Change::Grants {
            name: "alice".into(),
            grant,
            publish: publish.iter().map(|p| p.to_string()).collect(),
            subscribe: vec!["orders.>".into()],
        };
        assert_eq!(s.apply(grants(true, &["audit.*"])), Ok(()));
        assert_eq!(s.users["alice"].publish, ["orders.>", "audit.*"]);
        assert_eq!(s.users["alice"].subscribe, ["orders.>"]);
        // Taking away a pattern the user lacks is refused, and changes nothing.
        let before = s.clone();
        let e = s.apply(grants(false, &["audit.*", "nope"])).unwrap_err();
        assert_eq!(e.0, ErrorCode::NotFound);
        assert_eq!(s, before);
        assert_eq!(s.apply(grants(false, &["audit.*"])), Ok(()));
        assert_eq!(s.users["alice"].publish, ["orders.>"]);
        assert!(s.users["alice"].subscribe.is_empty());

        assert_eq!(
            s.apply(Change::RemoveUser {
                name: "alice".into()
            }),
            Ok(())
        );
        assert!(s.users.is_empty());
        let e = s
            .apply(Change::RemoveUser {
                name: "alice".into(),
            })
            .unwrap_err();
        assert_eq!(e.0, ErrorCode::NotFound);
    }

    #[test]
    fn the_first_key_stays_and_revocations_expire_by_the_proposers_clock() {
        let mut s = AuthState::default();
        let k1 = TokenKey(vec![1; KEY_LEN]);
        assert_eq!(s.apply(Change::TokenKey(k1.clone())), Ok(()));
        assert_eq!(
            s.apply(Change::TokenKey(TokenKey(vec![2; KEY_LEN]))),
            Ok(())
        );
        assert_eq!(s.token_key, Some(k1));
        assert!(s.apply(Change::TokenKey(TokenKey(vec![3; 4]))).is_err());
        assert!(!format!("{s:?}").contains("1, 1"), "the key is not printed");

        let revoke = |jti: &str, exp, now| Change::RevokeToken {
            jti: jti.into(),
            exp,
            now,
        };
        assert_eq!(s.apply(revoke("a", 100, 0)), Ok(()));
        assert_eq!(s.apply(revoke("b", 300, 50)), Ok(()));
        assert_eq!(s.revoked.len(), 2);
        assert_eq!(s.apply(revoke("c", 400, 200)), Ok(()));
        assert_eq!(s.revoked.keys().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(s.apply(Change::Sync), Ok(()));
    }
}
