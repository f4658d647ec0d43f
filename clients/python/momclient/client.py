"""The blocking client: one TCP (or TLS) connection, a reader thread that matches replies to
requests by id and hands pushes to their watch or consumer (docs/protocol.md §2.2)."""

from __future__ import annotations

import itertools
import os
import queue as _queue
import secrets
import socket
import ssl
import threading
import time as _time
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import (
    Any,
    Callable,
    Deque,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from . import errors
from ._codec import DEFAULT_MAX_FRAME, Frame, FrameError, FrameReader, encode_frame
from .errors import ConnectionLost, MomError
from .types import Message, Notice, PublishAck, QueueInfo, TopicInfo, Welcome

DEFAULT_PORT = 7878

Payload = Union[bytes, bytearray, memoryview, str]
#: What `publish_many` takes per message: a payload, or a map with `payload` and optionally
#: `headers`, `msg_id` and `key`.
PublishItem = Union[Payload, Dict[str, Any]]

_END = object()  # put in a watch's or consumer's buffer when it ends


def parse_address(addr: str) -> Tuple[str, int]:
    """`HOST`, `HOST:PORT`, `IP:PORT` or `[IPV6]:PORT`, as momctl's `-s`; port 7878 if none."""
    addr = addr.strip()
    if addr.count(":") > 1 and not addr.startswith("["):  # a bare IPv6 address
        return addr, DEFAULT_PORT
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif addr.count(":") == 1:
        host, port = addr.split(":")
    else:
        host, port = addr, ""
    return host, int(port) if port else DEFAULT_PORT


def _payload_bytes(p: Payload) -> bytes:
    if isinstance(p, str):
        return p.encode("utf-8")
    return bytes(p)


def _publish_msg(item: PublishItem, headers: Optional[Dict[str, str]] = None, msg_id: Optional[str] = None,
                 key: Optional[str] = None) -> Dict[str, Any]:
    if isinstance(item, dict):
        m: Dict[str, Any] = {"payload": _payload_bytes(item["payload"])}
        if item.get("headers"):
            m["headers"] = dict(item["headers"])
        for k in ("msg_id", "key"):
            if item.get(k) is not None:
                m[k] = item[k]
        return m
    m = {"payload": _payload_bytes(item)}
    if headers:
        m["headers"] = dict(headers)
    if msg_id is not None:
        m["msg_id"] = msg_id
    if key is not None:
        m["key"] = key
    return m


def _keys(msgs: Iterable[Union[Message, Dict[str, Any], Tuple[str, int]]]) -> List[Dict[str, Any]]:
    out = []
    for m in msgs:
        if isinstance(m, Message):
            out.append(m.key)
        elif isinstance(m, tuple):
            out.append({"topic": m[0], "seq": m[1]})
        else:
            out.append({"topic": m["topic"], "seq": m["seq"]})
    return out


def _start(from_: Union[str, int, None], at: int) -> Tuple[str, int]:
    """`from_` as the protocol has it ("new", "all", "seq", "time", "last"), or an int seq."""
    if from_ is None:
        return "new", 0
    if isinstance(from_, int):
        return "seq", from_
    return from_, at


class _Stream:
    """The buffer of one watch or consumer: filled by the reader thread, read by the user."""

    def __init__(self, client: "Client") -> None:
        self._client = client
        self._q: "_queue.Queue[Any]" = _queue.Queue()
        self._pending: Deque[Message] = deque()
        self.ended: Optional[str] = None  # why, once ended
        self.notices: List[Notice] = []

    def _push(self, item: Any) -> None:
        self._q.put(item)

    def _on_notice(self, n: Notice) -> None:
        pass

    def _get(self, timeout: Optional[float]) -> Union[Message, Notice, None]:
        """The next message or notice; None at timeout. Raises at the end of the stream."""
        if self._pending:
            return self._pending.popleft()
        if self.ended is not None:
            self._raise_end()
        deadline = None if timeout is None else _time.monotonic() + timeout
        while True:
            wait = None if deadline is None else max(0.0, deadline - _time.monotonic())
            try:
                item = self._q.get(timeout=wait)
            except _queue.Empty:
                return None
            if item is _END:
                self._q.put(_END)  # every later read sees the end too
                if self.ended is None:
                    self.ended = "connection"
                self._raise_end()
            if isinstance(item, list):
                self._pending.extend(item)
                return self._pending.popleft()
            if isinstance(item, Notice):
                self.notices.append(item)
                self._on_notice(item)
                if item.kind == "ended":
                    self.ended = item.message or "ended by the server"
                return item
            return None

    def _raise_end(self) -> None:
        exc = self._client._closed_exc
        if exc is not None and self.ended == "connection":
            raise exc
        raise StopIteration

    def next_message(self, timeout: Optional[float] = None) -> Optional[Message]:
        """The next message, waiting at most `timeout` seconds (None: for ever); None if none
        came in time. Notices are recorded in `notices` and skipped. Raises
        `ConnectionLost` if the connection ends, `StopIteration` if the server ended it."""
        deadline = None if timeout is None else _time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - _time.monotonic())
            item = self._get(left)
            if item is None:
                if deadline is not None and _time.monotonic() >= deadline:
                    return None
                continue
            if isinstance(item, Message):
                return item

    def __iter__(self) -> Iterator[Message]:
        return self

    def __next__(self) -> Message:
        m = self.next_message()
        assert m is not None  # no timeout: a message or an exception
        return m


