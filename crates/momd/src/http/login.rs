//! `POST /v1/login`: a token, the same as `momctl login` gets (`token_create`, answered by
//! `auth::frames` as for a TCP connection). Credentials in the `Authorization` header
//! (Basic, or Bearer to renew), or as JSON `{"user", "password"}`; `{"ttl": "10m"}` asks
//! for a shorter token than the server's default.

use super::params::JsonLine;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use mom_proto::{ClientFrame, ServerFrame, TokenCreate};
use serde::Deserialize;
use serde_json::json;

use super::auth::{authenticate, credentials, Credentials};
use super::error::{ApiError, ApiResult};
use super::params::{body, parse_duration};
use super::{App, Peer};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Login {
    user: Option<String>,
    password: Option<String>,
    ttl: Option<String>,
}

pub async fn login(
    State(app): State<App>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    req: Body,
) -> ApiResult<JsonLine> {
    let raw = body(req, 64 * 1024).await?;
    let l: Login = if raw.iter().all(u8::is_ascii_whitespace) {
        Login::default()
    } else {
        serde_json::from_slice(&raw)
            .map_err(|e| ApiError::bad_request(format!("the login: {e}")))?
    };
    let creds = match (l.user, l.password) {
        (Some(u), Some(p)) => Credentials::Password(u, p),
        (None, None) => credentials(&headers)?,
        _ => return Err(ApiError::bad_request("give both user and password")),
    };
    let ttl_ms = match &l.ttl {
        Some(t) => parse_duration("ttl", t)?.as_millis() as u64,
        None => 0,
    };
    let who = authenticate(&app, peer, creds).await?;
    let frame = ClientFrame::TokenCreate(TokenCreate { id: 0, ttl_ms });
    match crate::auth::frames::handle(&app.auth, &who, frame, &app.broker.handle).await {
        ServerFrame::Token(t) => Ok(JsonLine(json!({
            "token": t.token,
            "user": t.user,
            "expires": t.expires,
        }))),
        other => Err(ApiError::unexpected(&other)),
    }
}
