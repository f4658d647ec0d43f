"""Start the real momd for the tests: on a free 127.0.0.1 port, in a temp data dir, stopped by
its own PID at the end.

The binary is `$MOMD_BIN`, else `<repo>/target/debug/momd` (build it with
`cargo build -p momd`). The repo root is found from this file's place in it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import pytest

import momclient

REPO = Path(__file__).resolve().parents[3]
START_TIMEOUT = 15.0


def momd_bin() -> Path:
    env = os.environ.get("MOMD_BIN")
    path = Path(env) if env else REPO / "target" / "debug" / "momd"
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `cargo build -p momd` first, or set MOMD_BIN")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Momd:
    """One momd process. `stop()` / `kill9()` act on its own PID only."""

    def __init__(self, root: Path, extra: Sequence[str] = (), users: Optional[Dict[str, str]] = None) -> None:
        self.root = root
        self.data = root / "data"
        self.extra = list(extra)
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.port = 0
        self.starts = 0
        for name, password in (users or {}).items():
            self.add_user(name, password, admin=True)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.root / f"momd-{self.starts}.log"

    def add_user(self, name: str, password: str, admin: bool = False, publish: Sequence[str] = (), subscribe: Sequence[str] = ()) -> None:
        """`momd user add` on the (stopped) data dir."""
        args: List[str] = [str(momd_bin()), "user", "add", name, "--password-stdin", "--data", str(self.data)]
        if admin:
            args.append("--admin")
        for p in publish:
            args += ["--publish", p]
        for p in subscribe:
            args += ["--subscribe", p]
        out = subprocess.run(args, input=(password + "\n").encode(), capture_output=True, timeout=60)
        assert out.returncode == 0, out.stderr.decode()

    def start(self) -> "Momd":
        last = ""
        for _ in range(5):
            self.port = free_port()
            self.starts += 1
            with open(self.log, "wb") as log:
                self.proc = subprocess.Popen(
                    [str(momd_bin()), "--listen", self.addr, "--data", str(self.data), *self.extra],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    env={**os.environ, "RUST_LOG": "info", "NO_COLOR": "1"},
                )
            ok, last = self._wait_ready()
            if ok:
                return self
            if "Address already in use" not in last:
                break
        raise RuntimeError(f"momd did not start:\n{last}")

    def _wait_ready(self) -> "tuple[bool, str]":
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                return False, self.log.read_text(errors="replace")
            # The log line tells our momd from another process that took the port.
            if f"listening on {self.addr}" in self.log.read_text(errors="replace"):
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return True, ""
                except OSError:
                    pass
            time.sleep(0.02)
        self.kill9()
        return False, f"no 'listening on {self.addr}' within {START_TIMEOUT} s:\n" + self.log.read_text(errors="replace")

    @property
    def pid(self) -> int:
        assert self.proc is not None, "momd is not running"
        return self.proc.pid

    def kill9(self) -> None:
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
            self.proc = None

    def stop(self) -> Optional[int]:
        """SIGTERM, then wait; returns the exit status."""
        if self.proc is None:
            return None
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise
        finally:
            self.proc = None

    def connect(self, **kw: object) -> momclient.Client:
        return momclient.connect(self.addr, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def momd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Momd]:
    """One momd shared by the tests that need no special setup (they use their own names)."""
    m = Momd(tmp_path_factory.mktemp("momd")).start()
    yield m
    m.stop()


@pytest.fixture
def momd_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator["MomdFactory"]:
    """Start a momd of the test's own, with extra flags and users; stopped at the end."""
    started: List[Momd] = []

    def make(*extra: str, users: Optional[Dict[str, str]] = None, start: bool = True) -> Momd:
        m = Momd(tmp_path_factory.mktemp("momd"), extra, users)
        started.append(m)
        return m.start() if start else m

    yield make
    for m in started:
        m.kill9()


MomdFactory = object  # a callable: make(*extra, users=None, start=True) -> Momd


@pytest.fixture
def client(momd: Momd) -> Iterator[momclient.Client]:
    with momd.connect(name="pytest") as c:
        yield c


_counter = [0]


@pytest.fixture
def uniq(request: pytest.FixtureRequest) -> str:
    """A name unique to the test, usable as a topic token and a queue name."""
    _counter[0] += 1
    return f"{request.node.name.replace('[', '-').replace(']', '')}-{_counter[0]}"
