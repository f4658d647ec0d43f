"""Watches as iterators: from new, all, seq, time and last; resume with after; notices."""

from __future__ import annotations

import momclient


def fill(c: momclient.Client, topic: str, n: int) -> None:
    c.publish_many(topic, [f"{topic}:{i}".encode() for i in range(1, n + 1)])


def test_watch_from_all_replays_every_topic_then_goes_live(client: momclient.Client, uniq: str) -> None:
    fill(client, f"w.{uniq}.a", 5)
    fill(client, f"w.{uniq}.b", 3)
    w = client.watch(f"w.{uniq}.>", from_="all")
    got = list(w.replay())
    assert sorted((m.topic, m.seq) for m in got) == sorted(
        [(f"w.{uniq}.a", s) for s in range(1, 6)] + [(f"w.{uniq}.b", s) for s in range(1, 4)]
    )
    for t in (f"w.{uniq}.a", f"w.{uniq}.b"):
        seqs = [m.seq for m in got if m.topic == t]
        assert seqs == sorted(seqs), "per topic in seq order"
    assert w.live and [n.kind for n in w.notices] == ["live"]
    assert w.notices[0].skipped == 0 and w.notices[0].message, "the live notice says so in text"
    client.publish(f"w.{uniq}.c", b"new topic")
    m = w.next_message(timeout=10)
    assert m is not None and (m.topic, m.seq) == (f"w.{uniq}.c", 1)


def test_watch_from_seq_and_last_and_time(client: momclient.Client, uniq: str) -> None:
    topic = f"ws.{uniq}"
    fill(client, topic, 10)
    assert [m.seq for m in client.watch(topic, from_="seq", at=7).replay()] == [7, 8, 9, 10]
    assert [m.seq for m in client.watch(topic, from_=9).replay()] == [9, 10]
    assert [m.seq for m in client.watch(topic, from_="last", at=3).replay()] == [8, 9, 10]
    all_msgs = list(client.watch(topic, from_="all").replay())
    t5 = all_msgs[4].time
    by_time = [m.seq for m in client.watch(topic, from_="time", at=t5).replay()]
    assert by_time[0] <= 5 and by_time[-1] == 10 and by_time == list(range(by_time[0], 11))


def test_watch_from_new_gets_only_what_comes_next(client: momclient.Client, uniq: str) -> None:
    topic = f"wn.{uniq}"
    fill(client, topic, 3)
    w = client.watch(topic)
    assert w.next_message(timeout=0.3) is None
    client.publish(topic, b"four")
    m = w.next_message(timeout=10)
    assert m is not None and (m.seq, m.payload) == (4, b"four")
    assert not w.live, "a watch from new gets no live notice"


def test_resume_with_after_misses_and_repeats_nothing(momd, uniq: str) -> None:  # type: ignore[no-untyped-def]
    topic = f"wr.{uniq}"
    with momd.connect() as c:
        fill(c, topic, 4)
        seen = [m.seq for m in c.watch(topic, from_="all").replay()][:2]
    with momd.connect() as c:
        fill(c, topic, 2)  # seqs 5, 6 while away
        got = [m.seq for m in c.watch(topic, after={topic: seen[-1]}).replay()]
    assert got == [3, 4, 5, 6]


def test_iterating_a_watch_across_threads(client: momclient.Client, uniq: str) -> None:
    topic = f"wi.{uniq}"
    w = client.watch(topic)
    fill(client, topic, 50)
    seqs = []
    for m in w:
        seqs.append(m.seq)
        if len(seqs) == 50:
            break
    assert seqs == list(range(1, 51))
    w.close()
    try:
        next(w)
        raise AssertionError("a closed watch ends")
    except StopIteration:
        pass