class Watch(_Stream):
    """A live subscription (§4.3): iterate it for `Message`s. `live` turns true at the `live`
    notice that ends a replay; `skipped` adds up what `slow_consumer` notices reported."""

    def __init__(self, client: "Client", watch_id: int = 0, time: int = 0) -> None:
        super().__init__(client)
        self.id = watch_id
        self.time = time
        self.live = False
        self.skipped = 0

    def _on_notice(self, n: Notice) -> None:
        if n.kind == "live":
            self.live = True
        elif n.kind == "slow_consumer":
            self.skipped += n.skipped

    def replay(self, timeout: Optional[float] = 30.0) -> Iterator[Message]:
        """The stored messages of a watch from all/seq/time/last, up to its `live` notice.
        Raises `errors.Timeout` when nothing comes for `timeout` seconds."""
        while not self.live:
            try:
                item = self._get(timeout)
            except StopIteration:
                return
            if item is None:
                raise errors.Timeout(f"no message or live notice within {timeout} s")
            if isinstance(item, Message):
                yield item

    def next_notice(self, timeout: Optional[float] = None) -> Optional[Notice]:
        """Wait for the next notice, dropping the messages before it."""
        deadline = None if timeout is None else _time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - _time.monotonic())
            item = self._get(left)
            if isinstance(item, Notice):
                return item
            if item is None and deadline is not None and _time.monotonic() >= deadline:
                return None

    def close(self) -> None:
        """Unwatch (§4.4)."""
        if self.ended is None and not self._client.closed:
            self._client._call({"type": "unwatch", "watch": self.id})
            self.ended = "unwatched"
            self._client._streams_remove("w", self.id)
            self._q.put(_END)

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Consumer(_Stream):
    """A push reader of a queue (§4.19): iterate it for `Message`s, then `ack()` each."""

    def __init__(self, client: "Client", consumer_id: int = 0, queue: str = "") -> None:
        super().__init__(client)
        self.id = consumer_id
        self.queue = queue

    def cancel(self, release: bool = False) -> None:
        """End the consumer (§4.20): what it holds unacked goes back to the queue."""
        if self.ended is None and not self._client.closed:
            self._client._call({"type": "cancel", "consumer": self.id, "release": release})
            self.ended = "cancelled"
            self._client._streams_remove("c", self.id)
            self._q.put(_END)

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class _TlsIO:
    """TLS over a socket through memory buffers. OpenSSL does not allow one connection
    object to be used by two threads at once, which an `ssl.SSLSocket` read by the reader
    thread while others write would do; here only the (fast, non-blocking) encryption is
    done under a lock, and the socket is read and written outside it."""

    def __init__(self, raw: socket.socket, ctx: ssl.SSLContext, host: str) -> None:
        self.raw = raw
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname=host)
        self.lock = threading.Lock()  # the SSL object
        self.wlock = threading.Lock()  # the order of TLS records on the wire
        while True:  # the handshake, before any other thread uses the connection
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.raw.sendall(self.out.read())
                data = self.raw.recv(65536)
                if not data:
                    raise ConnectionError("the server closed the connection during the TLS handshake")
                self.inc.write(data)
        self.raw.sendall(self.out.read())

    def sendall(self, data: bytes) -> None:
        with self.wlock:
            with self.lock:
                self.obj.write(data)
                out = self.out.read()
            self.raw.sendall(out)

    def recv(self, n: int) -> bytes:
        while True:
            with self.lock:
                try:
                    return self.obj.read(n)
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLZeroReturnError:  # close_notify
                    return b""
                pending = self.out.pending
            if pending:  # post-handshake messages (key updates) to answer
                with self.wlock:
                    with self.lock:
                        out = self.out.read()
                    self.raw.sendall(out)
            data = self.raw.recv(65536)
            if not data:  # gone without close_notify (killed): the end, as on TCP
                return b""
            with self.lock:
                self.inc.write(data)


