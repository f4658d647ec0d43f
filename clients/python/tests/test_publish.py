"""Publishing: one at a time and batched give the same log; headers and msg_id dedupe."""

from __future__ import annotations

import time

import momclient
from conftest import Momd


def read_all(c: momclient.Client, topic: str) -> list:
    w = c.watch(topic, from_="all")
    out = list(w.replay())
    w.close()
    return out


def test_batched_and_one_at_a_time_store_the_same_messages(client: momclient.Client, uniq: str) -> None:
    n = 300
    payloads = [f"m{i}".encode() for i in range(n)]
    one = [client.publish(f"one.{uniq}", p) for p in payloads]
    assert [a.seq for a in one] == list(range(1, n + 1))
    many = client.publish_many(f"many.{uniq}", payloads, batch=64, window=2)
    assert many.seqs == list(range(1, n + 1)) and many.duplicates == 0
    a = read_all(client, f"one.{uniq}")
    b = read_all(client, f"many.{uniq}")
    assert [m.payload for m in a] == [m.payload for m in b] == payloads
    assert [m.seq for m in b] == list(range(1, n + 1))


def test_publish_many_splits_batches_under_max_frame(client: momclient.Client, uniq: str) -> None:
    big = b"x" * (700 * 1024)  # 12 of them would not fit one 8 MiB frame
    ack = client.publish_many(f"big.{uniq}", [big] * 30, batch=1000)
    assert ack.seqs == list(range(1, 31))
    assert client.topic_info(f"big.{uniq}").messages == 30


def test_publish_many_without_ack_stores_everything(client: momclient.Client, uniq: str) -> None:
    ack = client.publish_many(f"noack.{uniq}", [b"x"] * 500, batch=50, no_ack=True)
    assert ack.seqs == []
    # no_ack: publish_many ends with a ping, and publishes of one connection to one
    # topic are stored in order; a last acknowledged publish sees them all.
    last = client.publish(f"noack.{uniq}", b"last")
    assert last.seq == 501


def test_headers_and_str_payload_round_trip(client: momclient.Client, uniq: str) -> None:
    topic = f"h.{uniq}"
    client.publish(topic, "héllo", headers={"trace": "abc", "ünï": "côde"})
    [m] = read_all(client, topic)
    assert m.payload == "héllo".encode() and m.text() == "héllo"
    assert m.headers == {"trace": "abc", "ünï": "côde"}


def test_a_repeated_msg_id_is_acknowledged_with_the_first_seq_and_not_stored(client: momclient.Client, uniq: str) -> None:
    topic = f"dedupe.{uniq}"
    first = client.publish(topic, b"order 42", msg_id="o-42")
    assert (first.seq, first.duplicates, first.duplicate) == (1, 0, False)
    again = client.publish(topic, b"order 42 again", msg_id="o-42")
    assert again.seqs == [1] and again.duplicates == 1 and again.duplicate_indexes == [0] and again.duplicate
    other = client.publish(topic, b"order 43", msg_id="o-43")
    assert other.seq == 2
    # In one batch too, and publish_many reports the indexes in the whole sequence.
    ack = client.publish_many(
        topic,
        [
            {"payload": b"a", "msg_id": "o-44"},
            {"payload": b"dup of 42", "msg_id": "o-42"},
            {"payload": b"dup of 44", "msg_id": "o-44"},
            {"payload": b"b", "headers": {"k": "v"}},
        ],
        batch=2,
    )
    assert ack.seqs == [3, 1, 3, 4]
    assert ack.duplicates == 2 and ack.duplicate_indexes == [1, 2]
    msgs = read_all(client, topic)
    assert [(m.seq, m.payload, m.msg_id) for m in msgs] == [
        (1, b"order 42", "o-42"),
        (2, b"order 43", "o-43"),
        (3, b"a", "o-44"),
        (4, b"b", None),
    ]
    assert msgs[3].headers == {"k": "v"}
    # The same msg_id in another topic is another message.
    assert client.publish(f"dedupe2.{uniq}", b"x", msg_id="o-42").duplicates == 0


def test_an_identity_comes_back_with_its_client_id(momd: Momd) -> None:
    with momd.connect(name="first") as c:
        cid = c.client_id
    with momd.connect(name="observer") as o:
        # The id is given back once the server has seen the old connection go (§4.1).
        deadline = time.monotonic() + 10
        while any(x["client_id"] == cid for x in o.stats()["clients"]):
            assert time.monotonic() < deadline, "the closed connection stays listed"
            time.sleep(0.02)
    with momd.connect(name="again", client_id=cid) as c:
        assert c.client_id == cid


def test_the_dedupe_window_lasts_at_least_its_length_and_about_a_second_more(momd_factory) -> None:  # type: ignore[no-untyped-def]
    m = momd_factory("--dedupe-window", "1s")
    with m.connect() as c:
        t0 = time.monotonic()  # before the store: the window is counted from it
        first = c.publish("dd.x", b"1", msg_id="same")
        while True:
            ack = c.publish("dd.x", b"again", msg_id="same")
            if not ack.duplicate:
                break
            assert ack.seq == first.seq
            time.sleep(0.05)
        elapsed = time.monotonic() - t0
    assert ack.seq == first.seq + 1
    # At least the window (from when the first was stored), and forgotten by the sweep
    # that runs about once a second (protocol.md §3.4); the upper bound leaves CI room.
    assert 1.0 <= elapsed < 5.0, elapsed


def test_publish_many_without_ack_still_reports_a_refused_batch(client: momclient.Client, uniq: str) -> None:
    assert client.welcome is not None
    over = b"x" * (client.welcome.max_payload + 1)
    try:
        client.publish_many(f"noack2.{uniq}", [b"fine", over], batch=1, no_ack=True)
        raise AssertionError("the second batch is too large")
    except momclient.TooLarge as e:
        assert e.code == "too_large"
    assert client.topic_info(f"noack2.{uniq}").messages == 1


def fnv1a32(key: str) -> int:
    """The partition hash of §3.10."""
    h = 0x811C9DC5
    for b in key.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def test_keys_choose_partitions_and_come_back_with_their_messages(client: momclient.Client, uniq: str) -> None:
    topic = f"clicks.{uniq}".replace(".", "-")
    info = client.topic_create(topic, partitions=5)
    assert info.partitions == 5
    assert client.topic_create(topic, partitions=5).partitions == 5  # again: the same answer
    items = [{"payload": f"{i}", "key": f"user-{i % 7}"} for i in range(70)]
    ack = client.publish_many(topic, items, batch=16)
    assert ack.partitions == [fnv1a32(f"user-{i % 7}") % 5 for i in range(70)]
    one = client.publish(topic, b"solo", key="user-3")
    assert one.partitions == [fnv1a32("user-3") % 5]
    msgs = read_all(client, topic)  # the topic's own name watches every partition
    assert len(msgs) == 71
    by_key: dict = {}
    for m in msgs:
        assert m.topic == f"{topic}.{fnv1a32(m.msg_key) % 5}"
        by_key.setdefault(m.msg_key, []).append(m.payload)
    for k, payloads in by_key.items():
        mine = [p for p in payloads if p != b"solo"]
        assert [int(p) for p in mine] == sorted(int(p) for p in mine), k
    assert client.topic_info(topic).messages == 71
    try:
        client.topic_create(topic, partitions=4)
        raise AssertionError("a create with another count is refused")
    except momclient.Conflict:
        pass
