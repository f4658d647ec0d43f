"""Queues: fetch and consume, ack and nack, redelivery, info, delete."""

from __future__ import annotations

import momclient
from conftest import Momd


def test_fetch_ack_and_nack_redelivers_with_a_higher_delivery(client: momclient.Client, uniq: str) -> None:
    topic = f"q.{uniq}"
    info = client.queue_create(uniq, [topic], max_deliver=3)
    assert (info.name, info.bindings, info.max_deliver, info.ready) == (uniq, [topic], 3, 0)
    client.publish_many(topic, [b"a", b"b", b"c"])
    msgs = client.fetch(uniq, max=10, timeout=5)
    assert [(m.seq, m.delivery, m.queue) for m in msgs] == [(1, 1, uniq), (2, 1, uniq), (3, 1, uniq)]
    assert client.queue_info(uniq).unacked == 3
    msgs[0].ack()
    msgs[1].nack()
    client.nack(uniq, [msgs[2]], delay_ms=200)
    again = client.fetch(uniq, max=10, timeout=5)
    assert [(m.seq, m.delivery) for m in again] == [(2, 2)]
    later = client.fetch(uniq, max=10, timeout=5)
    assert [(m.seq, m.delivery) for m in later] == [(3, 2)]
    client.ack(uniq, again + later)
    info = client.queue_info(uniq)
    assert (info.ready, info.unacked, info.acked, info.redelivered) == (0, 0, 3, 2)
    # Acking a message the queue no longer holds names it; the rest are settled.
    try:
        client.ack(uniq, [msgs[0]])
        raise AssertionError("acked twice")
    except momclient.NotFound as e:
        assert e.code == "not_found" and f"{topic}" in e.message


def test_unacked_messages_come_back_when_the_connection_closes(momd: Momd, uniq: str) -> None:
    topic = f"qc.{uniq}"
    with momd.connect() as c:
        c.queue_create(uniq, [topic])
        c.publish(topic, b"work")
    with momd.connect(name="crashing worker") as w:
        [m] = w.fetch(uniq, timeout=5)
        assert m.delivery == 1
    with momd.connect(name="next worker") as w:
        [m] = w.fetch(uniq, timeout=5)
        assert (m.payload, m.delivery) == (b"work", 2)
        m.ack()


def test_dead_letter_after_max_deliver(client: momclient.Client, uniq: str) -> None:
    topic = f"qd.{uniq}"
    client.queue_create(uniq, [topic], max_deliver=2)
    client.publish(topic, b"poison")
    for d in (1, 2):
        [m] = client.fetch(uniq, timeout=5)
        assert m.delivery == d
        m.nack()
    assert client.fetch(uniq, timeout=0.2) == []
    w = client.watch(f"$dlq.{uniq}", from_="all")
    [dead] = list(w.replay())
    assert dead.payload == b"poison" and dead.headers["dlq-reason"] == "nack"
    assert dead.headers["dlq-deliveries"] == "2"
    assert client.queue_info(uniq).dead_lettered == 1


def test_consume_with_credit_and_cancel_gives_back(client: momclient.Client, uniq: str) -> None:
    topic = f"qp.{uniq}"
    client.queue_create(uniq, [topic])
    client.publish_many(topic, [str(i).encode() for i in range(10)])
    cons = client.consume(uniq, credit=3)
    first = [cons.next_message(timeout=5) for _ in range(3)]
    assert all(m is not None for m in first)
    assert cons.next_message(timeout=0.3) is None, "no more than credit unacked"
    assert client.queue_info(uniq).unacked == 3
    first[0].ack()  # type: ignore[union-attr]
    m4 = cons.next_message(timeout=5)
    assert m4 is not None and m4.seq == 4
    cons.cancel()
    info = client.queue_info(uniq)
    assert (info.unacked, info.ready, info.consumers) == (0, 9, 0)


def test_fetch_ok_holds_what_is_ready_up_to_max(client: momclient.Client, uniq: str) -> None:
    topic = f"qf.{uniq}"
    client.queue_create(uniq, [topic])
    client.publish_many(topic, [b"x"] * 300)
    assert len(client.fetch(uniq, max=1000)) == 256, "more than 256 is taken as 256"
    assert len(client.fetch(uniq, max=10)) == 10
    assert len(client.fetch(uniq, max=100)) == 34, "what is ready, not waiting to fill max"
    # Big messages: fewer than max, so that the frame stays well under max_frame.
    client.publish_many(topic, [b"y" * (1000 * 1024)] * 8)
    got = client.fetch(uniq, max=8)
    assert 1 <= len(got) < 8
    client.queue_delete(uniq, force=True)


def test_queue_lifecycle_bind_unbind_purge_delete(client: momclient.Client, uniq: str) -> None:
    client.queue_create(uniq, [f"l.{uniq}.a"])
    assert client.queue_create(uniq, [f"l.{uniq}.a"]).name == uniq, "the same create again is harmless"
    assert client.queue_bind(uniq, f"l.{uniq}.b").bindings == [f"l.{uniq}.a", f"l.{uniq}.b"]
    client.publish(f"l.{uniq}.b", b"1")
    assert client.queue_info(uniq).ready == 1
    assert uniq in [q.name for q in client.queue_list()]
    assert client.queue_purge(uniq).purged == 1
    assert client.queue_unbind(uniq).bindings == []
    client.queue_delete(uniq)
    try:
        client.queue_info(uniq)
        raise AssertionError("deleted")
    except momclient.NotFound:
        pass


def test_credit_over_4096_is_taken_as_4096(client: momclient.Client, uniq: str) -> None:
    topic = f"qcr.{uniq}"
    client.queue_create(uniq, [topic])
    client.publish_many(topic, [b"x"] * 4200)
    cons = client.consume(uniq, credit=100_000)
    n = 0
    while cons.next_message(timeout=0.5) is not None:
        n += 1
    assert n == 4096
    assert client.queue_info(uniq).unacked == 4096
    cons.cancel(release=True)
    client.queue_delete(uniq, force=True)
