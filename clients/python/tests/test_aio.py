"""The asyncio flavour: the same protocol through momclient.aio."""

from __future__ import annotations

import asyncio

import pytest

import momclient
from momclient import aio
from conftest import Momd


def test_async_publish_watch_queue_and_request(momd: Momd, uniq: str) -> None:
    async def main() -> None:
        async with await aio.connect(momd.addr, name="async") as c:
            ack = await c.publish(f"a.{uniq}", b"one", headers={"k": "v"}, msg_id="m1")
            assert ack.seq == 1
            assert (await c.publish(f"a.{uniq}", b"dup", msg_id="m1")).duplicate
            many = await c.publish_many(f"a.{uniq}", [b"x"] * 2500, batch=100, window=4)
            assert many.seqs == list(range(2, 2502))
            w = await c.watch(f"a.{uniq}", from_="all")
            got = [m async for m in w.replay()]
            assert len(got) == 2501 and got[0].headers == {"k": "v"} and w.live

            await c.queue_create(uniq, [f"q.{uniq}"])
            await c.publish_many(f"q.{uniq}", [b"a", b"b"])
            msgs = await c.fetch(uniq, max=10, timeout=5)
            await c.ack(uniq, msgs[:1])
            await c.nack(uniq, msgs[1:])
            [again] = await c.fetch(uniq, timeout=5)
            assert (again.seq, again.delivery) == (2, 2)
            await c.ack(uniq, [again])
            assert (await c.queue_info(uniq)).acked == 2

            async def serve() -> None:
                async with await c.watch(f"svc.{uniq}") as reqs:
                    served.set()
                    req = await reqs.next_message(timeout=10)
                    assert req is not None
                    await c.reply(req, req.payload.upper())

            served = asyncio.Event()
            task = asyncio.create_task(serve())
            await served.wait()
            reply = await c.request(f"svc.{uniq}", b"hi", timeout=10)
            assert reply.payload == b"HI" and reply.headers["status"] == "0"
            await task
            with pytest.raises(momclient.NoResponders):
                await c.request(f"nobody.{uniq}", b"hi")
            with pytest.raises(momclient.NotFound) as info:
                await c.topic_info(f"missing.{uniq}")
            assert info.value.code == "not_found"

    asyncio.run(main())


def test_async_kill_9_ends_a_watch_with_connection_lost(momd_factory) -> None:  # type: ignore[no-untyped-def]
    m = momd_factory()

    async def main() -> None:
        c = await aio.connect(m.addr)
        w = await c.watch("k.>")
        await c.publish("k.x", b"1")
        assert await w.next_message(timeout=10) is not None
        m.kill9()
        with pytest.raises(momclient.ConnectionLost):
            await w.next_message(timeout=10)
        with pytest.raises(momclient.ConnectionLost):
            await c.ping()
        await c.close()

    asyncio.run(main())
