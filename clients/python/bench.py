"""Throughput of momclient against a running momd: batched publish, publish one at a time
awaiting each ack (with its latency), and replay of the stored messages with a watch from all.

    python3 bench.py --server 127.0.0.1:7878 --count 200000 --size 100

Each run uses a fresh topic (bench.<time>), so runs do not see each other's messages.
"""

from __future__ import annotations

import argparse
import statistics
import time

import momclient


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", default="127.0.0.1:7878")
    ap.add_argument("--count", type=int, default=200_000, help="messages for the batched publish and the replay")
    ap.add_argument("--one", type=int, default=2_000, help="messages published one at a time")
    ap.add_argument("--size", type=int, default=100, help="payload bytes")
    ap.add_argument("--batch", type=int, default=1000, help="messages per publish frame")
    ap.add_argument("--window", type=int, default=16, help="batches awaiting their ack")
    a = ap.parse_args()

    payload = b"x" * a.size
    topic = f"bench.{int(time.time() * 1000)}"
    with momclient.connect(a.server, name="bench") as c:
        print(f"momd {c.welcome.server_version if c.welcome else '?'} at {a.server}, fsync {c.stats()['fsync']}, payload {a.size} B")

        t0 = time.perf_counter()
        ack = c.publish_many(topic, (payload for _ in range(a.count)), batch=a.batch, window=a.window)
        dt = time.perf_counter() - t0
        assert ack.seqs[-1] == a.count
        print(f"publish batched ({a.batch}/frame, {a.window} in flight): {a.count} msgs in {dt:.2f} s = {a.count / dt:,.0f} msgs/s")

        lat = []
        t0 = time.perf_counter()
        for _ in range(a.one):
            t = time.perf_counter()
            c.publish(topic + ".one", payload)
            lat.append(time.perf_counter() - t)
        dt = time.perf_counter() - t0
        lat.sort()
        p50 = statistics.median(lat) * 1000
        p99 = lat[int(len(lat) * 0.99) - 1] * 1000
        print(f"publish one at a time: {a.one} msgs in {dt:.2f} s = {a.one / dt:,.0f} msgs/s; ack latency p50 {p50:.2f} ms, p99 {p99:.2f} ms")

        t0 = time.perf_counter()
        w = c.watch(topic, from_="all")
        n = sum(1 for _ in w.replay(timeout=60))
        dt = time.perf_counter() - t0
        assert n == a.count, n
        print(f"replay (watch from all): {n} msgs in {dt:.2f} s = {n / dt:,.0f} msgs/s")


if __name__ == "__main__":
    main()
