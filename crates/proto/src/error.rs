//! Errors of the codec and the protocol's closed set of error codes.

use serde::{Deserialize, Serialize};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than the connection's limit. Checked before any
    /// allocation; the connection cannot be resynchronised and must be closed.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: u64, max: usize },
    /// The frame was complete but its body is not a valid message of this protocol. The
    /// framing is intact, so the connection may go on.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The frame is well formed but holds more than a limit allows (for example a message
    /// with more headers than [`crate::MAX_HEADERS`]); the connection may go on.
    #[error("{0}")]
    TooLarge(String),
    /// A message could not be encoded (only possible for values MessagePack cannot hold).
    #[error("cannot encode frame: {0}")]
    Encode(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// The stable error codes carried by an `error` frame (docs/protocol.md, "Error codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    TooLarge,
    RateLimited,
    Unavailable,
    Internal,
    /// A code this client does not know yet (a newer server); treat as a failure.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
