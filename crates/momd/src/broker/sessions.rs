//! Connections as the broker sees them: `hello` (the client's identity) and the end of a
//! session (its watches, consumers and fetches go).

use mom_proto::{ClientInfo, ErrorCode, Hello, ServerFrame, Welcome};

use super::{json_str, now_ms, Broker, Session, SessionInfo, MAX_CLIENT_NAME};

impl Broker {
    pub(super) fn hello(
        &mut self,
        info: SessionInfo,
        hello: Hello,
    ) -> Result<Welcome, Box<ServerFrame>> {
        let next = self.store.next_client_id().map_err(|e| {
            Box::new(ServerFrame::error(
                Some(hello.id),
                ErrorCode::Unavailable,
                format!("cannot assign a client id: {e}"),
            ))
        })?;
        let (welcome, event) = self.welcome(info, hello, next)?;
        self.sys_event(event);
        Ok(welcome)
    }

    /// The session of a `hello`, given the next client id; with the `client_connected`
    /// event to record.
    pub(super) fn welcome(
        &mut self,
        info: SessionInfo,
        hello: Hello,
        next: u64,
    ) -> Result<(Welcome, String), Box<ServerFrame>> {
        // A client id given before is kept, so identity survives reconnects.
        let client_id = match hello.client_id {
            Some(c)
                if c > 0
                    && c < next
                    && !self.sessions.values().any(|s| s.client.client_id == c) =>
            {
                c
            }
            _ => next,
        };
        if hello.client.len() > MAX_CLIENT_NAME {
            return Err(Box::new(ServerFrame::error(
                Some(hello.id),
                ErrorCode::BadRequest,
                format!(
                    "client name is {} bytes long; the limit is {MAX_CLIENT_NAME}",
                    hello.client.len()
                ),
            )));
        }
        let user = info.identity.user.clone();
        let max = self.auth.cfg.max_connections_per_user;
        // `anonymous` is every client of a server without users, not one user: it is held
        // to --max-connections only.
        if user != crate::auth::ANONYMOUS
            && self
                .sessions
                .values()
                .filter(|s| s.identity.user == user)
                .count()
                >= max
        {
            return Err(Box::new(ServerFrame::error(
                Some(hello.id),
                ErrorCode::RateLimited,
                format!("user {user:?} already has {max} connections, the limit per user"),
            )));
        }
        self.dirty = true;
        let now = now_ms();
        self.sessions.insert(
            info.session,
            Session {
                outbox: info.outbox,
                client: ClientInfo {
                    client_id,
                    name: hello.client.clone(),
                    user: user.clone(),
                    addr: info.addr.clone(),
                    since: now,
                    ..ClientInfo::default()
                },
                watches: Vec::new(),
                identity: info.identity,
            },
        );
        let event = format!(
            r#"{{"event":"client_connected","client_id":{client_id},"name":{},"addr":{}}}"#,
            json_str(&hello.client),
            json_str(&info.addr)
        );
        let welcome = Welcome {
            id: hello.id,
            version: mom_proto::PROTOCOL_VERSION,
            server_version: env!("CARGO_PKG_VERSION").to_string(),
            server_id: self.server_id.clone(),
            client_id,
            user,
            max_frame: self.cfg.max_frame as u64,
            max_payload: self.cfg.max_payload as u64,
            max_inflight: self.cfg.max_inflight as u64,
            cluster_id: self
                .cluster
                .as_ref()
                .map(|c| c.cluster_id().to_string())
                .unwrap_or_default(),
        };
        Ok((welcome, event))
    }

    pub(super) fn disconnect(&mut self, session: u64) {
        let Some(s) = self.sessions.remove(&session) else {
            return;
        };
        for w in &s.watches {
            self.drop_watch(*w);
        }
        self.session_gone_for_queues(session);
        self.sys_event(format!(
            r#"{{"event":"client_disconnected","client_id":{},"name":{}}}"#,
            s.client.client_id,
            json_str(&s.client.name)
        ));
    }
}
