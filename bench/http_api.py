#!/usr/bin/env python3
"""HTTP API throughput: publishes over keep-alive connections (one client, then many), NDJSON
batches, and SSE delivery.

    python3 bench/http_api.py [BIN_DIR]      # BIN_DIR holds momd; default target/release

Needs httpx (pip install httpx). Env: MOM_BENCH_FSYNC (default always), MOM_BENCH_N
(publishes per client, default 5000), MOM_BENCH_CLIENTS (default 16). momd runs on free
127.0.0.1 ports in a temp dir and is stopped by its own PID. Figures on a shared 2-core
machine are noisy: the client and momd share the cores.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent.parent
BIN = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "target" / "release"
FSYNC = os.environ.get("MOM_BENCH_FSYNC", "always")
N = int(os.environ.get("MOM_BENCH_N", "5000"))
CLIENTS = int(os.environ.get("MOM_BENCH_CLIENTS", "16"))
PAYLOAD = b"x" * 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def report(what: str, n: int, secs: float) -> None:
    print(f"{what:<48} {n:>8} in {secs:6.2f} s  {n / secs:>10,.0f} msg/s", flush=True)


def main() -> None:
    tmp = tempfile.TemporaryDirectory(prefix="mom-http-bench-")
    port, http_port = free_port(), free_port()
    url = f"http://127.0.0.1:{http_port}"
    momd = subprocess.Popen(
        [str(BIN / "momd"), "--listen", f"127.0.0.1:{port}", "--http", f"127.0.0.1:{http_port}",
         "--data", f"{tmp.name}/data", "--fsync", FSYNC],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(f"{url}/v1/openapi.json", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise SystemExit("momd did not start")
                time.sleep(0.05)
        print(f"momd --fsync {FSYNC}; {len(PAYLOAD)}-byte payloads", flush=True)

        # (a) One client, one keep-alive connection, one publish at a time.
        with httpx.Client(base_url=url) as c:
            t0 = time.perf_counter()
            for _ in range(N):
                c.post("/v1/topics/bench.one/messages", content=PAYLOAD).raise_for_status()
            report("publish, 1 client, keep-alive", N, time.perf_counter() - t0)

        # (b) Many clients at once, each on its own keep-alive connection.
        def publisher(i: int) -> None:
            with httpx.Client(base_url=url) as c:
                for _ in range(N // CLIENTS):
                    c.post(f"/v1/topics/bench.par.{i}/messages", content=PAYLOAD).raise_for_status()
        threads = [threading.Thread(target=publisher, args=(i,)) for i in range(CLIENTS)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        report(f"publish, {CLIENTS} clients, keep-alive", N // CLIENTS * CLIENTS,
               time.perf_counter() - t0)

        # (c) NDJSON batches of 1000.
        line = json.dumps({"payload": PAYLOAD.decode()}) + "\n"
        body = (line * 1000).encode()
        batches = max(N * 10 // 1000, 1)
        with httpx.Client(base_url=url) as c:
            t0 = time.perf_counter()
            for _ in range(batches):
                c.post("/v1/topics/bench.batch/batch", content=body).raise_for_status()
            report("publish, NDJSON batches of 1000", batches * 1000, time.perf_counter() - t0)

        # (d) SSE: a stream of bench.sse while batches are published to it.
        total = batches * 1000
        got = skipped = 0
        ready = threading.Event()
        done = threading.Event()

        def reader() -> None:
            nonlocal got, skipped
            event = None
            with httpx.Client(timeout=60) as s, s.stream(
                    "GET", f"{url}/v1/stream", params={"pattern": "bench.sse"}) as r:
                for line in r.iter_lines():
                    if line.startswith(": watch"):
                        ready.set()
                    elif line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        if event == "slow_consumer":
                            skipped += json.loads(line[6:])["skipped"]
                        elif event is None:
                            got += 1
                        event = None
                        if got + skipped >= total:
                            break
            done.set()
        t = threading.Thread(target=reader)
        t.start()
        ready.wait(10)
        with httpx.Client(base_url=url) as c:
            t0 = time.perf_counter()
            for _ in range(batches):
                c.post("/v1/topics/bench.sse/batch", content=body).raise_for_status()
            published = time.perf_counter() - t0
        done.wait(120)
        secs = time.perf_counter() - t0
        report("SSE delivery (publish to last event)", got, secs)
        if skipped:
            print(f"  ({skipped} skipped: the reader was a slow consumer)")
        print(f"  (publishing them took {published:.2f} s)")
        t.join(5)
    finally:
        os.kill(momd.pid, signal.SIGTERM)
        momd.wait(30)
        tmp.cleanup()


if __name__ == "__main__":
    main()
