"""Real ``redis-server`` processes for the store tests, loaded with ``pytest_plugins``.

Each server listens on 127.0.0.1 on a free port, keeps nothing on disk (``--save ''
--appendonly no``) and is killed at teardown. Every wait is bounded. Without
``redis-server`` the Redis tests are skipped with a reason - except in CI (``CI=true``), where
a missing server is a failure: CI must not pass by testing less.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

START_TIMEOUT = 10.0  # seconds for a server to answer PING
STOP_TIMEOUT = 5.0


def require_redis_server() -> str:
    """The redis-server executable, or skip (fail in CI) when it is not installed."""
    path = shutil.which("redis-server")
    if path is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI=true, so the Redis tests must run", pytrace=False)
        pytest.skip(message)
    return path


def free_port() -> int:
    """A port nothing listens on right now (it may be taken again later; callers retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """One redis-server subprocess; ``url`` points at database 0."""

    def __init__(self, executable: str, workdir: Path, *, password: str | None = None) -> None:
        self.executable = executable
        self.workdir = workdir
        self.password = password
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"redis-{self.port}.log"

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start (or restart, on the same port) and wait until the server answers PING."""
        command = [
            self.executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        if self.password:
            command += ["--requirepass", self.password]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self._wait_ready()
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would; waits (bounded) until the process is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT)
        self.process = None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        auth = f"AUTH {self.password}\r\n".encode() if self.password else b""
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(auth + b"PING\r\n")
                    if b"PONG" in _read_some(sock):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server did not answer within {START_TIMEOUT}s")


def _read_some(sock: socket.socket) -> bytes:
    data = b""
    deadline = time.monotonic() + 0.5
    while b"PONG" not in data and time.monotonic() < deadline:
        chunk = sock.recv(256)
        if not chunk:
            break
        data += chunk
    return data


def _start_with_retries(executable: str, workdir: Path, **options: str | None) -> RedisServer:
    """Start a server; a port taken between probing and binding gets another try."""
    for attempt in range(3):
        try:
            return RedisServer(executable, workdir, **options).start()
        except RuntimeError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One server for the whole session; tests isolate themselves with ``redis_url``."""
    executable = require_redis_server()
    server = _start_with_retries(executable, tmp_path_factory.mktemp("redis"))
    yield server
    server.kill()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, with database 0 flushed before the test."""
    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=2) as sock:
        sock.sendall(b"FLUSHDB\r\n")
        assert sock.recv(64).startswith(b"+OK")
    return redis_server.url


@pytest.fixture
def redis_server_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Dedicated servers a test may kill or configure (e.g. with a password)."""
    executable = require_redis_server()
    servers: list[RedisServer] = []

    def start(*, password: str | None = None) -> RedisServer:
        server = _start_with_retries(executable, tmp_path, password=password)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()
