//! mom's wire protocol: a 4-byte big-endian length, then a MessagePack map whose `type` field
//! names the frame. `docs/protocol.md` is the contract; this crate follows it.
//!
//! Start with [`message`] (every frame; the queue frames are in [`queue`], the topic
//! admin frames in [`topic_admin`], paging of the listings in [`page`]), then [`frame`] (the codec), [`decode`] (the frames sent most,
//! decoded in one pass) and [`topic`] (names and patterns).

pub mod auth;
pub mod cluster;
pub mod decode;
pub mod depth;
pub mod error;
pub mod frame;
pub mod message;
pub mod page;
pub mod parse;
pub mod queue;
pub mod topic;
pub mod topic_admin;

pub use auth::*;
pub use cluster::*;
pub use decode::{decode_client_frame, decode_server_frame, DecodeFrame};
pub use error::{ErrorCode, FrameError};
pub use frame::{
    decode_body, encode_body, encode_frame, encoded_len, split_frame, Codec, RawCodec,
};
pub use message::*;
pub use page::{
    ListReq, Listed, Page, StatsReq, DEFAULT_PAGE_LIMIT, MAX_PAGE_BYTES, MAX_PAGE_LIMIT,
};
pub use queue::*;
pub use topic_admin::*;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Default largest frame, prefix excluded.
pub const DEFAULT_MAX_FRAME: usize = 8 * 1024 * 1024;
/// Default largest payload of one message.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;
/// Default port of momd.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7878";