class Client:
    """A connection to momd. Thread-safe: requests may be sent from several threads; replies
    are matched by id (§2.2). Use `connect()` to make one."""

    def __init__(
        self,
        address: Optional[str] = None,
        *,
        name: str = "py",
        user: Optional[str] = None,
        password: Optional[str] = None,
        token: Optional[str] = None,
        tls: bool = False,
        tls_ca: Optional[str] = None,
        tls_insecure: bool = False,
        client_id: Optional[int] = None,
        timeout: float = 10.0,
    ) -> None:
        address = address or os.environ.get("MOM_SERVER") or f"127.0.0.1:{DEFAULT_PORT}"
        user = user if user is not None else os.environ.get("MOM_USER")
        password = password if password is not None else os.environ.get("MOM_PASSWORD")
        token = token if token is not None else os.environ.get("MOM_TOKEN")
        self.address = address
        self.name = name
        self.timeout = timeout
        host, port = parse_address(address)
        self._ids = itertools.count(1)
        self._id_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()  # pending, streams, closed state
        self._pending: Dict[int, Tuple["Future[Frame]", str]] = {}
        self._watches: Dict[int, Watch] = {}
        self._consumers: Dict[int, Consumer] = {}
        self._closed_exc: Optional[ConnectionLost] = None
        self._last_conn_error: Optional[Frame] = None
        self._closing = False
        self._reader = FrameReader(DEFAULT_MAX_FRAME)
        self.welcome: Optional[Welcome] = None

        try:
            raw = socket.create_connection((host, port), timeout=timeout)
        except OSError as e:
            raise ConnectionLost(f"cannot connect to {address}: {e}") from e
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = raw
        self._io: Union[socket.socket, _TlsIO] = raw
        if tls or tls_ca or tls_insecure:
            ctx = ssl.create_default_context(cafile=tls_ca) if tls_ca else ssl.create_default_context()
            if tls_insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            try:
                self._io = _TlsIO(raw, ctx, host)
            except (ssl.SSLError, OSError) as e:
                raw.close()
                hint = " (does the server speak TLS on this port?)" if "WRONG_VERSION" in str(e).upper() else ""
                raise ConnectionLost(f"TLS handshake with {address} failed{hint}: {e}") from e
        raw.settimeout(None)
        self._thread = threading.Thread(target=self._read_loop, name=f"momclient {address}", daemon=True)
        self._thread.start()

        hello: Dict[str, Any] = {"type": "hello", "version": 1, "client": name}
        if client_id:
            hello["client_id"] = client_id
        if token:
            hello["token"] = token
        elif user is not None:
            hello["user"] = user
            hello["password"] = password or ""
        try:
            w = self._call(hello, timeout=timeout)
        except ConnectionLost as e:
            self.close()
            if e.server_code is not None:  # refused, then closed: say why
                raise errors.from_code(e.server_code, e.message) from None
            raise
        except BaseException:
            self.close()
            raise
        self.welcome = Welcome.from_frame(w)
        self._reader.max_frame = self.welcome.max_frame

    # -- plumbing -----------------------------------------------------------------------

    @property
    def client_id(self) -> int:
        """The global client id from `welcome`: give it to `connect(client_id=)` to come back
        as the same client."""
        return self.welcome.client_id if self.welcome else 0

    @property
    def connection_error(self) -> Optional[MomError]:
        """The last `error` the server sent without an `id`: about the connection as a whole
        (an unreadable frame, shutdown, a frame too large). Some close the connection, some
        do not (protocol.md §5.11)."""
        f = self._last_conn_error
        return None if f is None else errors.from_code(f.get("code", "internal"), f.get("message", ""))

    @property
    def closed(self) -> bool:
        return self._closed_exc is not None

    def _next_id(self) -> int:
        with self._id_lock:
            return next(self._ids)

    def _send(self, frame: Frame) -> None:
        data = encode_frame(frame)
        if self.welcome is not None and len(data) - 4 > self.welcome.max_frame:
            raise errors.TooLarge(f"frame of {len(data) - 4} bytes is over max_frame {self.welcome.max_frame}")
        with self._send_lock:
            try:
                self._io.sendall(data)
            except OSError as e:
                self._fail(f"connection to {self.address} lost while sending: {e}")
                raise self._closed_exc or ConnectionLost(str(e)) from e

    def _submit(self, frame: Frame) -> "Future[Frame]":
        """Send a request; its future gets the success frame or a `MomError`."""
        rid = self._next_id()
        frame["id"] = rid
        fut: "Future[Frame]" = Future()
        with self._lock:
            if self._closed_exc is not None:
                raise self._closed_exc
            self._pending[rid] = (fut, frame["type"])
        try:
            self._send(frame)
        except BaseException:
            with self._lock:
                self._pending.pop(rid, None)
            raise
        return fut

    def _wait(self, fut: "Future[Frame]", timeout: Optional[float]) -> Frame:
        try:
            return fut.result(timeout=timeout)
        except MomError:
            raise
        except (FutureTimeout, TimeoutError):  # one class from Python 3.11, two before
            raise errors.Timeout(f"no reply within {timeout} s") from None

    def _call(self, frame: Frame, timeout: Optional[float] = None) -> Frame:
        return self._wait(self._submit(frame), timeout)

    def _streams_remove(self, kind: str, sid: int) -> None:
        with self._lock:
            (self._watches if kind == "w" else self._consumers).pop(sid, None)

    def _read_loop(self) -> None:
        why = "the server closed the connection"
        try:
            while True:
                data = self._io.recv(256 * 1024)
                if not data:
                    break
                for f in self._reader.feed(data):
                    self._dispatch(f)
        except FrameError as e:
            why = str(e)
        except (OSError, ValueError) as e:
            if self._closing:
                why = "closed by this client"
            else:
                why = f"connection lost: {e}"
        if self._closing:
            why = "closed by this client"
        self._fail(why)

    def _dispatch(self, f: Frame) -> None:
        t = f.get("type")
        if t == "deliver":
            w = self._watches.get(f.get("watch", 0))
            if w is not None:
                w._push([Message.from_map(m, client=self) for m in f.get("msgs", [])])
            return
        if t == "queue_deliver":
            c = self._consumers.get(f.get("consumer", 0))
            if c is not None:
                q = f.get("queue", c.queue)
                c._push([Message.from_map(m, queue=q, client=self) for m in f.get("msgs", [])])
            return
        if t == "notice":
            n = Notice(kind=f.get("kind", ""), skipped=f.get("skipped", 0), message=f.get("message", ""))
            s: Optional[_Stream]
            if f.get("consumer"):
                s = self._consumers.get(f["consumer"])
            else:
                s = self._watches.get(f.get("watch", 0))
            if s is not None:
                s._push(n)
                if n.kind == "ended":
                    s._push(_END)
            return
        rid = f.get("id")
        if rid is None:
            # Not a reply: about the connection as a whole (shutdown, a frame too large,
            # client_close). Kept, so the ConnectionLost that may follow can say why.
            if t == "error":
                self._last_conn_error = f
            return
        with self._lock:
            entry = self._pending.pop(rid, None)
            if entry is None:
                return
            fut, kind = entry
            # Register the stream before the user sees the reply: pushes follow at once.
            if t == "watch_ok":
                w = Watch(self, f.get("watch", 0), f.get("time", 0))
                self._watches[w.id] = w
                f["_stream"] = w
            elif t == "consume_ok":
                c = Consumer(self, f.get("consumer", 0), f.get("_queue", ""))
                self._consumers[c.id] = c
                f["_stream"] = c
        if t == "error":
            fut.set_exception(errors.from_code(f.get("code", "internal"), f.get("message", "")))
        else:
            fut.set_result(f)

    def _fail(self, why: str) -> None:
        with self._lock:
            if self._closed_exc is not None:
                return
            code = None
            if self._last_conn_error is not None:
                code = self._last_conn_error.get("code")
                why = f"{why} ({code}: {self._last_conn_error.get('message', '')})"
            self._closed_exc = ConnectionLost(why, server_code=code)
            pending = list(self._pending.values())
            self._pending.clear()
            streams: List[_Stream] = list(self._watches.values()) + list(self._consumers.values())
            self._watches.clear()
            self._consumers.clear()
        for fut, _ in pending:
            if not fut.done():
                fut.set_exception(self._closed_exc)
        for s in streams:
            s._push(_END)

    def close(self) -> None:
        """Close the connection. Watches and consumers end; what this connection took from
        queues and did not ack goes back to them (§2.4)."""
        self._closing = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self._sock.close()
        except OSError:
            pass
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
        self._fail("closed by this client")

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- publish --------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: Payload,
        *,
        headers: Optional[Dict[str, str]] = None,
        msg_id: Optional[str] = None,
        key: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> PublishAck:
        """Publish one message; returns once it is durable (§4.2). A `str` payload is sent as
        its UTF-8 bytes. `key` is stored with it, and on a partitioned topic chooses its
        partition (§3.10)."""
        f = self._call(
            {"type": "publish", "topic": topic, "msgs": [_publish_msg(payload, headers, msg_id, key)]},
            timeout,
        )
        return PublishAck.from_frame(f)

    def publish_async(self, topic: str, msgs: Sequence[PublishItem]) -> "Future[PublishAck]":
        """Send one batch without waiting; the future gets its `PublishAck` or a `MomError`."""
        raw = self._submit({"type": "publish", "topic": topic, "msgs": [_publish_msg(m) for m in msgs]})
        out: "Future[PublishAck]" = Future()

        def done(f: "Future[Frame]") -> None:
            e = f.exception()
            if e is not None:
                out.set_exception(e)
            else:
                out.set_result(PublishAck.from_frame(f.result()))

        raw.add_done_callback(done)
        return out

    def publish_many(
        self,
        topic: str,
        msgs: Iterable[PublishItem],
        *,
        batch: int = 1000,
        window: int = 16,
        no_ack: bool = False,
    ) -> PublishAck:
        """Publish many messages in order, `batch` per `publish` frame (fewer when a frame
        would pass max_frame), with up to `window` batches awaiting their ack. Returns the sum
        of the acks: `seqs[i]` is the seq of the i-th message. With `no_ack`, the server sends
        no ack (fire and forget, §4.2) and the result holds no seqs; a `ping` at the end makes
        sure the server has read everything, and an error the server sent for a batch by then
        is raised."""
        assert self.welcome is not None
        budget = self.welcome.max_frame - 1024
        inflight: Deque[Tuple[int, "Future[Frame]"]] = deque()
        seqs: List[int] = []
        dups: List[int] = []
        parts: List[int] = []
        duplicates = watchers = queues = 0
        the_topic = topic
        noack: List["Future[Frame]"] = []

        def settle(offset: int, fut: "Future[Frame]") -> None:
            nonlocal duplicates, watchers, queues, the_topic
            ack = PublishAck.from_frame(self._wait(fut, None), offset)
            seqs.extend(ack.seqs)
            dups.extend(ack.duplicate_indexes)
            parts.extend(ack.partitions)
            duplicates += ack.duplicates
            watchers, queues, the_topic = ack.watchers, ack.queues, ack.topic

        def send(chunk: List[Dict[str, Any]], offset: int) -> None:
            frame: Frame = {"type": "publish", "topic": topic, "msgs": chunk}
            if no_ack:
                # No reply unless it fails: its future is only looked at at the end.
                frame["no_ack"] = True
                noack.append(self._submit(frame))
                return
            inflight.append((offset, self._submit(frame)))
            while len(inflight) > window:
                settle(*inflight.popleft())

        chunk: List[Dict[str, Any]] = []
        size = 0
        n = 0
        start = 0
        for item in msgs:
            m = _publish_msg(item)
            msize = len(m["payload"]) + 64 + sum(len(k) + len(v) + 8 for k, v in m.get("headers", {}).items())
            msize += len(m.get("msg_id") or "") + len(m.get("key") or "")
            if chunk and (len(chunk) >= batch or size + msize > budget):
                send(chunk, start)
                start = n
                chunk, size = [], 0
            chunk.append(m)
            size += msize
            n += 1
        if chunk:
            send(chunk, start)
        while inflight:
            settle(*inflight.popleft())
        if no_ack:
            self.ping()
            with self._lock:  # forget those that did not fail: they get no reply
                for rid in [r for r, (f, _) in self._pending.items() if f in noack]:
                    del self._pending[rid]
            for f in noack:
                if f.done() and f.exception() is not None:
                    raise f.exception()  # type: ignore[misc]
        return PublishAck(
            topic=the_topic,
            seqs=seqs,
            duplicates=duplicates,
            duplicate_indexes=dups,
            watchers=watchers,
            queues=queues,
            partitions=parts,
        )

    # -- watch ----------------------------------------------------------------------------

    def watch(
        self,
        *patterns: str,
        from_: Union[str, int, None] = "new",
        at: int = 0,
        after: Optional[Dict[str, int]] = None,
        passive: bool = False,
        group: Optional[str] = None,
    ) -> Watch:
        """Watch topics matching `patterns` (§4.3). `from_`: "new" (default), "all", "seq",
        "time" or "last" with `at`, or an int seq. Iterate the result for messages."""
        if len(patterns) == 1 and isinstance(patterns[0], (list, tuple)):
            patterns = tuple(patterns[0])
        fr, at = _start(from_, at)
        frame: Frame = {"type": "watch", "patterns": list(patterns), "from": fr, "at": at}
        if after:
            frame["after"] = dict(after)
        if passive:
            frame["passive"] = True
        if group is not None:
            frame["group"] = group
        f = self._call(frame, self.timeout)
        w: Watch = f["_stream"]
        return w

    # -- queues ---------------------------------------------------------------------------

    def queue_create(
        self,
        queue: str,
        bindings: Sequence[str] = (),
        *,
        from_: Union[str, int, None] = "new",
        at: int = 0,
        max_deliver: Optional[int] = None,
        ack_wait_ms: Optional[int] = None,
        exist_ok: bool = False,
    ) -> QueueInfo:
        """Create a durable queue bound to `bindings` (§4.11)."""
        fr, at = _start(from_, at)
        frame: Frame = {"type": "queue_create", "queue": queue, "bindings": list(bindings), "from": fr, "at": at}
        if max_deliver is not None:
            frame["max_deliver"] = max_deliver
        if ack_wait_ms is not None:
            frame["ack_wait_ms"] = ack_wait_ms
        if exist_ok:
            frame["exist_ok"] = True
        f = self._call(frame, self.timeout)
        return QueueInfo.from_map(f["queue"], f)

    def queue_bind(self, queue: str, *patterns: str) -> QueueInfo:
        f = self._call({"type": "queue_bind", "queue": queue, "patterns": list(patterns)}, self.timeout)
        return QueueInfo.from_map(f["queue"], f)

    def queue_unbind(self, queue: str, *patterns: str) -> QueueInfo:
        """Remove these bindings; none named: all of them (§4.13)."""
        f = self._call({"type": "queue_unbind", "queue": queue, "patterns": list(patterns)}, self.timeout)
        return QueueInfo.from_map(f["queue"], f)

    def queue_info(self, queue: str) -> QueueInfo:
        f = self._call({"type": "queue_info", "queue": queue}, self.timeout)
        return QueueInfo.from_map(f["queue"], f)

    def queue_list(self, prefix: Optional[str] = None) -> List[QueueInfo]:
        """Every queue (all pages, §2.5)."""
        out: List[QueueInfo] = []
        after: Optional[str] = None
        while True:
            frame: Frame = {"type": "queue_list"}
            if after is not None:
                frame["after"] = after
            if prefix is not None:
                frame["prefix"] = prefix
            f = self._call(frame, self.timeout)
            out.extend(QueueInfo.from_map(q) for q in f.get("queues", []))
            after = f.get("next")
            if after is None:
                return out

    def queue_delete(self, queue: str, force: bool = False) -> None:
        self._call({"type": "queue_delete", "queue": queue, "force": force}, self.timeout)

    def queue_purge(self, queue: str) -> QueueInfo:
        f = self._call({"type": "queue_purge", "queue": queue}, self.timeout)
        return QueueInfo.from_map(f["queue"], f)

    def fetch(self, queue: str, max: int = 1, timeout: float = 0.0, detached: bool = False) -> List[Message]:
        """Take up to `max` (at most 256) messages from a queue, waiting up to `timeout`
        seconds for a first one (§4.18). Each must be `ack()`ed or `nack()`ed."""
        frame: Frame = {"type": "fetch", "queue": queue, "max": max, "timeout_ms": int(timeout * 1000)}
        if detached:
            frame["detached"] = True
        f = self._call(frame, None)
        q = f.get("queue", queue)
        return [Message.from_map(m, queue=q, client=self) for m in f.get("msgs", [])]

    def consume(self, queue: str, credit: int = 64) -> Consumer:
        """Have a queue's messages pushed, at most `credit` unacked at once (§4.19)."""
        rid_frame: Frame = {"type": "consume", "queue": queue, "credit": credit}
        fut = self._submit(rid_frame)
        f = self._wait(fut, self.timeout)
        c: Consumer = f["_stream"]
        c.queue = queue
        return c

    def ack(self, queue: str, msgs: Iterable[Union[Message, Dict[str, Any], Tuple[str, int]]]) -> None:
        """Settle messages for good (§4.21). `NotFound` names those the queue did not hold;
        the others are settled all the same."""
        self._call({"type": "ack", "queue": queue, "msgs": _keys(msgs)}, self.timeout)

    def nack(
        self,
        queue: str,
        msgs: Iterable[Union[Message, Dict[str, Any], Tuple[str, int]]],
        *,
        delay_ms: int = 0,
        release: bool = False,
    ) -> None:
        """Give messages back, to be delivered again after `delay_ms` (§4.22)."""
        frame: Frame = {"type": "nack", "queue": queue, "msgs": _keys(msgs), "delay_ms": delay_ms}
        if release:
            frame["release"] = True
        self._call(frame, self.timeout)

    def extend(self, queue: str, msgs: Iterable[Union[Message, Dict[str, Any], Tuple[str, int]]]) -> None:
        self._call({"type": "extend", "queue": queue, "msgs": _keys(msgs)}, self.timeout)

    # -- the classic MOM calls: an identity is a queue named after the client -------------

    def subscribe(self, *patterns: str, from_: Union[str, int, None] = "new") -> QueueInfo:
        """Subscribe this client's identity (its durable queue, named after the client's
        `name`) to `patterns`; messages published while it is away wait for it."""
        return self.queue_create(self.name, patterns, from_=from_, exist_ok=True)

    def recv(self, timeout: Optional[float] = None, *, auto_ack: bool = True) -> Tuple[Message, str]:
        """The next (message, topic) from the topics this identity subscribed to. Waits up to
        `timeout` seconds (None: for ever), else raises `errors.Timeout`. The message is
        acknowledged before it is returned unless `auto_ack` is false (then `msg.ack()`)."""
        deadline = None if timeout is None else _time.monotonic() + timeout
        while True:
            left = 30.0 if deadline is None else max(0.0, deadline - _time.monotonic())
            msgs = self.fetch(self.name, 1, timeout=min(left, 30.0))
            if msgs:
                m = msgs[0]
                if auto_ack:
                    m.ack()
                return m, m.topic
            if deadline is not None and _time.monotonic() >= deadline:
                raise errors.Timeout(f"no message for {self.name!r} within {timeout} s")

    def destroy(self) -> None:
        """Remove this identity's durable state (its queue, with what it still holds) and
        close the connection."""
        try:
            self.queue_delete(self.name, force=True)
        except errors.NotFound:
            pass
        finally:
            self.close()

    # -- request / reply (§3.8) -----------------------------------------------------------

    def request(
        self,
        topic: str,
        payload: Payload,
        *,
        timeout: float = 5.0,
        headers: Optional[Dict[str, str]] = None,
    ) -> Message:
        """Publish a request and return the first reply. Raises `NoResponders` when nothing
        listens on `topic`, `errors.Timeout` when no reply comes in time."""
        nonce = secrets.token_hex(6)
        inbox = f"$inbox.{self.client_id}.{nonce}"
        corr = f"{self.client_id}-{nonce}"
        with self.watch(inbox) as w:
            h = dict(headers or {})
            h["reply-to"] = inbox
            h["correlation-id"] = corr
            ack = self.publish(topic, payload, headers=h)
            if ack.unrouted:
                raise errors.NoResponders(f"no responder on {topic}")
            deadline = _time.monotonic() + timeout
            while True:
                m = w.next_message(max(0.0, deadline - _time.monotonic()))
                if m is None:
                    raise errors.Timeout(f"no reply on {topic} within {timeout} s")
                if m.headers.get("correlation-id") == corr:
                    return m

    def serve(
        self,
        pattern: str,
        handler: Callable[[Message], Union[Payload, Tuple[Payload, int]]],
        *,
        group: Optional[str] = "",
        count: Optional[int] = None,
        ready: Optional[threading.Event] = None,
    ) -> int:
        """Answer requests on `pattern` with `handler(msg)` → payload, or (payload, status);
        an exception in the handler answers status 1 with its text. Repliers sharing the
        work join one watch group (default: one named after the pattern; None: no group).
        Returns after `count` requests (None: until the connection ends). `ready` is set once
        the watch is in place."""
        grp = pattern if group == "" else group
        served = 0
        with self.watch(pattern, group=grp) as w:
            if ready is not None:
                ready.set()
            while count is None or served < count:
                try:
                    m = next(w)
                except (StopIteration, ConnectionLost):
                    break
                if "reply-to" not in m.headers:
                    continue
                try:
                    out = handler(m)
                    status = 0
                    if isinstance(out, tuple):
                        out, status = out
                except Exception as e:  # the requester gets the failure, the server goes on
                    out, status = str(e).encode(), 1
                m.reply(_payload_bytes(out), status=status)
                served += 1
        return served

    # -- topics and the rest --------------------------------------------------------------

    def topic_info(self, topic: str) -> TopicInfo:
        f = self._call({"type": "topic_info", "topic": topic}, self.timeout)
        return TopicInfo.from_map(f["topic"], f)

    def topic_list(self, prefix: Optional[str] = None, pattern: Optional[str] = None) -> List[TopicInfo]:
        """Every topic (all pages, §2.5)."""
        out: List[TopicInfo] = []
        after: Optional[str] = None
        while True:
            frame: Frame = {"type": "topic_list"}
            for k, v in (("after", after), ("prefix", prefix), ("pattern", pattern)):
                if v is not None:
                    frame[k] = v
            f = self._call(frame, self.timeout)
            out.extend(TopicInfo.from_map(t) for t in f.get("topics", []))
            after = f.get("next")
            if after is None:
                return out

    def topic_rm(self, topic: str, force: bool = False) -> None:
        self._call({"type": "topic_rm", "topic": topic, "force": force}, self.timeout)

    def topic_purge(self, topic: str, force: bool = False) -> TopicInfo:
        f = self._call({"type": "topic_purge", "topic": topic, "force": force}, self.timeout)
        return TopicInfo.from_map(f["topic"], f)

    def topic_create(self, topic: str, partitions: int = 1, replicas: int = 0) -> TopicInfo:
        """Create a topic; with `partitions` > 1, partitioned (§3.10, §4.34). Answered as the
        first time if it exists with as many partitions; `Conflict` otherwise."""
        f = self._call({"type": "topic_create", "topic": topic, "partitions": partitions,
                        "replicas": replicas}, self.timeout)
        return TopicInfo.from_map(f["topic"], f)

    def topic_set(self, topic: str, **limits: int) -> TopicInfo:
        """Set retention limits: max_msgs, max_bytes, max_age_ms, hard_max_bytes,
        hard_max_age_ms (§4.8)."""
        f = self._call({"type": "topic_set", "topic": topic, **limits}, self.timeout)
        return TopicInfo.from_map(f["topic"], f)

    def token_create(self, ttl_ms: int = 0) -> str:
        """A token for this connection's user, for `connect(token=...)` (§4.29)."""
        f = self._call({"type": "token_create", "ttl_ms": ttl_ms}, self.timeout)
        return str(f["token"])

    def stats(self) -> Dict[str, Any]:
        """The broker's `stats` reply (§5.10), as a dict."""
        return self._call({"type": "stats"}, self.timeout)

    def cluster_status(self) -> Dict[str, Any]:
        """How the server sees its cluster: the `cluster_status` reply (§5.19) as a dict,
        with `mode` ("cluster", or "single" for a server not in cluster mode), `cluster_id`,
        `node_id`, `nodes` (id, addr, role, last_contact_ms, version…) and `groups` (name,
        leader, term, replicas with their lag). A cluster node may ask the leader for the
        lags first: allow it about a second."""
        return self._call({"type": "cluster_status"}, self.timeout)

    def ping(self) -> float:
        """Round trip in seconds."""
        t0 = _time.perf_counter()
        self._call({"type": "ping"}, self.timeout)
        return _time.perf_counter() - t0

    def call(self, type: str, **fields: Any) -> Dict[str, Any]:
        """Any request of docs/protocol.md §4 by its frame type; returns the reply frame.
        For what has no method of its own (`user_add`, `queue_redrive`, `client_close`…)."""
        return self._call({"type": type, **fields}, self.timeout)


def connect(address: Optional[str] = None, **kwargs: Any) -> Client:
    """Connect and say hello: create this client's identity on the broker.

    `address` is `HOST[:PORT]` (default `MOM_SERVER`, else 127.0.0.1:7878). Keywords: `name`
    (the client name, and the name of its durable queue for `subscribe`/`recv`), `user` and
    `password`, or `token` (default `MOM_USER`, `MOM_PASSWORD`, `MOM_TOKEN`), `tls=True`
    (system CAs), `tls_ca="ca.pem"`, `tls_insecure=True`, `client_id` (to come back as the
    same client), `timeout` (seconds, for connecting and for admin requests).
    """
    return Client(address, **kwargs)
