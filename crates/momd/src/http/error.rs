//! Errors of the HTTP API: the protocol's error codes (docs/protocol.md, 5.11), mapped to
//! HTTP statuses in one place, and sent as `{"error": {"code", "message"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mom_proto::{ErrorCode, ServerFrame};

/// A refusal, as the client gets it.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// A status other than the code's own (504 for a request that got no reply in time).
    pub status: Option<StatusCode>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            status: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Internal, message)
    }

    /// The broker answered with something else than the reply expected.
    pub fn unexpected(frame: &ServerFrame) -> ApiError {
        match frame {
            ServerFrame::Error(e) => ApiError::new(e.code, e.message.clone()),
            other => ApiError::internal(format!(
                "unexpected reply from the broker: {}",
                frame_name(other)
            )),
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status = Some(status);
        self
    }
}

impl From<crate::auth::Refusal> for ApiError {
    fn from((code, message): crate::auth::Refusal) -> ApiError {
        ApiError::new(code, message)
    }
}

/// The HTTP status of each protocol error code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal | ErrorCode::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status.unwrap_or_else(|| status_of(self.code));
        let body = serde_json::json!({
            "error": { "code": self.code.as_str(), "message": self.message }
        });
        let mut resp = super::params::json_response(status, &body);
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"mom\", Basic realm=\"mom\""),
            );
        }
        resp
    }
}

fn frame_name(f: &ServerFrame) -> &'static str {
    match f {
        ServerFrame::Welcome(_) => "welcome",
        ServerFrame::PublishOk(_) => "publish_ok",
        ServerFrame::WatchOk(_) => "watch_ok",
        ServerFrame::Deliver(_) => "deliver",
        ServerFrame::Notice(_) => "notice",
        ServerFrame::Ok(_) => "ok",
        ServerFrame::Pong(_) => "pong",
        ServerFrame::TopicList(_) => "topic_list",
        ServerFrame::TopicInfo(_) => "topic_info",
        ServerFrame::Stats(_) => "stats",
        ServerFrame::Error(_) => "error",
        ServerFrame::QueueInfo(_) => "queue_info",
        ServerFrame::QueueList(_) => "queue_list",
        ServerFrame::ConsumeOk(_) => "consume_ok",
        ServerFrame::QueueDeliver(_) => "queue_deliver",
        ServerFrame::FetchOk(_) => "fetch_ok",
        ServerFrame::Token(_) => "token",
        ServerFrame::UserInfo(_) => "user_info",
        ServerFrame::UserList(_) => "user_list",
        ServerFrame::ClusterStatus(_) => "cluster_status",
    }
}
