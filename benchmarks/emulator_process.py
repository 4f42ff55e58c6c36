"""A loopback emulator (OBS or DWR, HTTP or HTTPS) in a process of its own, driven by JSON lines.

Why a separate process: the emulator is Python (werkzeug threads). Inside the benchmark's
process it would share one GIL with the client or the load generator being measured, and
the emulator's work would be billed to whichever side happened to be running.

Both sides of a comparison talk to the same emulator instance. It is seeded with fresh
FAILED executions in batches (a restore moves an execution to RUNNING, and a second restore
of it would answer 409), and it counts the answers it gave per graph, so the runner can check
that a measurement consists of accepted restores and not of errors.

Commands on stdin, answers on stdout (the first line printed is ``{"url": ...}``):

* ``{"op": "seed", "graph": G, "prefix": P, "count": N}`` - executions ``P0 .. P(N-1)`` in the
  API's failed state (``"state"`` names another);
* ``{"op": "calls"}`` - ``{"calls": {"G PUT 200": n, ...}, "operations": {"list": n, ...},
  "connections": n}`` since the last ``calls`` (the call log is cleared, so memory stays
  bounded); ``operations`` counts every answered call by what it did: ``list_graphs``,
  ``list`` (one page of a graph's executions), ``query``, ``restore``, ``other``;
* ``{"op": "flip", "graph": G, "names": [...]}`` - each named execution fails now (its stop
  time is the moment of the flip); answers ``{"failed_at": [epoch seconds, ...]}`` on the
  emulator's clock, the moment a time to recovery is measured from;
* ``{"op": "restored", "graph": G, "names": [...]}`` - ``{"restored_at": [...]}``: when each
  one's last accepted restore happened (None: never), on the same clock;
* ``{"op": "stop"}``.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

START_TIMEOUT = 30.0
REPLY_TIMEOUT = 120.0  # seeding tens of thousands of executions takes a second or two


class EmulatorProcess:
    """Parent side: start the emulator process, seed it, read its counters, stop it."""

    def __init__(
        self,
        access_key: str,
        secret_key: str,
        *,
        api: str = "obs",
        tls: tuple[str, str] | None = None,
    ) -> None:
        """``api`` is ``obs`` or ``dwr``; ``tls`` is ``(certificate, key)`` to serve HTTPS."""
        from common import BENCH_DIR, PROJECT_ID, PYTHON, ROOT, clean_environ

        env = clean_environ()
        env["BENCH_ACCESS_KEY"], env["BENCH_SECRET_KEY"] = access_key, secret_key
        env["BENCH_API"], env["BENCH_PROJECT_ID"] = api, PROJECT_ID
        if tls is not None:
            env["BENCH_TLS_CERT"], env["BENCH_TLS_KEY"] = (str(part) for part in tls)
        self.api = api
        self.tls = tls is not None
        self.ca_bundle = str(tls[0]) if tls is not None else None
        self._process = subprocess.Popen(
            [PYTHON, str(BENCH_DIR / "emulator_process.py")],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._collect, daemon=True).start()
        self.url: str = self._reply(START_TIMEOUT)["url"]
        self._batches = 0
        self.pid = self._process.pid

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def fresh(self, graph: str, count: int, state: str | None = None) -> list[str]:
        """Seed ``count`` new executions of ``graph`` (default: failed); return their names."""
        self._batches += 1
        prefix = f"b{self._batches}-"
        command = {"op": "seed", "graph": graph, "prefix": prefix, "count": count}
        if state is not None:
            command["state"] = state
        self._command(command)
        return [f"{prefix}{index}" for index in range(count)]

    def calls(self) -> dict[str, Any]:
        """Answers given per ``"graph METHOD status"`` and per operation since the last call,
        and connections opened."""
        return self._command({"op": "calls"})

    def flip(self, graph: str, names: list[str]) -> list[float]:
        """Make these executions fail now; the emulator's clock at each flip."""
        return self._command({"op": "flip", "graph": graph, "names": names})["failed_at"]

    def restored_at(self, graph: str, names: list[str]) -> list[float | None]:
        """When each execution's last accepted restore happened, on the emulator's clock."""
        return self._command({"op": "restored", "graph": graph, "names": names})["restored_at"]

    def stop(self) -> None:
        if self._process.poll() is None:
            try:
                self._send({"op": "stop"})
                self._process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait(timeout=10)

    def _command(self, command: dict[str, Any]) -> dict[str, Any]:
        self._send(command)
        return self._reply(REPLY_TIMEOUT)

    def _send(self, command: dict[str, Any]) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(command) + "\n")
        self._process.stdin.flush()

    def _reply(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"the emulator process did not answer within {timeout:g}s") from None
        if not line:
            raise RuntimeError("the emulator process exited")
        return json.loads(line)

    def _collect(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line)
        self._lines.put("")  # end of output: the process is gone


def serve() -> int:
    """Child side: run the emulator on a free loopback port and obey commands until stop."""
    import os

    from handler.devtools.emulator import DwrEmulator, Emulator

    keys = {os.environ["BENCH_ACCESS_KEY"]: os.environ["BENCH_SECRET_KEY"]}
    if os.environ.get("BENCH_API") == "dwr":
        emulator = DwrEmulator(credentials=keys, project_id=os.environ["BENCH_PROJECT_ID"])
    else:
        emulator = Emulator(credentials=keys)
    context = None
    if os.environ.get("BENCH_TLS_CERT"):
        from tls import server_context

        context = server_context(os.environ["BENCH_TLS_CERT"], os.environ["BENCH_TLS_KEY"])
    with emulator.start(ssl_context=context):
        _answer({"url": emulator.url})
        connections_seen = 0
        for line in sys.stdin:
            command = json.loads(line)
            if command["op"] == "stop":
                break
            if command["op"] == "seed":
                prefix, graph = command["prefix"], command["graph"]
                state = command.get("state", emulator.FAILED)
                for index in range(command["count"]):
                    emulator.seed(graph, f"{prefix}{index}", state)
                _answer({"ok": True})
            elif command["op"] == "calls":
                calls = emulator.calls
                emulator.clear_calls()
                opened = emulator.connections_opened
                counts = Counter(f"{c.graph} {c.method} {c.status}" for c in calls)
                operations = Counter(operation(c) for c in calls)
                _answer({
                    "calls": dict(counts),
                    "operations": dict(operations),
                    "connections": opened - connections_seen,
                })  # fmt: skip
                connections_seen = opened
            elif command["op"] == "flip":
                failed_at = []
                for name in command["names"]:
                    # The emulator's clock is time.time: the stop time the list and the query
                    # show is exactly the moment recorded here.
                    now = time.time()
                    emulator.seed(command["graph"], name, emulator.FAILED, stopped_at=now)
                    failed_at.append(now)
                _answer({"failed_at": failed_at})
            elif command["op"] == "restored":
                graph = command["graph"]
                _answer({"restored_at": [emulator.restored_at(graph, n) for n in command["names"]]})
    return 0


def operation(call: Any) -> str:
    """What an answered call did, from its record alone (the same for both APIs): a call
    naming an execution restores (PUT on OBS, POST on DWR) or queries it (GET); one naming
    only a graph lists a page of its executions; one naming neither lists graphs."""
    if call.execution is not None:
        return "query" if call.method == "GET" else "restore"
    if call.graph is not None:
        return "list"
    return "list_graphs" if call.method == "GET" else "other"


def _answer(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(serve())
