"""Users: password and token. Failures: momd killed with -9 mid-stream, a closed client."""

from __future__ import annotations

import threading
from typing import Any, List

import pytest

import momclient


def test_connect_with_password_then_with_a_token(momd_factory: Any) -> None:
    m = momd_factory(users={"admin": "s3cret pass"})
    with m.connect(user="admin", password="s3cret pass", name="pw") as c:
        assert c.welcome is not None and c.welcome.user == "admin"
        token = c.token_create()
        ack = c.publish("auth.t", b"by password")
    with m.connect(token=token, name="tok") as t:
        assert t.welcome is not None and t.welcome.user == "admin"
        [msg] = list(t.watch("auth.t", from_="all").replay())
        assert msg.seq == ack.seq and msg.sender.user == "admin" and msg.sender.name == "pw"
        t.call("token_revoke", token=token)
    with pytest.raises(momclient.Unauthorized) as info:
        m.connect(token=token)
    assert "revoked" in info.value.message


def test_kill_9_mid_stream_ends_a_watch_with_connection_lost(momd_factory: Any) -> None:
    m = momd_factory()
    c = m.connect(name="watcher")
    p = m.connect(name="publisher")
    w = c.watch("k.>")
    p.publish_many("k.x", [b"x"] * 100)
    got = [w.next_message(timeout=10) for _ in range(100)]
    assert all(x is not None for x in got)
    pending: List[BaseException] = []

    def publish_forever() -> None:
        try:
            while True:
                p.publish("k.x", b"more")
        except momclient.MomError as e:
            pending.append(e)

    t = threading.Thread(target=publish_forever)
    t.start()
    assert w.next_message(timeout=10) is not None, "live messages flow"
    m.kill9()
    with pytest.raises(momclient.ConnectionLost) as info:
        while True:
            w.next_message(timeout=10)
    assert info.value.code == "connection_lost"
    t.join(timeout=10)
    assert not t.is_alive() and isinstance(pending[0], momclient.ConnectionLost)
    with pytest.raises(momclient.ConnectionLost):
        c.ping()  # every later request fails at once, the same way
    assert c.closed and p.closed
    c.close()  # closing again is harmless
    with pytest.raises(momclient.ConnectionLost) as info2:
        m.connect()
    assert "cannot connect" in info2.value.message


def test_close_ends_iteration_and_unacked_go_back(momd_factory: Any) -> None:
    m = momd_factory()
    with m.connect() as c:
        c.queue_create("work", ["w.>"])
        c.publish("w.1", b"job")
        cons = c.consume("work", credit=1)
        assert cons.next_message(timeout=5) is not None
    with pytest.raises(momclient.ConnectionLost):
        cons.next_message(timeout=1)
    with m.connect() as c:
        [again] = c.fetch("work", timeout=5)
        assert again.delivery == 2
