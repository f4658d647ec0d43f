//! The dialing side: a connection to a peer, its handshake (the identity checks and, with a
//! cluster secret, the proofs of `secret.rs`), then a task that writes requests and hands
//! each reply to whoever waits for it.

use super::*;

/// The dialer's side of the handshake (see the module's and `secret.rs`'s docs).
async fn dial_handshake(
    framed: &mut Framed<PeerStream, LengthDelimitedCodec>,
    me: &Identity,
    check: &PeerCheck,
    target: NodeId,
) -> Result<(), CallError> {
    let unreachable = |e: String| CallError::Unreachable(e);
    let nonce = match me.secret {
        Some(_) => Some(secret::nonce().map_err(unreachable)?),
        None => None,
    };
    let hello = Hello {
        cluster: me.cluster.clone(),
        from: me.node,
        to: target,
        incarnation: me.incarnation,
        nonce: nonce.clone(),
        groups: me.groups,
    };
    framed
        .send(Bytes::from(encode(&hello).map_err(unreachable)?))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let mut reply = read_reply(framed).await?;
    if let HelloReply::Challenge {
        nonce: theirs,
        proof,
    } = &reply
    {
        if theirs.len() != secret::NONCE {
            return Err(unreachable(format!("a nonce of {} bytes", theirs.len())));
        }
        let (Some(secret), Some(ours)) = (&me.secret, &nonce) else {
            return Err(CallError::Refused(format!(
                "node {target} requires the cluster secret (--cluster-secret-file), \
                 and this node has none"
            )));
        };
        let h = Handshake {
            cluster: &me.cluster,
            dialer: me.node,
            listener: target,
            dialer_nonce: ours,
            listener_nonce: theirs,
        };
        if !secret.verify(Role::Listener, &h, proof) {
            return Err(CallError::Refused(format!(
                "node {target} does not hold this cluster's secret"
            )));
        }
        let proof = Proof {
            proof: secret.prove(Role::Dialer, &h),
        };
        framed
            .send(Bytes::from(encode(&proof).map_err(unreachable)?))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        reply = read_reply(framed).await?;
    } else if me.secret.is_some() && matches!(reply, HelloReply::Ok { .. }) {
        return Err(CallError::Refused(format!(
            "node {target} has no cluster secret, and this node requires one"
        )));
    }
    match reply {
        HelloReply::Ok { incarnation } => check(target, incarnation).map_err(CallError::Refused),
        HelloReply::Refused(why) => Err(CallError::Refused(why)),
        HelloReply::Challenge { .. } => Err(unreachable("a second challenge".into())),
    }
}

async fn read_reply(
    framed: &mut Framed<PeerStream, LengthDelimitedCodec>,
) -> Result<HelloReply, CallError> {
    let frame = framed
        .next()
        .await
        .ok_or_else(|| CallError::Unreachable("closed during the handshake".into()))?
        .map_err(|e| CallError::Unreachable(e.to_string()))?;
    rmp_serde::from_slice::<HelloReply>(&frame)
        .map_err(|e| CallError::Unreachable(format!("bad handshake reply: {e}")))
}

pub(super) async fn dial(
    me: &Identity,
    check: &PeerCheck,
    target: NodeId,
    addr: &str,
    name: &str,
) -> Result<Conn, CallError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| CallError::Unreachable(format!("{addr}: {e}")))?;
    let _ = stream.set_nodelay(true);
    // A failed TLS handshake is a peer without this cluster's certificates (or without
    // TLS), as a refused hello is: said once as a warning below, and not tried as if the
    // network were at fault.
    let stream = match tls::dial(me.tls.as_deref(), stream, name).await {
        Ok(s) => s,
        Err(why) => {
            tracing::warn!(target, addr, "peer refused: {why}");
            return Err(CallError::Refused(why));
        }
    };
    let mut framed = Framed::new(stream, codec());
    if let Err(e) = dial_handshake(&mut framed, me, check, target).await {
        if let CallError::Refused(why) = &e {
            tracing::warn!(target, addr, "peer refused: {why}");
        }
        return Err(e);
    }
    let (mut sink, mut stream) = framed.split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1024);
    let waiters: Waiters = Default::default();
    let closed = tokio_util::sync::CancellationToken::new();
    let w2 = waiters.clone();
    let c2 = closed.clone();
    let heard = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let opened = std::time::Instant::now();
    let h2 = heard.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = c2.cancelled() => break,
                out = rx.recv() => {
                    let Some(out) = out else { break };
                    if sink.send(Bytes::from(out)).await.is_err() {
                        break;
                    }
                }
                frame = stream.next() => {
                    let Some(Ok(frame)) = frame else { break };
                    h2.store(
                        opened.elapsed().as_millis() as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    let Ok(resp) = rmp_serde::from_slice::<Response>(&frame) else { break };
                    let waiter = w2.lock().unwrap_or_else(|p| p.into_inner()).remove(&resp.id);
                    if let Some(w) = waiter {
                        let _ = w.send(resp.result);
                    }
                }
            }
        }
        c2.cancel();
        // Dropping the waiters tells every caller the connection is gone.
        w2.lock().unwrap_or_else(|p| p.into_inner()).clear();
    });
    Ok(Conn {
        tx,
        waiters,
        closed,
        heard,
        opened,
    })
}
