//! Connecting: where to (a server list, tried in order, with TLS and credentials) and the
//! hello handshake.

use super::*;

/// `a:1: connection refused; b:2: no answer in 5s`.
pub(super) fn tried_list(tried: &[(String, String)]) -> String {
    let each: Vec<String> = tried
        .iter()
        .map(|(addr, why)| format!("{addr}: {why}"))
        .collect();
    each.join("; ")
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The servers (`HOST:PORT`), tried in this order: one that cannot be reached, or fails
    /// the TLS or hello handshake for its own reasons, gives way to the next; a refusal of
    /// the credentials or the protocol version is the answer. See [`parse_servers`].
    pub servers: Vec<String>,
    pub name: String,
    pub client_id: Option<u64>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// Speak TLS, trusting these CA certificates (PEM); see also `tls_insecure`.
    pub tls_ca: Option<std::path::PathBuf>,
    /// Speak TLS without checking the server's certificate.
    pub tls_insecure: bool,
    /// Speak TLS, trusting the system's CA certificates (when `tls_ca` is not given).
    pub tls: bool,
    pub connect_timeout: Duration,
}

impl ConnectOptions {
    /// Options for one server.
    pub fn new(addr: impl Into<String>, name: impl Into<String>) -> Self {
        ConnectOptions::with_servers(vec![addr.into()], name)
    }

