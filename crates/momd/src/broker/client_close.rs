//! `client_close`: one client ends another's connection, as a dashboard's "close
//! connection" does (RabbitMQ's management UI, k9s). The closed session goes exactly as if
//! its socket had closed: its watches and consumers end and its unacked deliveries go back
//! to their queues at once; then its writer sends a last `error` and closes the socket.

use mom_proto::{ClientClose, ErrorCode, Req, ServerFrame};

use super::{json_str, Broker};

impl Broker {
    pub(super) fn client_close(&mut self, session: u64, c: ClientClose) {
        let Some((user, admin)) = self
            .sessions
            .get(&session)
            .map(|s| (s.client.user.clone(), s.identity.admin))
        else {
            return;
        };
        let Some((&target, t)) = self
            .sessions
            .iter()
            .find(|(_, s)| s.client.client_id == c.client_id)
        else {
            return self.error(
                session,
                c.id,
                ErrorCode::NotFound,
                format!("no connected client {}", c.client_id),
            );
        };
        if t.client.user != user && !admin {
            return self.error(
                session,
                c.id,
                ErrorCode::Forbidden,
                format!(
                    "client {} belongs to user {:?}; only its own user or an admin may close it",
                    c.client_id, t.client.user
                ),
            );
        }
        let by = self
            .sessions
            .get(&session)
            .map(|s| (s.client.client_id, s.client.name.clone()))
            .unwrap_or_default();
        // The reply first: a client closing itself still learns that it worked.
        self.reply(session, ServerFrame::Ok(Req { id: c.id }));
        if let Some(t) = self.sessions.get(&target) {
            t.outbox.close(ServerFrame::error(
                None,
                ErrorCode::Unavailable,
                format!("connection closed by client {} ({})", by.0, by.1),
            ));
        }
        self.sys_event(format!(
            r#"{{"event":"client_closed","client_id":{},"by":{},"by_name":{}}}"#,
            c.client_id,
            by.0,
            json_str(&by.1)
        ));
        // Now, not when its reader notices: what it held is given back before the `ok` is
        // read, and requests it still has in flight are ignored.
        self.disconnect(target);
    }

    /// A user was removed: its connections end, as if closed by `client_close`.
    pub(super) fn close_user_sessions(&mut self, user: &str) {
        let targets: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.identity.user == user)
            .map(|(id, _)| *id)
            .collect();
        for t in targets {
            if let Some(s) = self.sessions.get(&t) {
                s.outbox.close(ServerFrame::error(
                    None,
                    ErrorCode::Unauthorized,
                    format!("user {user:?} was removed"),
                ));
            }
            self.disconnect(t);
        }
    }
}
