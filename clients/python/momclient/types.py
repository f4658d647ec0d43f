"""What the server sends, as typed objects (docs/protocol.md §5, §6). Keys this client does
not know are kept in `raw`, never refused: the protocol grows by adding keys (§1.3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client


@dataclass(frozen=True)
class Sender:
    """Who published a message (§6.2)."""

    user: str
    client: int
    name: str = ""

    @classmethod
    def from_map(cls, m: Dict[str, Any]) -> "Sender":
        return cls(user=m.get("user", ""), client=m.get("client", 0), name=m.get("name", ""))


@dataclass
class Message:
    """A stored message (§6.1). Those read from a queue carry `queue` and `delivery` and can
    be settled with `ack()` / `nack()`; a request can be answered with `reply()`."""

    topic: str
    seq: int
    time: int
    payload: bytes
    sender: Sender
    headers: Dict[str, str] = field(default_factory=dict)
    msg_id: Optional[str] = None
    #: The key it was published with (§3.10); `key` names the message itself in acks.
    msg_key: Optional[str] = None
    delivery: Optional[int] = None
    queue: Optional[str] = None
    _client: Optional["Client"] = field(default=None, repr=False, compare=False)

    @classmethod
    def from_map(cls, m: Dict[str, Any], queue: Optional[str] = None, client: Optional["Client"] = None) -> "Message":
        return cls(
            topic=m["topic"],
            seq=m["seq"],
            time=m.get("time", 0),
            payload=bytes(m.get("payload", b"")),
            sender=Sender.from_map(m.get("sender") or {}),
            headers=dict(m.get("headers") or {}),
            msg_id=m.get("msg_id"),
            msg_key=m.get("key"),
            delivery=m.get("delivery"),
            queue=queue,
            _client=client,
        )

    @property
    def key(self) -> Dict[str, Any]:
        """The MsgKey (§6.8) that names this message in `ack`, `nack` and `extend`."""
        return {"topic": self.topic, "seq": self.seq}

    def text(self, encoding: str = "utf-8") -> str:
        return self.payload.decode(encoding)

    def _queue_client(self) -> "Client":
        if self.queue is None or self._client is None:
            raise ValueError(
                "only a message taken from a queue (fetch, consume, recv) by momclient.Client can "
                "settle itself; with momclient.aio, await client.ack(queue, [msg])"
            )
        return self._client

    def ack(self) -> None:
        """Done with it: once this returns, the queue never delivers it again (§4.21)."""
        self._queue_client().ack(self.queue or "", [self])

    def nack(self, delay_ms: int = 0, release: bool = False) -> None:
        """Give it back to be delivered again, after `delay_ms` (§4.22)."""
        self._queue_client().nack(self.queue or "", [self], delay_ms=delay_ms, release=release)

    def extend(self) -> None:
        """More time: the ack deadline moves to the queue's ack_wait_ms from now (§4.27)."""
        self._queue_client().extend(self.queue or "", [self])

    def reply(self, payload: bytes, status: int = 0, headers: Optional[Dict[str, str]] = None) -> "PublishAck":
        """Answer a request (§3.8): publish `payload` to its `reply-to` inbox with its
        `correlation-id` and a `status` header."""
        if self._client is None:
            raise ValueError("this message was not received by a client")
        reply_to = self.headers.get("reply-to")
        if not reply_to:
            raise ValueError("this message has no reply-to header: it is not a request")
        h = dict(headers or {})
        h["status"] = str(status)
        if "correlation-id" in self.headers:
            h["correlation-id"] = self.headers["correlation-id"]
        return self._client.publish(reply_to, payload, headers=h)