    /// Options for a list of servers to fail over between, tried in this order (see
    /// [`parse_servers`] for a list as people write it).
    pub fn with_servers(servers: Vec<String>, name: impl Into<String>) -> Self {
        ConnectOptions {
            servers,
            name: name.into(),
            client_id: None,
            user: None,
            password: None,
            token: None,
            tls_ca: None,
            tls_insecure: false,
            tls: false,
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// The servers as written on a command line, `a:1,b:2` (what saved tokens are kept
    /// under).
    pub fn server_list(&self) -> String {
        self.servers.join(",")
    }

    /// The same options with the list turned to start at `server`: a second connection to
    /// the node the first one uses.
    pub fn starting_at(&self, server: &str) -> ConnectOptions {
        let mut o = self.clone();
        o.servers = servers::rotated(&self.servers, server, 0);
        o
    }

    /// The same options with the list turned to start after `server`: a reconnect moves on
    /// from the server it lost and comes back to it last (as NATS clients do).
    pub fn starting_after(&self, server: &str) -> ConnectOptions {
        let mut o = self.clone();
        o.servers = servers::rotated(&self.servers, server, 1);
        o
    }
}

impl Client {
    /// Connect and say hello: to the first of `opts.servers` that answers (see
    /// [`ConnectOptions::servers`]).
    pub async fn connect(opts: &ConnectOptions) -> Result<Client> {
        let tls = tls::connector(opts).map_err(|reason| ClientError::Connect {
            addr: opts.server_list(),
            reason,
        })?;
        let mut tried: Vec<(String, ClientError)> = Vec::new();
        for addr in &opts.servers {
            match Client::connect_to(opts, addr, tls.as_ref()).await {
                Ok(c) => return Ok(c),
                Err(e) if e.holds_for_every_server() => return Err(e),
                Err(e) => tried.push((addr.clone(), e)),
            }
        }
        match tried.len() {
            0 => Err(ClientError::Connect {
                addr: "no server".into(),
                reason: "the server list is empty".into(),
            }),
            // One server: its own error, as it always was.
            1 => Err(tried.remove(0).1),
            _ => Err(ClientError::ConnectAny {
                tried: tried
                    .into_iter()
                    .map(|(addr, e)| {
                        let why = match e {
                            ClientError::Connect { reason, .. } => servers::compact(&reason),
                            other => other.to_string(),
                        };
                        (addr, why)
                    })
                    .collect(),
            }),
        }
    }

    /// Connect to one server and say hello.
    async fn connect_to(
        opts: &ConnectOptions,
        addr: &str,
        tls: Option<&tls::TlsConnector>,
    ) -> Result<Client> {
        let connect_err = |reason: String| ClientError::Connect {
            addr: addr.to_string(),
            reason,
        };
        let (rd, wr, over_tls) = tls::open(addr, tls, opts.connect_timeout)
            .await
            .map_err(connect_err)?;
        // Frames from the server may exceed max_frame by one payload (docs/protocol.md).
        let max_in = mom_proto::DEFAULT_MAX_FRAME * 2 + mom_proto::DEFAULT_MAX_PAYLOAD;
        let mut reader = FramedRead::with_capacity(
            rd,
            Codec::<ServerFrame, ClientFrame>::new(max_in),
            256 * 1024,
        );
        let mut writer = FramedWrite::new(wr, Codec::<ServerFrame, ClientFrame>::new(usize::MAX));

        writer
            .send(ClientFrame::Hello(Hello {
                id: 0,
                version: PROTOCOL_VERSION,
                client: opts.name.clone(),
                client_id: opts.client_id,
                user: opts.user.clone(),
                password: opts.password.clone(),
                token: opts.token.clone(),
            }))
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        // A TLS server answers a plaintext hello with an alert: say so, not "frame too large".
        let speaks_tls = |r: &FramedRead<_, _>| !over_tls && tls::looks_like_tls(r.read_buffer());
        let welcome = match tokio::time::timeout(opts.connect_timeout, reader.next()).await {
            Err(_) => return Err(connect_err("no welcome from the server".into())),
            Ok(None | Some(Err(_))) if speaks_tls(&reader) => {
                return Err(connect_err(tls::SERVER_SPEAKS_TLS.into()))
            }
            Ok(None) => return Err(connect_err("the server closed the connection".into())),
            Ok(Some(Err(e))) => return Err(connect_err(format!("not a mom server? {e}"))),
            Ok(Some(Ok(ServerFrame::Welcome(w)))) => w,
            Ok(Some(Ok(ServerFrame::Error(e)))) => return Err(ClientError::from_frame(e)),
            Ok(Some(Ok(other))) => {
                return Err(ClientError::Protocol(format!(
                    "expected welcome, got {other:?}"
                )))
            }
        };
        // A server without users takes everyone as `anonymous`: a client that asked to be
        // someone must not go on believing it is.
        if let Some(u) = opts.user.as_ref().filter(|u| **u != welcome.user) {
            return Err(ClientError::Server {
                code: ErrorCode::Unauthorized,
                message: format!(
                    "this server has no users: connected as {:?}, not {u:?} (drop --user and \
                     MOM_USER, or add the user with `momctl user add`)",
                    welcome.user
                ),
            });
        }
        writer
            .encoder_mut()
            .set_max_frame(welcome.max_frame as usize);

        let shared = Arc::new(Shared {
            waiters: Waiters::default(),
            watches: Watches::default(),
            pending_watches: Watches::default(),
            closed: Mutex::new(None),
            gone: CancellationToken::new(),
        });
        let (out_tx, mut out_rx) = mpsc::channel::<ClientFrame>(1024);
        tokio::spawn(async move {
            while let Some(f) = out_rx.recv().await {
                if writer.feed(f).await.is_err() {
                    break;
                }
                // Write what is queued in one go.
                while let Ok(f) = out_rx.try_recv() {
                    if writer.feed(f).await.is_err() {
                        return;
                    }
                }
                if writer.flush().await.is_err() {
                    break;
                }
            }
        });
        let sh = shared.clone();
        tokio::spawn(async move {
            let why = loop {
                match reader.next().await {
                    None => break String::new(),
                    Some(Err(e)) => break format!(": {e}"),
                    Some(Ok(frame)) => {
                        if let Some(why) = route(&sh, frame).await {
                            break why;
                        }
                    }
                }
            };
            *sh.closed.lock().expect("lock poisoned") = Some(why);
            // Dropping the senders wakes every waiter with an error.
            sh.waiters.lock().expect("lock poisoned").clear();
            sh.watches.lock().expect("lock poisoned").clear();
            sh.pending_watches.lock().expect("lock poisoned").clear();
            sh.gone.cancel();
        });
        Ok(Client {
            out: out_tx,
            shared,
            next_id: Arc::new(AtomicU64::new(1)),
            welcome: Arc::new(welcome),
            server: addr.into(),
        })
    }
}
