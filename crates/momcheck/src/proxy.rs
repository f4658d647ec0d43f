//! A TCP proxy for one directed peer link (node i dials node j), whose faults a checker
//! switches at run time: the nemesis of `momcheck --cluster` and of the cluster fault tests
//! (test tooling, not protocol).
//!
//! A link's two directions are set apart: `forward` carries what the dialer sends (node i's
//! requests to j), `back` what the listener answers. Cutting "i → j" at the packet level is
//! `forward` of the link i→j plus `back` of the link j→i; the trio that owns the links
//! (momcheck's `cluster::nodes`, the tests' `common/cluster.rs`) does that bookkeeping.
//!
//! `Flow::Drop` is a black hole: connections stay open and nothing gets through. Since TCP
//! retransmits lost packets, the faithful model is a stall, not discarded bytes: the proxy
//! stops reading, what the sender writes waits in its socket, and it flows on when the link
//! passes again (bytes thrown away mid-stream would corrupt the framing, which no network
//! does to TCP). `reset` closes the link's open connections and refuses new ones until it is
//! lifted; with `Flow::Drop` after it, new connections are taken and then go unanswered (a
//! host gone dark: its connections are gone and a dial hangs).
//!
//! A proxy runs on a small tokio runtime of its own (`start`) or on the caller's
//! (`start_here`); dropping the proxy stops its tasks and closes every connection. A task waits on a socket or on the link's state, never spins.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What one direction of a link does with the bytes it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Pass,
    /// Forward nothing and keep the connections open (a black hole).
    Drop,
    /// Hold each chunk this long before forwarding it (in order).
    Delay(Duration),
}

/// One direction of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// From the dialer to the listener.
    Forward,
    /// From the listener back to the dialer.
    Back,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    forward: Flow,
    back: Flow,
    /// Refuse new connections.
    refuse: bool,
    /// Bumped to close every open connection: each one ends when this is no longer the
    /// value it started with (a flag set and lifted quickly could go unseen).
    epoch: u64,
}

const HEALED: State = State {
    forward: Flow::Pass,
    back: Flow::Pass,
    refuse: false,
    epoch: 0,
};

impl State {
    fn flow(&self, dir: Dir) -> Flow {
        match dir {
            Dir::Forward => self.forward,
            Dir::Back => self.back,
        }
    }
}

/// A proxy in front of `upstream`, listening on 127.0.0.1 (a port of its own).
pub struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    state: watch::Sender<State>,
    /// Aborted on drop; the connections end when `state` is dropped (every wait of theirs
    /// also waits for a change of the link's state).
    accept: tokio::task::AbortHandle,
    // Dropped last: its shutdown cancels every task and closes their sockets.
    _rt: Option<tokio::runtime::Runtime>,
}

fn check_local(upstream: SocketAddr) -> std::io::Result<()> {
    if matches!(upstream, SocketAddr::V4(a) if a.ip().octets()[0] == 127) {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("the proxy forwards to 127.0.0.x only, not {upstream}"),
        ))
    }
}

impl Proxy {
    /// Starts a proxy to `upstream`, which must be a 127.0.0.x address, on a small runtime
    /// of its own (for callers outside any runtime, such as a synchronous test).
    pub fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        check_local(upstream)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("link-proxy")
            .enable_all()
            .build()?;
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let (state, rx) = watch::channel(HEALED);
        let accept = rt.spawn(accept(listener, upstream, rx)).abort_handle();
        Ok(Proxy {
            addr,
            upstream,
            state,
            accept,
            _rt: Some(rt),
        })
    }

    /// The same on the caller's runtime.
    pub async fn start_here(upstream: SocketAddr) -> std::io::Result<Proxy> {
        check_local(upstream)?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (state, rx) = watch::channel(HEALED);
        let accept = tokio::spawn(accept(listener, upstream, rx)).abort_handle();
        Ok(Proxy {
            addr,
            upstream,
            state,
            accept,
            _rt: None,
        })
    }

    /// Where the dialer connects instead of `upstream`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Sets one direction; the other keeps its flow.
    pub fn set(&self, dir: Dir, flow: Flow) {
        self.state.send_modify(|s| match dir {
            Dir::Forward => s.forward = flow,
            Dir::Back => s.back = flow,
        });
    }

    /// Closes the link's connections and refuses new ones (`true`), or takes new ones
    /// again (`false`).
    pub fn reset(&self, on: bool) {
        self.state.send_modify(|s| {
            s.refuse = on;
            if on {
                s.epoch += 1;
            }
        });
    }

    /// Both directions pass and connections are taken: the link is healed.
    pub fn heal(&self) {
        self.state.send_modify(|s| {
            *s = State {
                epoch: s.epoch,
                ..HEALED
            }
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, state: watch::Receiver<State>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of descriptors or the like: try again after a breath, never spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (refuse, epoch) = {
            let s = state.borrow();
            (s.refuse, s.epoch)
        };
        if refuse {
            // Closed at once, before anything is forwarded.
            drop(client);
            continue;
        }
        tokio::spawn(relay(client, upstream, state.clone(), epoch));
    }
}

/// One connection through the link, both directions, until either side closes it or the
/// link is reset. Raft peers treat a half-closed connection as gone, so one ending ends both.
async fn relay(client: TcpStream, upstream: SocketAddr, state: watch::Receiver<State>, epoch: u64) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_r, client_w) = client.into_split();
    let (server_r, server_w) = server.into_split();
    tokio::select! {
        _ = pump(client_r, server_w, Dir::Forward, state.clone(), epoch) => {}
        _ = pump(server_r, client_w, Dir::Back, state, epoch) => {}
    }
}

/// Copies one direction, obeying the link's state as it changes.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    dir: Dir,
    mut state: watch::Receiver<State>,
    epoch: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if wait_flowing(&mut state, dir, epoch).await.is_none() {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // The flow changed while waiting for bytes: look again before reading.
            r = state.changed() => {
                if r.is_err() {
                    return;
                }
                continue;
            }
        };
        // The chunk is read: it goes out once the direction flows (after its delay, if any).
        let Some(flow) = wait_flowing(&mut state, dir, epoch).await else {
            return;
        };
        if let Flow::Delay(d) = flow {
            let until = tokio::time::Instant::now() + d;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    r = state.changed() => {
                        if r.is_err() || state.borrow().epoch != epoch {
                            return;
                        }
                    }
                }
            }
        }
        tokio::select! {
            r = to.write_all(&buf[..n]) => if r.is_err() { return },
            _ = closed(&mut state, epoch) => return,
        }
    }
}

/// Waits while `dir` drops; `None` once the connection is closed by a reset (or the proxy
/// is gone).
async fn wait_flowing(state: &mut watch::Receiver<State>, dir: Dir, epoch: u64) -> Option<Flow> {
    loop {
        let s = *state.borrow_and_update();
        if s.epoch != epoch {
            return None;
        }
        match s.flow(dir) {
            Flow::Drop => state.changed().await.ok()?,
            flow => return Some(flow),
        }
    }
}

/// Completes when a reset closes the connection (or the proxy is gone).
async fn closed(state: &mut watch::Receiver<State>, epoch: u64) {
    loop {
        if state.borrow_and_update().epoch != epoch {
            return;
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}
