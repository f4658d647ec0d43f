"""The README's tour from Python: publish, watch, a durable queue shared by two workers,
request/reply, and the five classic MOM calls."""

from __future__ import annotations

import threading
from typing import List, Set, Tuple

import momclient
from conftest import Momd


def test_publish_then_watch_from_all_sees_it_then_live(momd: Momd, uniq: str) -> None:
    topic = f"tour.{uniq}"
    with momd.connect(name="tour") as c:
        ack = c.publish(topic, b"hello", headers={"k": "v"})
        assert ack.seqs == [1] and ack.topic == topic and ack.unrouted
        w = c.watch(f"{topic}.>", topic, from_="all")
        stored = list(w.replay())
        assert [(m.topic, m.seq, m.payload, m.headers) for m in stored] == [(topic, 1, b"hello", {"k": "v"})]
        assert stored[0].sender.name == "tour" and stored[0].sender.client == c.client_id
        assert w.live
        ack2 = c.publish(topic, b"live one")
        assert ack2.watchers == 1
        m = w.next_message(timeout=10)
        assert m is not None and (m.seq, m.payload) == (2, b"live one")
        w.close()


def test_durable_queue_shared_by_two_workers(momd: Momd, uniq: str) -> None:
    topic = f"jobs.{uniq}"
    n = 200
    with momd.connect(name="producer") as p:
        p.queue_create(uniq, [topic])
        ack = p.publish_many(topic, [f"job {i}".encode() for i in range(n)], batch=50)
        assert ack.seqs == list(range(1, n + 1)) and ack.queues == 1

    done: List[Tuple[str, int]] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        with momd.connect(name=name) as c:
            with c.consume(uniq, credit=4) as cons:
                while True:
                    m = cons.next_message(timeout=1.0)
                    if m is None:
                        return
                    with lock:
                        done.append((name, m.seq))
                    m.ack()

    ts = [threading.Thread(target=worker, args=(f"worker{i}",)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)
    seqs = sorted(s for _, s in done)
    assert seqs == list(range(1, n + 1)), "every job exactly once"
    assert {w for w, _ in done} == {"worker0", "worker1"}, "both workers took a share"
    with momd.connect() as c:
        info = c.queue_info(uniq)
        assert (info.ready, info.unacked, info.acked, info.lag) == (0, 0, n, 0)
        c.queue_delete(uniq)


def test_request_reply_with_two_repliers_in_a_group(momd: Momd, uniq: str) -> None:
    svc = f"svc.{uniq}"
    readies = [threading.Event(), threading.Event()]
    served: Set[str] = set()
    stop = threading.Event()

    def replier(i: int) -> None:
        with momd.connect(name=f"replier{i}") as r:
            def handle(m: momclient.Message) -> Tuple[bytes, int]:
                served.add(f"replier{i}")
                return m.payload.upper() + f" from {i}".encode(), 0

            t = threading.Thread(target=r.serve, args=(svc, handle), kwargs={"ready": readies[i]}, daemon=True)
            t.start()
            stop.wait(60)

    ts = [threading.Thread(target=replier, args=(i,), daemon=True) for i in range(2)]
    for t in ts:
        t.start()
    for e in readies:
        assert e.wait(10)
    with momd.connect(name="asker") as c:
        answers = [c.request(svc, f"ping {i}".encode(), timeout=10) for i in range(10)]
    stop.set()
    for i, a in enumerate(answers):
        assert a.payload.startswith(f"PING {i} from ".encode())
        assert a.headers["status"] == "0"
    assert served == {"replier0", "replier1"}, "a group shares the requests"


def test_the_five_classic_calls(momd: Momd, uniq: str) -> None:
    # create an identity, subscribe it, and what is published while it is away waits for it
    c = momclient.connect(momd.addr, name=uniq)
    c.subscribe(f"news.{uniq}.>")
    c.close()
    with momd.connect() as p:
        p.publish(f"news.{uniq}.sport", b"goal")
        p.publish(f"news.{uniq}.weather", b"rain")
    c = momclient.connect(momd.addr, name=uniq)
    got = [c.recv(timeout=5), c.recv(timeout=5)]
    assert [(m.payload, t) for m, t in got] == [(b"goal", f"news.{uniq}.sport"), (b"rain", f"news.{uniq}.weather")]
    try:
        c.recv(timeout=0.2)
        raise AssertionError("nothing more was published")
    except momclient.Timeout as e:
        assert e.code == "timeout"
    c.destroy()
    assert c.closed
    with momd.connect() as x:
        try:
            x.queue_info(uniq)
            raise AssertionError("destroy removes the identity's queue")
        except momclient.NotFound:
            pass
