//! The HTTP API (`momd --http ADDR`, docs/http.md): JSON over HTTP/1.1 and Server-Sent
//! Events, served by axum on the broker's runtime. Every endpoint is a thin translation to
//! the protocol's requests, sent through a broker session (`link.rs`) exactly as a TCP
//! connection sends them: the rules live in the broker, once.
//!
//! Files: `listen.rs` (accept, TLS, connection bound), `auth.rs` (who a request is),
//! `error.rs` (codes to statuses), `params.rs` (query strings and message JSON), then one
//! file per group of endpoints: `publish.rs`, `read.rs`, `stream.rs` (SSE), `topics.rs`,
//! `queues.rs`, `request.rs`, `login.rs`, `cluster.rs`. The OpenAPI document is
//! `openapi.json`.

mod auth;
mod cluster;
mod error;
mod link;
mod listen;
mod login;
mod params;
mod publish;
mod queues;
mod read;
mod request;
mod stream;
mod topics;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::routing::{get, post, put};
use axum::Router;
use tokio_util::sync::CancellationToken;

pub use listen::HttpListener;

use crate::broker::{BrokerConfig, BrokerHandle};
use error::ApiError;

/// What every handler shares.
#[derive(Clone)]
pub struct App {
    broker: link::Broker,
    pool: link::Pool,
    auth: Arc<crate::auth::Auth>,
    /// The settings now (SIGHUP may change some: the payload limit, for one).
    cfg: crate::server::SharedCfg,
    remembered: auth::Remembered,
    shutdown: CancellationToken,
}

impl App {
    fn cfg(&self) -> Arc<BrokerConfig> {
        crate::server::current(&self.cfg)
    }
}

/// The address of the HTTP client (axum's connect info for our listener).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

impl Connected<axum::serve::IncomingStream<'_, HttpListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, HttpListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

/// The OpenAPI 3 description of this API (served at `/v1/openapi.json`).
pub const OPENAPI: &str = include_str!("openapi.json");

fn router(app: App) -> Router {
    Router::new()
        .route("/v1/login", post(login::login))
        .route("/v1/stats", get(topics::stats))
        .route("/v1/cluster", get(cluster::status))
        .route("/v1/topics", get(topics::list))
        .route(
            "/v1/topics/{topic}",
            get(topics::info).put(topics::create).delete(topics::remove),
        )
        .route("/v1/topics/{topic}/limits", put(topics::limits))
        .route("/v1/topics/{topic}/purge", post(topics::purge))
        .route(
            "/v1/topics/{topic}/messages",
            post(publish::publish).get(read::read),
        )
        .route("/v1/topics/{topic}/batch", post(publish::batch))
        .route("/v1/queues", get(queues::list))
        .route(
            "/v1/queues/{queue}",
            get(queues::info).put(queues::create).delete(queues::remove),
        )
        .route("/v1/queues/{queue}/bind", post(queues::bind))
        .route("/v1/queues/{queue}/unbind", post(queues::unbind))
        .route("/v1/queues/{queue}/purge", post(queues::purge))
        .route("/v1/queues/{queue}/fetch", post(queues::fetch))
        .route("/v1/queues/{queue}/ack", post(queues::ack))
        .route("/v1/queues/{queue}/nack", post(queues::nack))
        .route("/v1/request/{topic}", post(request::request))
        .route("/v1/stream", get(stream::stream))
        .route(
            "/v1/openapi.json",
            get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    OPENAPI,
                )
            }),
        )
        .fallback(|| async {
            ApiError::new(
                mom_proto::ErrorCode::NotFound,
                "no such endpoint (see /v1/openapi.json)",
            )
        })
        .with_state(app)
}

/// Serve the HTTP API on `listener` until `shutdown`; returns when the connections are done.
pub async fn serve(
    listener: HttpListener,
    broker: BrokerHandle,
    cfg: crate::server::SharedCfg,
    ctx: crate::session::Ctx,
    shutdown: CancellationToken,
) {
    let link_broker = link::Broker {
        handle: broker,
        admission: ctx.admission.clone(),
        budget: crate::server::current(&cfg).watch_budget,
        shutdown: shutdown.clone(),
    };
    let app = App {
        pool: link::Pool::new(link_broker.clone()),
        broker: link_broker,
        auth: ctx.auth.clone(),
        cfg,
        remembered: auth::Remembered::new(),
        shutdown: shutdown.clone(),
    };
    let service = router(app).into_make_service_with_connect_info::<Peer>();
    let done = shutdown.clone();
    if let Err(e) = axum::serve(listener, service)
        .with_graceful_shutdown(async move { done.cancelled().await })
        .await
    {
        tracing::error!("the HTTP API stopped: {e}");
    }
}
