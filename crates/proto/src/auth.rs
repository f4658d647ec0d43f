//! Frames of users and tokens (docs/protocol.md, section 4.25 on): logging in for a token,
//! revoking it, and the administration of users.

use serde::{Deserialize, Serialize};

use crate::message::is_false;

/// Ask for a signed token for the user this connection authenticated as.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TokenCreate {
    pub id: u64,
    /// Lifetime asked for, in ms; 0 or absent: the server's default. Never more than the
    /// server's maximum.
    #[serde(default)]
    pub ttl_ms: u64,
}

/// A token, the answer to `token_create`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Token {
    pub id: u64,
    pub token: String,
    pub user: String,
    /// When it expires, ms since the epoch.
    pub expires: u64,
}

/// Revoke a token: the one given, or the one this connection authenticated with.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TokenRevoke {
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Create a user (admins only).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UserAdd {
    pub id: u64,
    pub name: String,
    pub password: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub admin: bool,
    /// Topic patterns the user may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Topic patterns the user may watch, and bind and consume queues on.
    #[serde(default)]
    pub subscribe: Vec<String>,
}

/// Name one user.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UserReq {
    pub id: u64,
    pub name: String,
}

/// Set a user's password (the user itself, or an admin).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UserPasswd {
    pub id: u64,
    pub name: String,
    pub password: String,
}

/// Add (`user_grant`) or take away (`user_revoke`) allowed patterns (admins only).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UserGrant {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub publish: Vec<String>,
    #[serde(default)]
    pub subscribe: Vec<String>,
}

/// A user as the server shows it: never its password or hash.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UserInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub admin: bool,
    #[serde(default)]
    pub publish: Vec<String>,
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// When it was created, ms since the epoch.
    #[serde(default)]
    pub created: u64,
}

/// The answer to `user_add`, `user_info`, `user_grant`, `user_revoke` and `user_passwd`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UserInfoReply {
    pub id: u64,
    pub user: UserInfo,
}

/// The answer to `user_list`: every user, by name.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UserList {
    pub id: u64,
    pub users: Vec<UserInfo>,
}
