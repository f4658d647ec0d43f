"""TLS: a CA file, the insecure option, and clear errors for the wrong side (§1.1)."""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

import momclient

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make certificates")


def make_certs(d: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("req", "-x509", *ec, "-days", "2", "-subj", "/CN=mom-test-ca", "-keyout", "ca.key", "-out", "ca.pem")
    run("req", *ec, "-subj", "/CN=broker", "-keyout", "key.pem", "-out", "broker.csr")
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-days", "2",
        "-out", "cert.pem", "-extfile", "san.ext")


def test_tls_with_a_ca_file_and_insecure_and_the_wrong_side(momd_factory: Any, tmp_path: Path) -> None:
    make_certs(tmp_path)
    m = momd_factory("--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem"))
    with m.connect(tls_ca=str(tmp_path / "ca.pem"), name="tls") as c:
        assert c.publish("tls.t", b"secret").seq == 1
        [msg] = list(c.watch("tls.t", from_="all").replay())
        assert msg.payload == b"secret"
    with m.connect(tls_insecure=True) as c:
        assert c.topic_info("tls.t").messages == 1
    # Plaintext to a TLS port: said so, not "frame too large".
    with pytest.raises(momclient.MomError) as info:
        m.connect()
    assert "speaks TLS" in str(info.value)
    # A certificate no given CA signed: refused.
    with pytest.raises(momclient.ConnectionLost) as info2:
        m.connect(tls=True)
    assert "CERTIFICATE_VERIFY_FAILED" in str(info2.value)
    # TLS to a plaintext port.
    plain = momd_factory()
    with pytest.raises(momclient.ConnectionLost) as info3:
        plain.connect(tls_ca=str(tmp_path / "ca.pem"))
    assert "TLS" in str(info3.value)


def test_one_tls_connection_shared_by_threads_that_publish_and_a_watch(momd_factory: Any, tmp_path: Path) -> None:
    make_certs(tmp_path)
    m = momd_factory("--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem"))
    with m.connect(tls_ca=str(tmp_path / "ca.pem")) as c:
        w = c.watch("tt.>")

        def publish(i: int) -> None:
            for k in range(20):
                c.publish_many(f"tt.{i}", [f"{i}-{k}-{j}".encode() for j in range(100)], batch=10, window=4)

        ts = [threading.Thread(target=publish, args=(i,)) for i in range(4)]
        for t in ts:
            t.start()
        got = [w.next_message(timeout=30) for _ in range(8000)]
        for t in ts:
            t.join()
        assert all(g is not None for g in got)
        for i in range(4):
            seqs = [g.seq for g in got if g is not None and g.topic == f"tt.{i}"]
            assert seqs == list(range(1, 2001))
