"""The function served by a real functions-framework process, for tests that need one."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def function_server(env: Mapping[str, str], *, workers: int = 1) -> Iterator[str]:
    """Run exactly the documented command from the repository root; yield its URL."""
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "functions-framework"),
        "--source",
        "handler/main.py",
        "--target",
        "restore",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("FUNCTION_")
    }
    environment.update(env, WORKERS=str(workers))
    server = subprocess.Popen(
        command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        give_up = time.monotonic() + START_TIMEOUT
        while True:
            try:
                requests.get(url, timeout=1)
                break
            except requests.ConnectionError:
                if server.poll() is not None:
                    raise RuntimeError(server.stderr.read().decode()) from None
                if time.monotonic() > give_up:
                    raise RuntimeError("the function did not start in time") from None
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
