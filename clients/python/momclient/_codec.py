"""The frame codec of docs/protocol.md §1.2: a 4-byte big-endian length, then one MessagePack
map. No I/O here, so a blocking and an asyncio client can share it."""

from __future__ import annotations

import struct
from typing import Any, Dict, List, Optional

import msgpack  # type: ignore[import-untyped]

#: max_frame until `welcome` says otherwise (protocol.md §8).
DEFAULT_MAX_FRAME = 8 * 1024 * 1024

Frame = Dict[str, Any]


class FrameError(Exception):
    """The server's bytes are not a frame this client can read (too long, not MessagePack)."""


def encode_frame(frame: Frame) -> bytes:
    """One whole frame, length prefix included. `bytes` values become `bin`, `str` `str`."""
    body: bytes = msgpack.packb(frame, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def decode_body(body: bytes) -> Frame:
    try:
        value = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises several unrelated classes
        raise FrameError(f"the server sent a body that is not MessagePack: {e}") from e
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise FrameError("the server sent a frame that is not a map with a type")
    return value


class FrameReader:
    """Cuts frames out of a byte stream fed in pieces.

    A length over `max_frame` is refused before anything is allocated for it (§9). The
    first bytes of a TLS alert (`15 03`) read as a length are reported as such (§1.1).
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    def feed(self, data: bytes) -> List[Frame]:
        self._buf += data
        frames: List[Frame] = []
        while True:
            frame = self._next()
            if frame is None:
                return frames
            frames.append(frame)

    def _next(self) -> Optional[Frame]:
        if len(self._buf) < 4:
            return None
        (length,) = struct.unpack_from(">I", self._buf, 0)
        if length > self.max_frame:
            if self._buf[0] in (0x15, 0x16) and self._buf[1] == 0x03:
                raise FrameError(
                    "the server speaks TLS on this port: connect with tls=True, "
                    "tls_ca=... or tls_insecure=True"
                )
            raise FrameError(f"the server sent a frame of {length} bytes, over max_frame {self.max_frame}")
        if len(self._buf) < 4 + length:
            return None
        body = bytes(self._buf[4 : 4 + length])
        del self._buf[: 4 + length]
        return decode_body(body)
