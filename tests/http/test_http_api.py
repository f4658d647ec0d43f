"""The HTTP API (docs/http.md) against the real momd, with httpx."""

import json
import threading
import time

import httpx
import pytest

from conftest import ALICE, ROOT


def error(r: httpx.Response, status: int, code: str) -> str:
    """Check an error answer: its status, and the shape {"error": {"code", "message"}}."""
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body) == ["error"], body
    assert set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]["message"]


def publish(c: httpx.Client, topic: str, payload: bytes, **headers) -> dict:
    r = c.post(f"/v1/topics/{topic}/messages", content=payload, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def test_publish_then_read_back(momd):
    with httpx.Client(base_url=momd.url) as c:
        ack = publish(c, "orders.eu", b'{"id":42}', **{"Mom-Msg-Id": "o-42", "Mom-Header-Kind": "created"})
        assert ack["seq"] == 1 and ack["duplicate"] is False
        publish(c, "orders.eu", bytes([0, 255, 1]))
        page = c.get("/v1/topics/orders.eu/messages", params={"from": 1, "limit": 1}).json()
        assert [m["seq"] for m in page["messages"]] == [1]
        m = page["messages"][0]
        assert m["payload"] == '{"id":42}'
        assert m["headers"] == {"kind": "created"}
        assert m["msg_id"] == "o-42"
        assert m["sender"]["user"] == "anonymous"
        assert page["next"] == 2
        rest = c.get("/v1/topics/orders.eu/messages", params={"from": page["next"]}).json()
        assert rest["messages"][0]["payload_base64"] == "AP8B"
        assert rest["next"] is None
        info = c.get("/v1/topics/orders.eu").json()
        assert info["messages"] == 2 and info["last_seq"] == 2


def test_ndjson_batch_and_dedupe_are_reported(momd):
    with httpx.Client(base_url=momd.url) as c:
        lines = [
            {"payload": "a", "msg_id": "m-1"},
            {"payload": {"b": 2}, "headers": {"h": "v"}},
            {"payload": "a again", "msg_id": "m-1"},
        ]
        body = "\n".join(json.dumps(x) for x in lines) + "\n"
        r = c.post("/v1/topics/jobs.batch/batch", content=body,
                   headers={"Content-Type": "application/x-ndjson"})
        assert r.status_code == 200, r.text
        ack = r.json()
        assert ack["seqs"] == [1, 2, 1]
        assert ack["duplicates"] == 1 and ack["duplicate_indexes"] == [2]
        again = publish(c, "jobs.batch", b"x", **{"Mom-Msg-Id": "m-1"})
        assert again == {**again, "seq": 1, "duplicate": True}
        stored = c.get("/v1/topics/jobs.batch/messages").json()["messages"]
        assert [m["payload"] for m in stored] == ["a", '{"b":2}']


def test_fetch_ack_nack_redelivery(momd):
    with httpx.Client(base_url=momd.url, timeout=30) as c:
        r = c.put("/v1/queues/work", json={"bindings": ["work.>"]})
        assert r.status_code == 200, r.text
        for p in (b"one", b"two"):
            assert publish(c, "work.a", p)["queues"] == 1
        got = c.post("/v1/queues/work/fetch", params={"max": 10, "wait": "2s"}).json()["messages"]
        assert [(m["payload"], m["delivery"]) for m in got] == [("one", 1), ("two", 1)]
        keys = [{"topic": m["topic"], "seq": m["seq"]} for m in got]
        assert c.post("/v1/queues/work/ack", json={"deliveries": keys[:1]}).json() == {"acked": 1}
        assert c.post("/v1/queues/work/nack", json={"deliveries": keys[1:]}).json() == {"nacked": 1}
        again = c.post("/v1/queues/work/fetch", params={"max": 10, "wait": "2s"}).json()["messages"]
        assert [(m["payload"], m["delivery"]) for m in again] == [("two", 2)]
        c.post("/v1/queues/work/ack", json={"deliveries": keys[1:]}).raise_for_status()
        t0 = time.monotonic()
        empty = c.post("/v1/queues/work/fetch", params={"max": 10, "wait": "500ms"}).json()
        assert empty["messages"] == [] and time.monotonic() - t0 >= 0.4
        info = c.get("/v1/queues/work").json()
        assert (info["acked"], info["redelivered"], info["unacked"]) == (2, 1, 0)
        # A long poll is answered by a publish that comes while it waits.
        result = {}
        waiter = threading.Thread(target=lambda: result.update(
            c.post("/v1/queues/work/fetch", params={"wait": "10s"}).json()))
        waiter.start()
        time.sleep(0.3)
        with httpx.Client(base_url=momd.url) as other:
            publish(other, "work.b", b"late")
        waiter.join(15)
        assert [m["payload"] for m in result["messages"]] == ["late"]


def test_request_reply_with_a_momctl_responder(momd):
    with httpx.Client(base_url=momd.url, timeout=30) as c:
        r = c.post("/v1/request/svc.upper", params={"timeout": "2s"}, content=b"hi")
        error(r, 503, "unavailable")
        replier = momd.momctl("reply", "svc.upper", "--", "tr", "a-z", "A-Z")
        try:
            # An empty topic, to see the replier's watch on it.
            c.put("/v1/topics/svc.upper/limits", json={}).raise_for_status()
            deadline = time.monotonic() + 10
            while c.get("/v1/topics/svc.upper").json()["watchers"] < 1:
                assert time.monotonic() < deadline, "the replier did not start"
                time.sleep(0.05)
            r = c.post("/v1/request/svc.upper", params={"timeout": "5s"}, content=b"hello")
            assert r.status_code == 200, r.text
            assert r.content == b"HELLO"
            assert r.headers["mom-header-status"] == "0"
        finally:
            replier.kill()
            replier.wait()


def sse_events(lines):
    """Server-Sent Events from an iterator of lines: dicts of event, id, data."""
    ev = {}
    for line in lines:
        if line == "":
            if "data" in ev:
                yield ev
            ev = {}
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            ev[field] = value[1:] if value.startswith(" ") else value


def test_sse_resume_with_last_event_id_misses_and_repeats_nothing(momd):
    url = f"{momd.url}/v1/stream"
    params = {"pattern": ["orders.>", "audit.*"]}
    sent = []
    with httpx.Client(base_url=momd.url, timeout=30) as c:
        publish(c, "orders.eu", b"before the stream")
        received = []
        with httpx.Client(timeout=30) as s, s.stream("GET", url, params=params) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            events = sse_events(r.iter_lines())
            for i in range(8):
                topic = ("orders.eu", "audit.log")[i % 2]
                p = f"{topic}/{i}"
                publish(c, topic, p.encode())
                sent.append(p)
            for ev in events:
                received.append(ev)
                if len(received) == 5:
                    break
        # Disconnected after five events; three more were published, and more come now.
        last_id = received[-1]["id"]
        assert "orders.eu:" in last_id and "audit.log:" in last_id, last_id
        for topic, p in [("audit.log", "away-1"), ("orders.us", "away-2"), ("orders.eu", "away-3")]:
            publish(c, topic, p.encode())
            sent.append(p)
        with httpx.Client(timeout=30) as s, s.stream(
                "GET", url, params=params, headers={"Last-Event-ID": last_id}) as r:
            assert r.status_code == 200
            for ev in sse_events(r.iter_lines()):
                if ev.get("event") == "live":
                    publish(c, "orders.us", b"live-1")
                    sent.append("live-1")
                    continue
                received.append(ev)
                if json.loads(ev["data"])["payload"] == "live-1":
                    break
    payloads = [json.loads(e["data"])["payload"] for e in received]
    assert sorted(payloads) == sorted(sent), payloads
    assert len(payloads) == len(set(payloads)), "nothing twice"
    per_topic = {}
    for e in received:
        m = json.loads(e["data"])
        per_topic.setdefault(m["topic"], []).append(m["seq"])
        assert e["id"].split()[0] == f"{m['topic']}:{m['seq']}"
    for topic, seqs in per_topic.items():
        assert seqs == sorted(seqs), (topic, seqs)


def test_auth_and_every_error_code(secured):
    m = secured
    with httpx.Client(base_url=m.url, timeout=30) as c:
        error(c.get("/v1/stats"), 401, "unauthorized")
        error(c.get("/v1/stats", auth=("alice", "wrong")), 401, "unauthorized")
        error(c.get("/v1/stats", headers={"Authorization": "Bearer junk"}), 401, "unauthorized")
        r = c.post("/v1/login", auth=ALICE)
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        alice = {"Authorization": f"Bearer {token}"}
        assert c.get("/v1/stats", headers=alice).status_code == 200
        assert publish(c, "orders.a", b"ok", **alice)["seq"] == 1
        # Basic works too; the message says who sent it.
        msgs = c.get("/v1/topics/orders.a/messages", auth=ALICE).json()["messages"]
        assert msgs[0]["sender"]["user"] == "alice"
        error(c.post("/v1/topics/billing.a/messages", content=b"x", headers=alice), 403, "forbidden")
        r = c.post("/v1/topics/orders.root/messages", content=b"r", auth=ROOT)
        assert r.status_code == 200, r.text
        error(c.delete("/v1/topics/orders.root", headers=alice), 403, "forbidden")
        error(c.post("/v1/topics/orders.big/messages", content=b"x" * 5000, headers=alice),
              413, "too_large")
        error(c.get("/v1/topics/orders.a/messages", params={"limit": "x"}, headers=alice),
              400, "bad_request")
        error(c.get("/v1/topics/orders.none", headers=alice), 404, "not_found")
        c.put("/v1/queues/q1", json={"bindings": ["orders.>"]}, headers=alice).raise_for_status()
        publish(c, "orders.b", b"held", **alice)
        error(c.delete("/v1/queues/q1", headers=alice), 409, "conflict")
        assert c.delete("/v1/queues/q1", params={"force": "true"}, headers=alice).status_code == 200
        # Two connections per user: the shared session and one stream; a second stream is
        # refused with rate_limited.
        with httpx.Client(base_url=m.url, timeout=30) as s, s.stream(
                "GET", "/v1/stream", params={"pattern": "orders.>"}, headers=alice) as r:
            assert r.status_code == 200
            error(c.get("/v1/stream", params={"pattern": "orders.>"}, headers=alice),
                  429, "rate_limited")


def test_a_partitioned_topic_over_http_keys_choose_partitions(momd):
    with httpx.Client(base_url=momd.url) as c:
        r = c.put("/v1/topics/clicks", json={"partitions": 3})
        assert r.status_code == 200, r.text
        assert r.json()["partitions"] == 3
        assert c.put("/v1/topics/clicks", json={"partitions": 3}).status_code == 200
        error(c.put("/v1/topics/clicks", json={"partitions": 2}), 409, "conflict")
        a = publish(c, "clicks", b"one", **{"Mom-Key": "user-1"})
        b = publish(c, "clicks", b"two", **{"Mom-Key": "user-1"})
        assert a["partition"] == b["partition"] and b["seq"] == a["seq"] + 1
        lines = [{"payload": f"n{i}", "key": f"k{i % 4}"} for i in range(8)]
        body = "\n".join(json.dumps(x) for x in lines) + "\n"
        ack = c.post("/v1/topics/clicks/batch", content=body).json()
        assert len(ack["partitions"]) == 8
        assert [ack["partitions"][i] for i in range(4)] == [ack["partitions"][i + 4] for i in range(4)]
        p = a["partition"]
        page = c.get(f"/v1/topics/clicks.{p}/messages").json()
        mine = [m for m in page["messages"] if m.get("key") == "user-1"]
        assert [m["payload"] for m in mine] == ["one", "two"]
        error(c.post("/v1/topics/clicks.7/messages", content=b"x"), 400, "bad_request")
