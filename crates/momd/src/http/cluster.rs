//! `GET /v1/cluster`: how this node sees its cluster (`momctl cluster status`), the
//! `cluster_status` reply of the protocol without its `id`. A node not in cluster mode
//! answers with `mode` `single`.

use axum::extract::State;
use mom_proto::{ClientFrame, Req, ServerFrame};

use super::auth::Who;
use super::error::{ApiError, ApiResult};
use super::params::{to_json, JsonLine};
use super::App;

pub async fn status(State(app): State<App>, who: Who) -> ApiResult<JsonLine> {
    match app
        .pool
        .call(&who.id, who.peer, |id| {
            ClientFrame::ClusterStatus(Req { id })
        })
        .await?
    {
        ServerFrame::ClusterStatus(s) => {
            let mut v = to_json(&s)?;
            if let Some(m) = v.as_object_mut() {
                // Not remove(): that swaps the last field into the place of `id`.
                m.shift_remove("id");
            }
            Ok(JsonLine(v))
        }
        other => Err(ApiError::unexpected(&other)),
    }
}
