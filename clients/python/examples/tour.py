"""The README's tour with momclient alone: publish, watch, a durable queue shared by two
workers, request/reply.  python3 tour.py [HOST:PORT]"""

import sys
import threading

import momclient

addr = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:7878"

with momclient.connect(addr, name="tour") as c:
    # Publish: the ack comes once the message is on disk. A repeated msg_id is not stored twice.
    ack = c.publish("orders.eu", b'{"id": 42}', headers={"trace": "abc"}, msg_id="order-42")
    print("stored:", ack.topic, ack.seq)
    again = c.publish("orders.eu", b'{"id": 42}', msg_id="order-42")
    print("again: seq", again.seq, "duplicate", again.duplicate)

    # Watch: the stored messages first, then live ones.
    w = c.watch("orders.>", from_="all")
    for m in w.replay():
        print("replayed:", m.topic, m.seq, m.payload, m.headers)
    c.publish("orders.us", b'{"id": 43}')
    m = next(w)
    print("live:", m.topic, m.seq, m.payload, "from", m.sender.name)

    # A durable queue: what is published waits in it until a worker acks it.
    c.queue_create("jobs", ["jobs.>"], exist_ok=True)
    c.publish_many("jobs.build", [f"job {i}".encode() for i in range(6)])

done = {}


def worker(name: str) -> None:
    with momclient.connect(addr, name=name) as wc, wc.consume("jobs", credit=1) as jobs:
        while (job := jobs.next_message(timeout=0.5)) is not None:
            done.setdefault(name, []).append(job.payload.decode())
            job.ack()  # done: never delivered again


workers = [threading.Thread(target=worker, args=(f"worker{i}",)) for i in (1, 2)]
for t in workers:
    t.start()
for t in workers:
    t.join()
for name, jobs in sorted(done.items()):
    print(name, "did", jobs)

# Request/reply: a replier serves svc.upper; a request fails fast if nobody serves.
ready = threading.Event()
replier = momclient.connect(addr, name="upper")
threading.Thread(target=replier.serve, args=("svc.upper", lambda m: m.payload.upper()),
                 kwargs={"ready": ready}, daemon=True).start()
ready.wait()
with momclient.connect(addr, name="asker") as c:
    print("reply:", c.request("svc.upper", b"hello", timeout=5).payload)
    try:
        c.request("svc.nobody", b"hello")
    except momclient.NoResponders as e:
        print("error:", e.code, "-", e.message)
    c.queue_delete("jobs")
replier.close()
