"""Each error code of docs/protocol.md §7, provoked from Python, arrives as a `MomError` whose
`code` is that code (and as the subclass of that code)."""

from __future__ import annotations

import threading
from typing import Any, Callable, Type

import pytest

import momclient
from conftest import Momd


def expect(cls: Type[momclient.MomError], code: str, f: Callable[[], Any]) -> momclient.MomError:
    with pytest.raises(cls) as info:
        f()
    e = info.value
    assert isinstance(e, momclient.MomError) and e.code == code and e.message, e
    return e


def test_bad_request(client: momclient.Client, uniq: str) -> None:
    expect(momclient.BadRequest, "bad_request", lambda: client.publish("a..b", b"x"))
    expect(momclient.BadRequest, "bad_request", lambda: client.watch("a.b", from_="yesterday"))
    expect(momclient.BadRequest, "bad_request", lambda: client.queue_create("$nope", ["a"]))
    client.queue_create(uniq)
    expect(momclient.BadRequest, "bad_request", lambda: client.consume(uniq, credit=0))
    expect(momclient.BadRequest, "bad_request", lambda: client.publish(f"t.{uniq}", b"x", headers={"": "v"}))
    expect(momclient.BadRequest, "bad_request", lambda: client.publish(f"t.{uniq}", b"x", msg_id="m" * 1025))
    # Invalid names are bad requests everywhere, also where only lookups are done.
    for bad in ("a..b", "a b", "a.*", "a.>", ".a"):
        expect(momclient.BadRequest, "bad_request", lambda: client.topic_info(bad))
        expect(momclient.BadRequest, "bad_request", lambda: client.topic_rm(bad))
        expect(momclient.BadRequest, "bad_request", lambda: client.topic_purge(bad))
    # A payload must be bin: a str where the doc says bin is a value of the wrong type.
    expect(
        momclient.BadRequest,
        "bad_request",
        lambda: client.call("publish", topic=f"t.{uniq}", msgs=[{"payload": "text"}]),
    )
    assert client.ping() >= 0, "a bad request leaves the connection open"


def test_an_unreadable_frame_gets_an_error_without_id_and_the_connection_stays_open(client: momclient.Client) -> None:
    client._sock.sendall(b"\x00\x00\x00\x01\xc1")  # 0xc1 is never valid MessagePack
    client.ping()  # answered after the error: the connection is still open
    e = client.connection_error
    assert e is not None and e.code == "bad_request"
    assert not client.closed


def test_unauthorized(momd_factory: Any) -> None:
    m = momd_factory(users={"root": "s3cret"})
    expect(momclient.Unauthorized, "unauthorized", lambda: m.connect())
    expect(momclient.Unauthorized, "unauthorized", lambda: m.connect(user="root", password="wrong"))
    expect(momclient.Unauthorized, "unauthorized", lambda: m.connect(token="not.a.token"))


def test_forbidden(momd_factory: Any, client: momclient.Client) -> None:
    expect(momclient.Forbidden, "forbidden", lambda: client.publish("$sys.events", b"x"))
    expect(momclient.Forbidden, "forbidden", lambda: client.topic_rm("$sys.events"))
    m = momd_factory(start=False)
    m.add_user("root", "s3cret", admin=True)
    m.add_user("bob", "b0b", publish=["bob.>"], subscribe=["bob.>"])
    m.start()
    with m.connect(user="bob", password="b0b") as bob:
        assert bob.publish("bob.x", b"ok").seq == 1
        expect(momclient.Forbidden, "forbidden", lambda: bob.publish("alice.x", b"no"))
        expect(momclient.Forbidden, "forbidden", lambda: bob.watch("alice.>"))
        expect(momclient.Forbidden, "forbidden", lambda: bob.call("user_list"))


def test_not_found(client: momclient.Client, uniq: str) -> None:
    expect(momclient.NotFound, "not_found", lambda: client.topic_info(f"missing.{uniq}"))
    expect(momclient.NotFound, "not_found", lambda: client.queue_info(uniq))
    expect(momclient.NotFound, "not_found", lambda: client.fetch(uniq))
    expect(momclient.NotFound, "not_found", lambda: client.call("unwatch", watch=999999))


