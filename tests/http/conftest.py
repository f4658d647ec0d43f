"""Fixtures of the HTTP API suite: the real momd (``MOMD_BIN``, else
``<repo>/target/debug/momd``) started with ``--http`` on free 127.0.0.1 ports in a temp
dir, and stopped by its own PID."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]


def binary(env: str, name: str) -> str:
    path = os.environ.get(env) or str(REPO / "target" / "debug" / name)
    if not os.path.isfile(path):
        pytest.exit(f"{path} is missing: run `cargo build -p momd -p momctl` first", 2)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Momd:
    """A running momd; ``url`` is its HTTP API, ``addr`` its TCP listener."""

    def __init__(self, data: Path, extra: list[str]):
        self.data = data
        self.port = free_port()
        self.http_port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.log = open(data.parent / f"momd-{self.port}.log", "wb")
        self.proc = subprocess.Popen(
            [
                binary("MOMD_BIN", "momd"),
                "--listen", self.addr,
                "--http", f"127.0.0.1:{self.http_port}",
                "--data", str(data),
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            env={**os.environ, "NO_COLOR": "1", "RUST_LOG": "info"},
        )
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"momd exited: {self.stderr()}")
            try:
                # Any answer, 401 included, means the API is up.
                httpx.get(f"{self.url}/v1/openapi.json", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"momd did not start: {self.stderr()}")
                time.sleep(0.05)

    def stderr(self) -> str:
        self.log.flush()
        return (self.data.parent / f"momd-{self.port}.log").read_text(errors="replace")

    def momctl(self, *args: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(
            [binary("MOMCTL_BIN", "momctl"), "-s", self.addr, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "NO_COLOR": "1", "MOM_CONFIG_DIR": str(self.data.parent / "cfg")},
            **kw,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def add_user(data: Path, name: str, password: str, *flags: str) -> None:
    """``momd user add`` on a stopped momd's data dir."""
    subprocess.run(
        [binary("MOMD_BIN", "momd"), "user", "add", name, "--password-stdin",
         "--data", str(data), *flags],
        input=f"{password}\n".encode(),
        check=True,
        capture_output=True,
    )


@pytest.fixture
def momd(tmp_path):
    """A momd without users: local clients are the admin ``anonymous``."""
    m = Momd(tmp_path / "data", [])
    yield m
    m.stop()


ROOT = ("root", "root-pw-5q1")
ALICE = ("alice", "alice-pw-7w3")


@pytest.fixture
def secured(tmp_path):
    """A momd with users root (admin) and alice (orders.>), a 4 KiB payload limit and two
    connections per user."""
    data = tmp_path / "data"
    add_user(data, *ROOT, "--admin")
    add_user(data, *ALICE, "--publish", "orders.>", "--subscribe", "orders.>")
    m = Momd(data, ["--max-payload", "4096", "--max-connections-per-user", "2"])
    yield m
    m.stop()
