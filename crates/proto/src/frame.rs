//! The frame codec: a 4-byte big-endian length, then that many bytes of MessagePack.
//!
//! The length is checked against the limit before a byte of the body is buffered, so a
//! hostile prefix (say 4 GiB) costs nothing, and nothing is reserved for the announced
//! length either: the buffer grows only as the body's bytes arrive, so a peer that announces
//! a max-size frame and stalls holds only what it sent. A body that does not decode is
//! reported as [`FrameError::Malformed`] after the whole frame was consumed, so the stream
//! stays in step.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::FrameError;

/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;

/// Encode one value as a MessagePack body (structs as maps, so fields are named on the wire).
pub fn encode_body<T: Serialize>(value: &T, dst: &mut Vec<u8>) -> Result<(), FrameError> {
    let mut ser = rmp_serde::Serializer::new(dst).with_struct_map();
    value
        .serialize(&mut ser)
        .map_err(|e| FrameError::Encode(e.to_string()))
}

/// Decode one MessagePack body. Never panics, whatever the bytes, and never recurses
/// deeper than [`crate::depth::MAX_DEPTH`] levels of nesting.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    if crate::depth::too_deep(body, crate::depth::MAX_DEPTH) {
        return Err(FrameError::Malformed(format!(
            "arrays and maps nested deeper than {} levels",
            crate::depth::MAX_DEPTH
        )));
    }
    rmp_serde::from_slice(body).map_err(|e| {
        let text = e.to_string();
        match text.find(crate::message::TOO_LARGE) {
            Some(i) => FrameError::TooLarge(text[i + crate::message::TOO_LARGE.len()..].into()),
            None => FrameError::Malformed(text),
        }
    })
}

/// Bytes `value` takes as a MessagePack body, counted without keeping them (`usize::MAX`
/// for a value that cannot be encoded). A server sizes the items of a page with it.
pub fn encoded_len<T: Serialize>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(b.len());
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let mut ser = rmp_serde::Serializer::new(&mut count).with_struct_map();
    match value.serialize(&mut ser) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

/// Encode a whole frame (prefix and body) into `dst`.
pub fn encode_frame<T: Serialize>(
    value: &T,
    dst: &mut BytesMut,
    max: usize,
) -> Result<(), FrameError> {
    let start = dst.len();
    dst.put_u32(0);
    let mut body = std::mem::take(dst).writer();
    let res = {
        let mut ser = rmp_serde::Serializer::new(&mut body).with_struct_map();
        value.serialize(&mut ser)
    };
    *dst = body.into_inner();
    if let Err(e) = res {
        dst.truncate(start);
        return Err(FrameError::Encode(e.to_string()));
    }
    let len = dst.len() - start - LEN_PREFIX;
    if len > max {
        dst.truncate(start);
        return Err(FrameError::FrameTooLarge {
            len: len as u64,
            max,
        });
    }
    // The prefix slot was reserved above, so this range exists.
    dst[start..start + LEN_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Split one complete frame body off `src`, or `Ok(None)` when more bytes are needed.
pub fn split_frame(src: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, FrameError> {
    let Some(prefix) = src.get(..LEN_PREFIX) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if len > max {
        return Err(FrameError::FrameTooLarge {
            len: len as u64,
            max,
        });
    }
    if src.len() < LEN_PREFIX + len {
        // No `reserve` for the rest: the reader grows the buffer as bytes come in.
        return Ok(None);
    }
    src.advance(LEN_PREFIX);
    Ok(Some(src.split_to(len)))
}

/// A tokio-util codec reading frames of type `In` and writing frames of type `Out`.
#[derive(Debug)]
pub struct Codec<In, Out> {
    max_frame: usize,
    _types: PhantomData<fn(Out) -> In>,
}

impl<In, Out> Codec<In, Out> {
    pub fn new(max_frame: usize) -> Self {
        Codec {
            max_frame,
            _types: PhantomData,
        }
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    pub fn set_max_frame(&mut self, max: usize) {
        self.max_frame = max;
    }
}

impl<In: crate::decode::DecodeFrame, Out> Decoder for Codec<In, Out> {
    type Item = In;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, FrameError> {
        match split_frame(src, self.max_frame)? {
            None => Ok(None),
            Some(body) => In::decode_frame(&body).map(Some),
        }
    }
}

impl<In, Out: Serialize> Encoder<Out> for Codec<In, Out> {
    type Error = FrameError;

    fn encode(&mut self, item: Out, dst: &mut BytesMut) -> Result<(), FrameError> {
        encode_frame(&item, dst, self.max_frame)
    }
}

/// A codec that only splits frames, yielding raw bodies. A server uses it so that a body
/// which fails to decode is answered and the connection goes on, while a too-large length
/// (after which the stream cannot be resynchronised) ends it.
#[derive(Debug, Clone)]
pub struct RawCodec {
    max_frame: usize,
}

impl RawCodec {
    pub fn new(max_frame: usize) -> Self {
        RawCodec { max_frame }
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Change the limit for the frames still to come (a server raises it after `hello`).
    pub fn set_max_frame(&mut self, max: usize) {
        self.max_frame = max;
    }
}

impl Decoder for RawCodec {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        split_frame(src, self.max_frame)
    }
}
