"""`cluster_status` (docs/protocol.md §4.32, §5.19): a single momd says so; three momd
nodes started as a cluster show their leader, every node and each replica's lag."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Dict, List

import momclient
from momclient import aio
from conftest import Momd, free_port


def test_a_single_node_answers_mode_single(client: momclient.Client) -> None:
    st = client.cluster_status()
    assert st["mode"] == "single", st
    assert st.get("nodes", []) == [] and st.get("groups", []) == [], st


def test_the_async_client_asks_too(momd: Momd) -> None:
    async def main() -> Dict[str, Any]:
        async with await aio.connect(momd.addr, name="async-cluster") as c:
            return await c.cluster_status()

    assert asyncio.run(main())["mode"] == "single"


def test_three_nodes_show_their_leader_every_node_and_the_lag(momd_factory: Any) -> None:
    # Node i's peer listener on 127.0.0.i, as in the Rust cluster tests.
    peers = [f"127.0.0.{i}:{free_port()}" for i in (1, 2, 3)]
    members = ",".join(f"{i}={a}" for i, a in enumerate(peers, start=1))
    nodes: List[Momd] = [
        momd_factory("--cluster-id", "py", "--node-id", str(i), "--peer-listen", peers[i - 1], "--peers", members)
        for i in (1, 2, 3)
    ]
    addrs = {i: m.addr for i, m in enumerate(nodes, start=1)}
    with nodes[1].connect(name="pytest-cluster") as c:
        deadline = time.monotonic() + 30
        while True:
            st = c.cluster_status()
            meta = st["groups"][0] if st.get("groups") else {}
            ready = (
                meta.get("leader") in addrs
                and len(st["nodes"]) == 3
                and all(n.get("addr") for n in st["nodes"])
                and all(r.get("lag") is not None for r in meta.get("replicas", []))
            )
            if ready:
                break
            assert time.monotonic() < deadline, f"no leader with three nodes within 30 s: {st}"
            time.sleep(0.25)
    assert st["mode"] == "cluster" and st["cluster_id"] == "py" and st["node_id"] == 2, st
    assert meta["name"] == "meta" and meta["term"] >= 1, st
    assert {n["id"]: n["addr"] for n in st["nodes"]} == addrs, st
    roles = {n["id"]: n["role"] for n in st["nodes"]}
    assert roles[meta["leader"]] == "leader", st
    assert sorted(r["node"] for r in meta["replicas"]) == [1, 2, 3], st
