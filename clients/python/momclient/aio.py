"""The asyncio flavour: the same frames, codec, types and errors as `momclient.Client`, on
one asyncio stream. A reader task matches replies to requests by id and hands pushes to
their watch or consumer.

    async with await momclient.aio.connect("127.0.0.1:7878", name="svc") as c:
        await c.publish("orders.eu", b"...")
        async for m in await c.watch("orders.>", from_="all"):
            ...
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import ssl
from typing import Any, AsyncIterator, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from . import errors
from ._codec import DEFAULT_MAX_FRAME, Frame, FrameError, FrameReader, encode_frame
from .client import DEFAULT_PORT, Payload, PublishItem, _keys, _publish_msg, _start, parse_address
from .errors import ConnectionLost
from .types import Message, Notice, PublishAck, QueueInfo, TopicInfo, Welcome

_END = object()

MsgRef = Union[Message, Dict[str, Any], Tuple[str, int]]


class AsyncStream:
    """A watch or a consumer: `async for m in stream`, or `await stream.next_message(t)`."""

    def __init__(self, client: "AsyncClient", sid: int, queue: Optional[str] = None) -> None:
        self._client = client
        self.id = sid
        self.queue = queue
        self._q: "asyncio.Queue[Any]" = asyncio.Queue()
        self._pending: List[Message] = []
        self.live = False
        self.skipped = 0
        self.ended: Optional[str] = None
        self.notices: List[Notice] = []

    async def _get(self, timeout: Optional[float]) -> Union[Message, Notice, None]:
        if self._pending:
            return self._pending.pop(0)
        if self.ended is not None:
            self._end()
        try:
            item = await asyncio.wait_for(self._q.get(), timeout)
        except asyncio.TimeoutError:
            return None
        if item is _END:
            self._q.put_nowait(_END)
            if self.ended is None:
                self.ended = "connection"
            self._end()
        if isinstance(item, list):
            self._pending.extend(item)
            return self._pending.pop(0)
        if isinstance(item, Notice):
            self.notices.append(item)
            if item.kind == "live":
                self.live = True
            elif item.kind == "slow_consumer":
                self.skipped += item.skipped
            elif item.kind == "ended":
                self.ended = item.message or "ended by the server"
            return item
        return None

    def _end(self) -> None:
        exc = self._client._closed_exc
        if exc is not None and self.ended == "connection":
            raise exc
        raise StopAsyncIteration

    async def next_message(self, timeout: Optional[float] = None) -> Optional[Message]:
        """The next message; None if none came within `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            item = await self._get(left)
            if isinstance(item, Message):
                return item
            if item is None and deadline is not None and loop.time() >= deadline:
                return None

    async def replay(self, timeout: Optional[float] = 30.0) -> AsyncIterator[Message]:
        """The stored messages of a watch from all/seq/time/last, up to its `live` notice."""
        while not self.live:
            try:
                item = await self._get(timeout)
            except StopAsyncIteration:
                return
            if item is None:
                raise errors.Timeout(f"no message or live notice within {timeout} s")
            if isinstance(item, Message):
                yield item

    def __aiter__(self) -> "AsyncStream":
        return self

    async def __anext__(self) -> Message:
        m = await self.next_message()
        assert m is not None
        return m

    async def close(self) -> None:
        """Unwatch, or cancel the consumer."""
        if self.ended is None and not self._client.closed:
            if self.queue is None:
                await self._client._call({"type": "unwatch", "watch": self.id})
                self._client._watches.pop(self.id, None)
            else:
                await self._client._call({"type": "cancel", "consumer": self.id})
                self._client._consumers.pop(self.id, None)
            self.ended = "closed"
            self._q.put_nowait(_END)

    async def __aenter__(self) -> "AsyncStream":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncClient:
    """Use `await momclient.aio.connect(...)` to make one."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._pending: Dict[int, "asyncio.Future[Frame]"] = {}
        self._watches: Dict[int, AsyncStream] = {}
        self._consumers: Dict[int, AsyncStream] = {}
        self._closed_exc: Optional[ConnectionLost] = None
        self._last_conn_error: Optional[Frame] = None
        self._reader_fr = FrameReader(DEFAULT_MAX_FRAME)
        self._closing = False
        self.welcome: Optional[Welcome] = None
        self.name = "py"
        self.address = ""
        self.timeout = 10.0

    @property
    def closed(self) -> bool:
        return self._closed_exc is not None

    @property
    def client_id(self) -> int:
        return self.welcome.client_id if self.welcome else 0

    async def _open(self, address: str, *, name: str, user: Optional[str], password: Optional[str], token: Optional[str],
                    tls: bool, tls_ca: Optional[str], tls_insecure: bool, client_id: Optional[int], timeout: float) -> None:
        self.address, self.name, self.timeout = address, name, timeout
        host, port = parse_address(address)
        ctx: Optional[ssl.SSLContext] = None
        if tls or tls_ca or tls_insecure:
            ctx = ssl.create_default_context(cafile=tls_ca) if tls_ca else ssl.create_default_context()
            if tls_insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
        try:
            self._r, self._w = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ctx, server_hostname=host if ctx else None), timeout
            )
        except (OSError, asyncio.TimeoutError) as e:
            raise ConnectionLost(f"cannot connect to {address}: {e}") from e
        self._task = asyncio.get_running_loop().create_task(self._read_loop())
        hello: Frame = {"type": "hello", "version": 1, "client": name}
        if client_id:
            hello["client_id"] = client_id
        if token:
            hello["token"] = token
        elif user is not None:
            hello["user"], hello["password"] = user, password or ""
        try:
            w = await self._call(hello, timeout)
        except BaseException:
            await self.close()
            raise
        self.welcome = Welcome.from_frame(w)
        self._reader_fr.max_frame = self.welcome.max_frame

    async def _read_loop(self) -> None:
        why = "the server closed the connection"
        try:
            while True:
                data = await self._r.read(256 * 1024)
                if not data:
                    break
                for f in self._reader_fr.feed(data):
                    self._dispatch(f)
        except FrameError as e:
            why = str(e)
        except (OSError, ValueError) as e:
            why = f"connection lost: {e}"
        except asyncio.CancelledError:
            why = "closed by this client"
        if self._closing:
            why = "closed by this client"
        self._fail(why)

    def _dispatch(self, f: Frame) -> None:
        t = f.get("type")
        if t in ("deliver", "queue_deliver"):
            s = self._watches.get(f.get("watch", 0)) if t == "deliver" else self._consumers.get(f.get("consumer", 0))
            if s is not None:
                s._q.put_nowait([Message.from_map(m, queue=s.queue) for m in f.get("msgs", [])])
            return
        if t == "notice":
            s = self._consumers.get(f["consumer"]) if f.get("consumer") else self._watches.get(f.get("watch", 0))
            if s is not None:
                n = Notice(kind=f.get("kind", ""), skipped=f.get("skipped", 0), message=f.get("message", ""))
                s._q.put_nowait(n)
                if n.kind == "ended":
                    s._q.put_nowait(_END)
            return
        rid = f.get("id")
        if rid is None:
            if t == "error":
                self._last_conn_error = f
            return
        fut = self._pending.pop(rid, None)
        if fut is None or fut.done():
            return
        if t == "watch_ok":  # registered before the caller resumes: pushes follow at once
            self._watches[f["watch"]] = f["_stream"] = AsyncStream(self, f["watch"])
        elif t == "consume_ok":
            self._consumers[f["consumer"]] = f["_stream"] = AsyncStream(self, f["consumer"], queue="")
        if t == "error":
            fut.set_exception(errors.from_code(f.get("code", "internal"), f.get("message", "")))
        else:
            fut.set_result(f)

    def _fail(self, why: str) -> None:
        if self._closed_exc is not None:
            return
        code = None
        if self._last_conn_error is not None:
            code = self._last_conn_error.get("code")
            why = f"{why} ({code}: {self._last_conn_error.get('message', '')})"
        self._closed_exc = ConnectionLost(why, server_code=code)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(self._closed_exc)
        self._pending.clear()
        for s in list(self._watches.values()) + list(self._consumers.values()):
            s._q.put_nowait(_END)
        self._watches.clear()
        self._consumers.clear()

    async def _submit(self, frame: Frame) -> "asyncio.Future[Frame]":
        if self._closed_exc is not None:
            raise self._closed_exc
        rid = next(self._ids)
        frame["id"] = rid
        fut: "asyncio.Future[Frame]" = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        data = encode_frame(frame)
        if self.welcome is not None and len(data) - 4 > self.welcome.max_frame:
            self._pending.pop(rid, None)
            raise errors.TooLarge(f"frame of {len(data) - 4} bytes is over max_frame {self.welcome.max_frame}")
        try:
            self._w.write(data)
            await self._w.drain()  # backpressure: the server stops reading past max_inflight
        except OSError as e:
            self._pending.pop(rid, None)
            self._fail(f"connection to {self.address} lost while sending: {e}")
            raise self._closed_exc or ConnectionLost(str(e)) from e
        return fut

    async def _call(self, frame: Frame, timeout: Optional[float] = None) -> Frame:
        fut = await self._submit(frame)
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise errors.Timeout(f"no reply within {timeout} s") from None

    async def close(self) -> None:
        self._closing = True
        try:
            self._w.close()
        except (OSError, AttributeError):
            pass
        task = getattr(self, "_task", None)
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._fail("closed by this client")

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- requests: the same names and arguments as momclient.Client --------------------

    async def publish(self, topic: str, payload: Payload, *, headers: Optional[Dict[str, str]] = None,
                      msg_id: Optional[str] = None, key: Optional[str] = None) -> PublishAck:
        f = await self._call({"type": "publish", "topic": topic,
                              "msgs": [_publish_msg(payload, headers, msg_id, key)]})
        return PublishAck.from_frame(f)

    async def publish_many(self, topic: str, msgs: Iterable[PublishItem], *, batch: int = 1000,
                           window: int = 16) -> PublishAck:
        """As `Client.publish_many`: batches of `batch`, `window` of them awaiting their ack."""
        assert self.welcome is not None
        budget = self.welcome.max_frame - 1024
        inflight: List[Tuple[int, "asyncio.Future[Frame]"]] = []
        acks: List[PublishAck] = []

        async def send(chunk: List[Dict[str, Any]], offset: int) -> None:
            inflight.append((offset, await self._submit({"type": "publish", "topic": topic, "msgs": chunk})))
            while len(inflight) > window:
                off, fut = inflight.pop(0)
                acks.append(PublishAck.from_frame(await fut, off))

        chunk: List[Dict[str, Any]] = []
        size = n = start = 0
        for item in msgs:
            m = _publish_msg(item)
            msize = len(m["payload"]) + 64 + sum(len(k) + len(v) + 8 for k, v in m.get("headers", {}).items())
            if chunk and (len(chunk) >= batch or size + msize > budget):
                await send(chunk, start)
                start, chunk, size = n, [], 0
            chunk.append(m)
            size += msize
            n += 1
        if chunk:
            await send(chunk, start)
        for off, fut in inflight:
            acks.append(PublishAck.from_frame(await fut, off))
        last = acks[-1] if acks else PublishAck(topic=topic, seqs=[])
        return PublishAck(
            topic=last.topic,
            seqs=[s for a in acks for s in a.seqs],
            duplicates=sum(a.duplicates for a in acks),
            duplicate_indexes=[i for a in acks for i in a.duplicate_indexes],
            partitions=[p for a in acks for p in a.partitions],
            watchers=last.watchers,
            queues=last.queues,
        )

    async def watch(self, *patterns: str, from_: Union[str, int, None] = "new", at: int = 0,
                    after: Optional[Dict[str, int]] = None, passive: bool = False,
                    group: Optional[str] = None) -> AsyncStream:
        fr, at = _start(from_, at)
        frame: Frame = {"type": "watch", "patterns": list(patterns), "from": fr, "at": at}
        if after:
            frame["after"] = dict(after)
        if passive:
            frame["passive"] = True
        if group is not None:
            frame["group"] = group
        s: AsyncStream = (await self._call(frame, self.timeout))["_stream"]
        return s

    async def queue_create(self, queue: str, bindings: Sequence[str] = (), *, from_: Union[str, int, None] = "new",
                           at: int = 0, max_deliver: Optional[int] = None, ack_wait_ms: Optional[int] = None,
                           exist_ok: bool = False) -> QueueInfo:
        fr, at = _start(from_, at)
        frame: Frame = {"type": "queue_create", "queue": queue, "bindings": list(bindings), "from": fr, "at": at}
        if max_deliver is not None:
            frame["max_deliver"] = max_deliver
        if ack_wait_ms is not None:
            frame["ack_wait_ms"] = ack_wait_ms
        if exist_ok:
            frame["exist_ok"] = True
        f = await self._call(frame, self.timeout)
        return QueueInfo.from_map(f["queue"], f)

    async def queue_bind(self, queue: str, *patterns: str) -> QueueInfo:
        f = await self._call({"type": "queue_bind", "queue": queue, "patterns": list(patterns)}, self.timeout)
        return QueueInfo.from_map(f["queue"], f)

    async def queue_info(self, queue: str) -> QueueInfo:
        f = await self._call({"type": "queue_info", "queue": queue}, self.timeout)
        return QueueInfo.from_map(f["queue"], f)

    async def queue_delete(self, queue: str, force: bool = False) -> None:
        await self._call({"type": "queue_delete", "queue": queue, "force": force}, self.timeout)

    async def fetch(self, queue: str, max: int = 1, timeout: float = 0.0, detached: bool = False) -> List[Message]:
        """Messages from a queue; settle them with `await c.ack(queue, msgs)` / `nack`."""
        frame: Frame = {"type": "fetch", "queue": queue, "max": max, "timeout_ms": int(timeout * 1000)}
        if detached:
            frame["detached"] = True
        f = await self._call(frame)
        return [Message.from_map(m, queue=f.get("queue", queue)) for m in f.get("msgs", [])]

    async def consume(self, queue: str, credit: int = 64) -> AsyncStream:
        s: AsyncStream = (await self._call({"type": "consume", "queue": queue, "credit": credit}, self.timeout))["_stream"]
        s.queue = queue
        return s

    async def ack(self, queue: str, msgs: Iterable[MsgRef]) -> None:
        await self._call({"type": "ack", "queue": queue, "msgs": _keys(msgs)}, self.timeout)

    async def nack(self, queue: str, msgs: Iterable[MsgRef], *, delay_ms: int = 0, release: bool = False) -> None:
        frame: Frame = {"type": "nack", "queue": queue, "msgs": _keys(msgs), "delay_ms": delay_ms}
        if release:
            frame["release"] = True
        await self._call(frame, self.timeout)

    async def topic_info(self, topic: str) -> TopicInfo:
        f = await self._call({"type": "topic_info", "topic": topic}, self.timeout)
        return TopicInfo.from_map(f["topic"], f)

    async def request(self, topic: str, payload: Payload, *, timeout: float = 5.0,
                      headers: Optional[Dict[str, str]] = None) -> Message:
        nonce = secrets.token_hex(6)
        inbox, corr = f"$inbox.{self.client_id}.{nonce}", f"{self.client_id}-{nonce}"
        async with await self.watch(inbox) as w:
            h = dict(headers or {})
            h["reply-to"], h["correlation-id"] = inbox, corr
            if (await self.publish(topic, payload, headers=h)).unrouted:
                raise errors.NoResponders(f"no responder on {topic}")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                m = await w.next_message(max(0.0, deadline - loop.time()))
                if m is None:
                    raise errors.Timeout(f"no reply on {topic} within {timeout} s")
                if m.headers.get("correlation-id") == corr:
                    return m

    async def reply(self, request: Message, payload: Payload, status: int = 0) -> PublishAck:
        """Answer a request received by a watch (§3.8)."""
        h = {"status": str(status)}
        if "correlation-id" in request.headers:
            h["correlation-id"] = request.headers["correlation-id"]
        return await self.publish(request.headers["reply-to"], payload, headers=h)

    async def cluster_status(self) -> Dict[str, Any]:
        """The `cluster_status` reply (§5.19) as a dict, as `Client.cluster_status`."""
        return await self._call({"type": "cluster_status"}, self.timeout)

    async def ping(self) -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await self._call({"type": "ping"}, self.timeout)
        return loop.time() - t0

    async def call(self, type: str, **fields: Any) -> Dict[str, Any]:
        return await self._call({"type": type, **fields}, self.timeout)


async def connect(address: Optional[str] = None, *, name: str = "py", user: Optional[str] = None,
                  password: Optional[str] = None, token: Optional[str] = None, tls: bool = False,
                  tls_ca: Optional[str] = None, tls_insecure: bool = False, client_id: Optional[int] = None,
                  timeout: float = 10.0) -> AsyncClient:
    """Connect and say hello; the same arguments (and MOM_* defaults) as `momclient.connect`."""
    c = AsyncClient()
    await c._open(
        address or os.environ.get("MOM_SERVER") or f"127.0.0.1:{DEFAULT_PORT}",
        name=name,
        user=user if user is not None else os.environ.get("MOM_USER"),
        password=password if password is not None else os.environ.get("MOM_PASSWORD"),
        token=token if token is not None else os.environ.get("MOM_TOKEN"),
        tls=tls, tls_ca=tls_ca, tls_insecure=tls_insecure, client_id=client_id, timeout=timeout,
    )
    return c
