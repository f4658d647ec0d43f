//! Requests of users and tokens: logging in for a token, revoking it, and (admins) the
//! users of the broker.

use mom_proto::{
    ClientFrame, Req, ServerFrame, Token, TokenCreate, TokenRevoke, UserAdd, UserGrant, UserInfo,
    UserPasswd, UserReq,
};

use super::{unexpected, Client, Result};

/// Patterns a user may publish to and subscribe to.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

impl Client {
    /// A token for the user this connection authenticated as; `ttl_ms` 0: the server's
    /// default.
    pub async fn token_create(&self, ttl_ms: u64) -> Result<Token> {
        match self
            .request(|id| ClientFrame::TokenCreate(TokenCreate { id, ttl_ms }))
            .await?
        {
            ServerFrame::Token(t) => Ok(t),
            other => Err(unexpected(other)),
        }
    }

    /// Revoke `token`, or the token this connection authenticated with.
    pub async fn token_revoke(&self, token: Option<String>) -> Result<()> {
        match self
            .request(|id| ClientFrame::TokenRevoke(TokenRevoke { id, token }))
            .await?
        {
            ServerFrame::Ok(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    pub async fn user_add(
        &self,
        name: &str,
        password: &str,
        admin: bool,
        grants: Grants,
    ) -> Result<UserInfo> {
        let (name, password) = (name.to_string(), password.to_string());
        self.user_reply(|id| {
            ClientFrame::UserAdd(UserAdd {
                id,
                name,
                password,
                admin,
                publish: grants.publish,
                subscribe: grants.subscribe,
            })
        })
        .await
    }

    pub async fn user_rm(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        match self
            .request(|id| ClientFrame::UserRm(UserReq { id, name }))
            .await?
        {
            ServerFrame::Ok(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    pub async fn user_info(&self, name: &str) -> Result<UserInfo> {
        let name = name.to_string();
        self.user_reply(|id| ClientFrame::UserInfo(UserReq { id, name }))
            .await
    }

    pub async fn user_list(&self) -> Result<Vec<UserInfo>> {
        match self.request(|id| ClientFrame::UserList(Req { id })).await? {
            ServerFrame::UserList(l) => Ok(l.users),
            other => Err(unexpected(other)),
        }
    }

    pub async fn user_passwd(&self, name: &str, password: &str) -> Result<UserInfo> {
        let (name, password) = (name.to_string(), password.to_string());
        self.user_reply(|id| ClientFrame::UserPasswd(UserPasswd { id, name, password }))
            .await
    }

    /// Add (`grant`) or take away patterns.
    pub async fn user_grants(&self, name: &str, grant: bool, grants: Grants) -> Result<UserInfo> {
        let name = name.to_string();
        self.user_reply(|id| {
            let g = UserGrant {
                id,
                name,
                publish: grants.publish,
                subscribe: grants.subscribe,
            };
            if grant {
                ClientFrame::UserGrant(g)
            } else {
                ClientFrame::UserRevoke(g)
            }
        })
        .await
    }

    async fn user_reply(&self, make: impl FnOnce(u64) -> ClientFrame) -> Result<UserInfo> {
        match self.request(make).await? {
            ServerFrame::UserInfo(u) => Ok(u.user),
            other => Err(unexpected(other)),
        }
    }
}
