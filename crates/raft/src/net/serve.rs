//! The listening side: a peer's handshake checked, then its RPCs handed to the group they
//! name (or to the application's handler).

use super::*;

/// Serves peers' RPCs on `listener` until it fails.
pub async fn serve(
    listener: TcpListener,
    me: Identity,
    groups: Groups,
    app: Option<AppHandler>,
    check: PeerCheck,
    contacts: Contacts,
) -> std::io::Result<()> {
    loop {
        let (stream, addr) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let me = me.clone();
        let groups = groups.clone();
        let app = app.clone();
        let check = check.clone();
        let contacts = contacts.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_conn(stream, me, groups, app, check, contacts).await {
                tracing::debug!(%addr, "peer connection ended: {e}");
            }
        });
    }
}

async fn serve_conn(
    stream: TcpStream,
    me: Identity,
    groups: Groups,
    app: Option<AppHandler>,
    check: PeerCheck,
    contacts: Contacts,
) -> Result<(), String> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tls::accept(me.tls.as_deref(), stream))
        .await
        .map_err(|_| "no TLS handshake in time".to_string())??;
    let mut framed = Framed::new(stream, codec());
    let hello: Hello = read_handshake(&mut framed, "hello").await?;
    let refusal = if hello.cluster != me.cluster {
        Some(format!(
            "this is node {} of cluster {:?}, not of cluster {:?}",
            me.node, me.cluster, hello.cluster
        ))
    } else if hello.to != me.node {
        Some(format!(
            "this is node {} of cluster {:?}, not node {}",
            me.node, me.cluster, hello.to
        ))
    } else if hello.from == me.node {
        Some(format!("node {} cannot peer with itself", me.node))
    } else if hello.groups != me.groups && hello.groups != 0 && me.groups != 0 {
        Some(format!(
            "node {} spreads its topics over {} data groups, node {} over {}: every node of \
             a cluster has the same --data-groups",
            me.node, me.groups, hello.from, hello.groups
        ))
    } else {
        // The dialer proves it holds the secret before anything it says is believed
        // (its incarnation included: `check` remembers the first one it sees).
        match prove_dialer(&mut framed, &me, &hello).await? {
            Some(r) => Some(r),
            None => check(hello.from, hello.incarnation).err(),
        }
    };
    let reply = match &refusal {
        Some(r) => HelloReply::Refused(r.clone()),
        None => HelloReply::Ok {
            incarnation: me.incarnation,
        },
    };
    framed
        .send(Bytes::from(encode(&reply)?))
        .await
        .map_err(|e| e.to_string())?;
    if let Some(r) = refusal {
        tracing::warn!(from = hello.from, "peer refused: {r}");
        return Err(r);
    }
    let (mut sink, mut stream) = framed.split();
    let (tx, mut rx) = mpsc::channel::<Response>(1024);
    let writer = tokio::spawn(async move {
        while let Some(resp) = rx.recv().await {
            let Ok(bytes) = encode(&resp) else { continue };
            if sink.send(Bytes::from(bytes)).await.is_err() {
                break;
            }
        }
    });
    while let Some(frame) = stream.next().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let req: Request =
            rmp_serde::from_slice(&frame).map_err(|e| format!("bad peer request: {e}"))?;
        contacts.touch(hello.from);
        let groups = groups.clone();
        let app = app.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let result = handle(req.group, req.rpc, &groups, app.as_ref()).await;
            let _ = tx.send(Response { id: req.id, result }).await;
        });
    }
    drop(tx);
    let _ = writer.await;
    Ok(())
}

/// The dialer's next handshake message (`what`), within `CONNECT_TIMEOUT`.
async fn read_handshake<T: serde::de::DeserializeOwned>(
    framed: &mut Framed<PeerStream, LengthDelimitedCodec>,
    what: &str,
) -> Result<T, String> {
    let frame = tokio::time::timeout(CONNECT_TIMEOUT, framed.next())
        .await
        .map_err(|_| format!("no {what} in time"))?
        .ok_or_else(|| format!("closed before its {what}"))?
        .map_err(|e| e.to_string())?;
    rmp_serde::from_slice(&frame).map_err(|e| format!("bad {what}: {e}"))
}

/// With a cluster secret: challenges the dialer and checks its proof. The refusal to send
/// if it has no proof or a wrong one; `Err` if the connection failed meanwhile.
async fn prove_dialer(
    framed: &mut Framed<PeerStream, LengthDelimitedCodec>,
    me: &Identity,
    hello: &Hello,
) -> Result<Option<String>, String> {
    let Some(secret) = &me.secret else {
        return Ok(None);
    };
    let Some(theirs) = &hello.nonce else {
        return Ok(Some(format!(
            "node {} requires the cluster secret (--cluster-secret-file)",
            me.node
        )));
    };
    if theirs.len() != secret::NONCE {
        return Ok(Some(format!("a nonce of {} bytes", theirs.len())));
    }
    let ours = secret::nonce()?;
    let h = Handshake {
        cluster: &me.cluster,
        dialer: hello.from,
        listener: me.node,
        dialer_nonce: theirs,
        listener_nonce: &ours,
    };
    let challenge = HelloReply::Challenge {
        proof: secret.prove(Role::Listener, &h),
        nonce: ours.clone(),
    };
    framed
        .send(Bytes::from(encode(&challenge)?))
        .await
        .map_err(|e| e.to_string())?;
    let proof: Proof = read_handshake(framed, "proof").await?;
    Ok((!secret.verify(Role::Dialer, &h, &proof.proof))
        .then(|| format!("node {} holds another cluster secret", hello.from)))
}

async fn handle(group: GroupId, rpc: Rpc, groups: &Groups, app: Option<&AppHandler>) -> RpcResult {
    if let Rpc::App(bytes) = rpc {
        return match app {
            Some(app) => RpcResult::App(app(group, bytes).await),
            None => RpcResult::App(Err("this node takes no application requests".into())),
        };
    }
    let Some(raft) = groups.get(group) else {
        return RpcResult::NoGroup;
    };
    match rpc {
        Rpc::Append(r) => RpcResult::Append(raft.append_entries(r).await),
        Rpc::Vote(r) => RpcResult::Vote(raft.vote(r).await),
        Rpc::Snapshot(r) => RpcResult::Snapshot(raft.install_snapshot(r).await),
        Rpc::App(_) => RpcResult::NoGroup,
    }
}
