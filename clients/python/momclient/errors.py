"""Exceptions: one class, `MomError`, whose `code` is the protocol's error code
(docs/protocol.md §7), and a subclass per code to catch one kind only."""

from __future__ import annotations

from typing import Dict, Optional, Type


class MomError(Exception):
    """A request failed, or the connection did.

    `code` is one of the protocol's codes (`bad_request`, `unauthorized`, `forbidden`,
    `not_found`, `conflict`, `too_large`, `rate_limited`, `unavailable`, `internal`), a code
    from a newer server, or one of this client's own three: `connection_lost`,
    `timeout` and `no_responders`. `message` is the server's text, for people.
    """

    code: str = "error"

    def __init__(self, message: str, code: Optional[str] = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class BadRequest(MomError):
    code = "bad_request"


class Unauthorized(MomError):
    code = "unauthorized"


class Forbidden(MomError):
    code = "forbidden"


class NotFound(MomError):
    code = "not_found"


class Conflict(MomError):
    code = "conflict"


class TooLarge(MomError):
    code = "too_large"


class RateLimited(MomError):
    code = "rate_limited"


class Unavailable(MomError):
    code = "unavailable"


class Internal(MomError):
    code = "internal"


class ConnectionLost(MomError, ConnectionError):
    """The connection ended: closed by the server (then `server_code` is the code of its last
    `error` without an id, such as `unavailable` at shutdown), broken, or closed by this
    client. Requests in flight have an unknown outcome (protocol.md §2.4)."""

    code = "connection_lost"

    def __init__(self, message: str, server_code: Optional[str] = None) -> None:
        super().__init__(message)
        self.server_code = server_code


class Timeout(MomError, TimeoutError):
    """No answer within the time asked for (a request/reply, a wait for a message)."""

    code = "timeout"


class NoResponders(MomError):
    """A request reached no watcher and no queue: nobody serves that topic (§3.8)."""

    code = "no_responders"


_BY_CODE: Dict[str, Type[MomError]] = {
    c.code: c
    for c in (BadRequest, Unauthorized, Forbidden, NotFound, Conflict, TooLarge, RateLimited, Unavailable, Internal)
}


def from_code(code: str, message: str) -> MomError:
    """The exception for an `error` frame; an unknown code gives a plain `MomError`."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return MomError(message, code)
    return cls(message)
