//! The requests of users and tokens, answered by the connection's own task: a password is
//! hashed or checked there (on the blocking pool), never in the broker's task.

use mom_proto::{ClientFrame, ErrorCode, Req, ServerFrame, Token, UserInfoReply, UserList};

use super::{users, Auth, Identity, Refusal, ANONYMOUS};
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

async fn answer(
    auth: &Auth,
    who: &Identity,
    frame: ClientFrame,
    broker: &BrokerHandle,
) -> Result<ServerFrame, Refusal> {
    let info = |id, user| ServerFrame::UserInfo(UserInfoReply { id, user });
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
            let (token, expires) = auth.create_token(who, t.ttl_ms, now_ms())?;
            ServerFrame::Token(Token {
                id: t.id,
                token,
                user: who.user.clone(),
                expires,
            })
        }
        ClientFrame::TokenRevoke(r) => {
            auth.revoke_token(who, r.token.as_deref())?;
            ServerFrame::Ok(Req { id: r.id })
        }
        ClientFrame::UserAdd(u) => {
            admin_only(who)?;
            users::check_name(&u.name)?;
            let h = hash(u.password).await?;
            let user = auth.add_user(&u.name, h, u.admin, &u.publish, &u.subscribe, now_ms())?;
            info(u.id, user)
        }
        ClientFrame::UserRm(u) => {
            admin_only(who)?;
            auth.remove_user(&u.name)?;
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
            let h = hash(p.password).await?;
            info(p.id, auth.set_password(&p.name, h)?)
        }
        ClientFrame::UserGrant(g) => {
            admin_only(who)?;
            info(
                g.id,
                auth.change_grants(&g.name, true, &g.publish, &g.subscribe)?,
            )
        }
        ClientFrame::UserRevoke(g) => {
            admin_only(who)?;
            info(
                g.id,
                auth.change_grants(&g.name, false, &g.publish, &g.subscribe)?,
            )
        }
        other => {
            return Err((
                ErrorCode::Internal,
                format!("request {} is not a user request", other.id()),
            ))
        }
    })
}
