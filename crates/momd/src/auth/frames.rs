//! The requests of users and tokens, answered by the connection's own task: a password is
//! hashed or checked there (on the blocking pool), never in the broker's task.
//!
//! A change is checked here (who may, names, patterns), then made through `Auth::commit`:
//! in the data dir of a single node, or by the metadata group of a cluster, which answers
//! once the change is committed and applied on this node. A cluster node hashes a new
//! password itself, with a salt it picks, and only the hash goes to the others.

use mom_proto::{ClientFrame, ErrorCode, Req, ServerFrame, Token, UserInfoReply, UserList};

use super::{users, Auth, Change, Identity, Refusal, UserRecord, ANONYMOUS};
use crate::broker::{now_ms, BrokerHandle, Cmd};

/// Is this one of the frames answered here?
pub fn is_auth_frame(f: &ClientFrame) -> bool {
    matches!(
        f,
        ClientFrame::TokenCreate(_)
            | ClientFrame::TokenRevoke(_)
            | ClientFrame::UserAdd(_)
            | ClientFrame::UserRm(_)
            | ClientFrame::UserInfo(_)
            | ClientFrame::UserList(_)
            | ClientFrame::UserPasswd(_)
            | ClientFrame::UserGrant(_)
            | ClientFrame::UserRevoke(_)
    )
}

fn admin_only(who: &Identity) -> Result<(), Refusal> {
    if who.admin {
        Ok(())
    } else {
        Err((
            ErrorCode::Forbidden,
            format!(
                "user {:?} is not an admin; only admins manage users",
                who.user
            ),
        ))
    }
}

fn self_or_admin(who: &Identity, name: &str) -> Result<(), Refusal> {
    if who.admin || who.user == name {
        Ok(())
    } else {
        Err((
            ErrorCode::Forbidden,
            format!("only {name:?} itself or an admin may do this"),
        ))
    }
}

async fn hash(password: String) -> Result<String, Refusal> {
    users::check_password(&password)?;
    tokio::task::spawn_blocking(move || users::hash(&password))
        .await
        .map_err(|e| (ErrorCode::Internal, e.to_string()))?
        .map_err(|e| (ErrorCode::Internal, e))
}

/// Answer one user or token request of the connection `who`.
pub async fn handle(
    auth: &Auth,
    who: &Identity,
    frame: ClientFrame,
    broker: &BrokerHandle,
) -> ServerFrame {
    let id = frame.id();
    match answer(auth, who, frame, broker).await {
        Ok(f) => f,
        Err((code, msg)) => ServerFrame::error(Some(id), code, msg),
    }
}

/// The user `name` as this node knows it (after a change, as the change left it).
fn user_info(auth: &Auth, name: &str) -> Result<mom_proto::UserInfo, Refusal> {
    auth.user(name)
        .map(|u| u.info())
        .ok_or_else(|| (ErrorCode::NotFound, format!("no user {name:?}")))
}

async fn answer(
    auth: &Auth,
    who: &Identity,
    frame: ClientFrame,
    broker: &BrokerHandle,
) -> Result<ServerFrame, Refusal> {
    let info = |id, user| ServerFrame::UserInfo(UserInfoReply { id, user });
    let is_grant = matches!(frame, ClientFrame::UserGrant(_));
    Ok(match frame {
        ClientFrame::TokenCreate(t) => {
            if who.user == ANONYMOUS && !auth.has_users() {
                return Err((
                    ErrorCode::BadRequest,
                    "this server has no users: there is nothing to log in to (add one with \
                     `momctl user add`)"
                        .into(),
                ));
            }
            let (token, expires) = auth.create_token(who, t.ttl_ms, now_ms()).await?;
            ServerFrame::Token(Token {
                id: t.id,
                token,
                user: who.user.clone(),
                expires,
            })
        }
        ClientFrame::TokenRevoke(r) => {
            auth.revoke_token(who, r.token.as_deref(), now_ms()).await?;
            ServerFrame::Ok(Req { id: r.id })
        }
        ClientFrame::UserAdd(u) => {
            admin_only(who)?;
            users::check_name(&u.name)?;
            users::check_patterns(&u.publish)?;
            users::check_patterns(&u.subscribe)?;
            if auth.user(&u.name).is_some() {
                return Err((ErrorCode::Conflict, format!("user {:?} exists", u.name)));
            }
            let hash = hash(u.password).await?;
            let mut rec = UserRecord {
                name: u.name.clone(),
                hash,
                admin: u.admin,
                publish: Vec::new(),
                subscribe: Vec::new(),
                created: now_ms(),
            };
            users::change_patterns(&mut rec, true, &u.publish, &u.subscribe)?;
            auth.commit(Change::AddUser(rec)).await?;
            info(u.id, user_info(auth, &u.name)?)
        }
        ClientFrame::UserRm(u) => {
            admin_only(who)?;
            auth.commit(Change::RemoveUser {
                name: u.name.clone(),
            })
            .await?;
            // A cluster node closes them as it applies the removal; here, at once too.
            broker
                .send(Cmd::UserRemoved {
                    user: u.name.clone(),
                })
                .await;
            ServerFrame::Ok(Req { id: u.id })
        }
        ClientFrame::UserInfo(u) => {
            self_or_admin(who, &u.name)?;
            let user = auth
                .user(&u.name)
                .ok_or_else(|| (ErrorCode::NotFound, format!("no user {:?}", u.name)))?;
            info(u.id, user.info())
        }
        ClientFrame::UserList(r) => {
            admin_only(who)?;
            ServerFrame::UserList(UserList {
                id: r.id,
                users: auth.list_users(),
            })
        }
        ClientFrame::UserPasswd(p) => {
            self_or_admin(who, &p.name)?;
            if auth.user(&p.name).is_none() {
                return Err((ErrorCode::NotFound, format!("no user {:?}", p.name)));
            }
            let hash = hash(p.password).await?;
            auth.commit(Change::SetPassword {
                name: p.name.clone(),
                hash,
            })
            .await?;
            info(p.id, user_info(auth, &p.name)?)
        }
        ClientFrame::UserGrant(g) | ClientFrame::UserRevoke(g) => {
            admin_only(who)?;
            users::check_patterns(&g.publish)?;
            users::check_patterns(&g.subscribe)?;
            auth.commit(Change::Grants {
                name: g.name.clone(),
                grant: is_grant,
                publish: g.publish,
                subscribe: g.subscribe,
            })
            .await?;
            info(g.id, user_info(auth, &g.name)?)
        }
        other => {
            return Err((
                ErrorCode::Internal,
                format!("request {} is not a user request", other.id()),
            ))
        }
    })
}