@dataclass(frozen=True)
class PublishAck:
    """The `publish_ok` of a publish (§5.2): every message is durable. For `publish_many`,
    the sum of its batches: `seqs` and `duplicate_indexes` cover every message in order."""

    topic: str
    seqs: List[int]
    duplicates: int = 0
    duplicate_indexes: List[int] = field(default_factory=list)
    watchers: int = 0
    queues: int = 0
    #: On a partitioned topic, the partition of each message (its seq is that partition's).
    partitions: List[int] = field(default_factory=list)

    @property
    def seq(self) -> int:
        """The seq of the (last) message."""
        return self.seqs[-1]

    @property
    def duplicate(self) -> bool:
        """True when the (single) message was a duplicate of one stored already (§3.4)."""
        return self.duplicates > 0

    @property
    def unrouted(self) -> bool:
        """No watcher and no queue matched: stored, but nobody was listening."""
        return self.watchers == 0 and self.queues == 0

    @classmethod
    def from_frame(cls, f: Dict[str, Any], offset: int = 0) -> "PublishAck":
        return cls(
            topic=f.get("topic", ""),
            seqs=list(f.get("seqs", [])),
            duplicates=f.get("duplicates", 0),
            duplicate_indexes=[i + offset for i in f.get("duplicate_indexes", [])],
            watchers=f.get("watchers", 0),
            queues=f.get("queues", 0),
            partitions=list(f.get("partitions", [])),
        )


@dataclass(frozen=True)
class Welcome:
    """What the server said to `hello` (§5.1)."""

    client_id: int
    user: str
    server_id: str
    server_version: str
    max_frame: int
    max_payload: int
    max_inflight: int

    @classmethod
    def from_frame(cls, f: Dict[str, Any]) -> "Welcome":
        return cls(
            client_id=f.get("client_id", 0),
            user=f.get("user", ""),
            server_id=f.get("server_id", ""),
            server_version=f.get("server_version", ""),
            max_frame=f.get("max_frame", 8 * 1024 * 1024),
            max_payload=f.get("max_payload", 1024 * 1024),
            max_inflight=f.get("max_inflight", 1024),
        )


@dataclass(frozen=True)
class QueueInfo:
    """A queue and its counters (§6.7); `purged` / `redriven` for those requests' answers."""

    name: str
    owner: str
    bindings: List[str]
    max_deliver: int
    ack_wait_ms: int
    consumers: int
    ready: int
    unacked: int
    lag: int
    delivered: int
    acked: int
    redelivered: int
    dead_lettered: int
    dropped: int
    purged: Optional[int] = None
    redriven: Optional[int] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_map(cls, q: Dict[str, Any], reply: Optional[Dict[str, Any]] = None) -> "QueueInfo":
        reply = reply or {}
        return cls(
            name=q.get("name", ""),
            owner=q.get("owner", ""),
            bindings=list(q.get("bindings", [])),
            max_deliver=q.get("max_deliver", 0),
            ack_wait_ms=q.get("ack_wait_ms", 0),
            consumers=q.get("consumers", 0),
            ready=q.get("ready", 0),
            unacked=q.get("unacked", 0),
            lag=q.get("lag", 0),
            delivered=q.get("delivered", 0),
            acked=q.get("acked", 0),
            redelivered=q.get("redelivered", 0),
            dead_lettered=q.get("dead_lettered", 0),
            dropped=q.get("dropped", 0),
            purged=reply.get("purged"),
            redriven=reply.get("redriven"),
            raw=q,
        )


@dataclass(frozen=True)
class TopicInfo:
    """A topic (§6.3); `purged` in the answer to `topic_purge`."""

    name: str
    messages: int
    bytes: int
    first_seq: int
    last_seq: int
    last_time: int
    watchers: int
    queues: int
    limits: Dict[str, int]
    owner: Optional[str] = None
    purged: Optional[int] = None
    #: A partitioned topic's partitions (0 for another topic), §3.10.
    partitions: int = 0
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_map(cls, t: Dict[str, Any], reply: Optional[Dict[str, Any]] = None) -> "TopicInfo":
        reply = reply or {}
        return cls(
            name=t.get("name", ""),
            messages=t.get("messages", 0),
            bytes=t.get("bytes", 0),
            first_seq=t.get("first_seq", 0),
            last_seq=t.get("last_seq", 0),
            last_time=t.get("last_time", 0),
            watchers=t.get("watchers", 0),
            queues=t.get("queues", 0),
            limits=dict(t.get("limits", {})),
            owner=t.get("owner"),
            purged=reply.get("purged"),
            partitions=t.get("partitions", 0),
            raw=t,
        )


@dataclass(frozen=True)
class Notice:
    """A `notice` push (§5.5): `live` (the replay is over), `slow_consumer` (`skipped` live
    messages were not sent), `ended`, or a kind from a newer server."""

    kind: str
    skipped: int = 0
    message: str = ""