def test_conflict(client: momclient.Client, uniq: str) -> None:
    client.queue_create(uniq, [f"c.{uniq}"])
    client.publish(f"c.{uniq}", b"held")
    e = expect(momclient.Conflict, "conflict", lambda: client.queue_delete(uniq))
    assert "force" in e.message
    expect(momclient.Conflict, "conflict", lambda: client.topic_rm(f"c.{uniq}"))
    expect(momclient.Conflict, "conflict", lambda: client.queue_create(uniq, [f"other.{uniq}"]))
    client.queue_delete(uniq, force=True)


def test_too_large(client: momclient.Client, uniq: str) -> None:
    assert client.welcome is not None
    over = b"x" * (client.welcome.max_payload + 1)
    expect(momclient.TooLarge, "too_large", lambda: client.publish(f"big.{uniq}", over))
    expect(momclient.TooLarge, "too_large", lambda: client.publish(f"big.{uniq}", b"x", headers={"h": "v" * 65536}))
    expect(momclient.TooLarge, "too_large", lambda: client.watch(*[f"p{i}.{uniq}" for i in range(257)]))
    assert client.ping() >= 0, "the connection stays open"


def test_too_large_for_the_257th_consumer_of_a_connection(momd: Momd, uniq: str) -> None:
    with momd.connect() as c:
        c.queue_create(uniq, [f"cons.{uniq}"])
        consumers = [c.consume(uniq, credit=1) for _ in range(256)]
        expect(momclient.TooLarge, "too_large", lambda: c.consume(uniq, credit=1))
        consumers[0].cancel()
        c.consume(uniq, credit=1)  # a cancel frees a place
        c.queue_delete(uniq, force=True)


def test_rate_limited_past_the_watch_pattern_limits(momd: Momd, uniq: str) -> None:
    with momd.connect() as c:
        for w in range(39):  # 39 * 256 = 9984 patterns: within 10,000 per connection
            c.watch(*[f"rl.{uniq}.{w}.{i}" for i in range(256)])
        expect(momclient.RateLimited, "rate_limited", lambda: c.watch(*[f"rl.{uniq}.x.{i}" for i in range(17)]))


def test_rate_limited_past_the_connections_of_a_user(momd_factory: Any) -> None:
    m = momd_factory("--max-connections-per-user", "1", users={"root": "s3cret"})
    with m.connect(user="root", password="s3cret"):
        expect(momclient.RateLimited, "rate_limited", lambda: m.connect(user="root", password="s3cret"))


def test_unavailable_when_the_disk_is_full_and_at_shutdown(momd_factory: Any) -> None:
    m = momd_factory("--min-free-disk", "1000000GiB")
    with m.connect() as c:
        e = expect(momclient.Unavailable, "unavailable", lambda: c.publish("full.x", b"x"))
        assert e.message.startswith("disk full")
        assert c.topic_list() is not None, "everything but publish goes on"
    m2 = momd_factory()
    with m2.connect() as c:
        w = c.watch("x.>")
        m2.stop()
        with pytest.raises(momclient.ConnectionLost) as info:
            next(w)
        assert info.value.server_code == "unavailable", info.value


def test_internal_when_a_reply_would_not_fit_in_max_frame(momd_factory: Any, uniq: str) -> None:
    # A queue whose bindings add up to more than max_frame: its queue_info cannot be sent.
    m = momd_factory("--max-frame", "256KiB", "--max-payload", "64KiB")
    with m.connect() as c:
        c.queue_create(uniq)
        patterns = [f"p{i:04d}." + "x" * 240 for i in range(1200)]
        for i in range(0, 900, 300):
            c.queue_bind(uniq, *patterns[i : i + 300])
        # The bind is applied; its reply, the queue's queue_info, no longer fits.
        expect(momclient.Internal, "internal", lambda: c.queue_bind(uniq, *patterns[900:]))
        expect(momclient.Internal, "internal", lambda: c.queue_info(uniq))
        assert c.ping() >= 0


def test_an_unknown_code_is_still_a_mom_error() -> None:
    e = momclient.errors.from_code("brand_new", "from a newer server")
    assert type(e) is momclient.MomError and e.code == "brand_new"
    assert str(e) == "brand_new: from a newer server"


def test_errors_are_raised_in_the_thread_that_asked(client: momclient.Client, uniq: str) -> None:
    out: list = []

    def ask(i: int) -> None:
        try:
            client.topic_info(f"nothing.{uniq}.{i}")
        except momclient.NotFound as e:
            out.append(e.message)

    ts = [threading.Thread(target=ask, args=(i,)) for i in range(20)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(out) == sorted(f'topic "nothing.{uniq}.{i}" not found' for i in range(20))
