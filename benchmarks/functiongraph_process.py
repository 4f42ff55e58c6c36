"""The FunctionGraph event function in a process of its own, invoked by TIMER events.

What a deployed ``restore-event`` instance does between timer calls: one interpreter imports
``handler.main`` once and the platform calls ``handler(event, context)`` with a TIMER event
every interval, the same warm instance each time. Only the public entry point is used, so
this survives any change inside the function. Two modes:

* ``timer --interval T --ticks K`` - a fixed-rate timer, as FunctionGraph's ``Rate``
  schedule: one sweep at once (tick 0: the cold call, which also warms the instance), then
  one at ``t0 + k*T`` for ``k = 1..K`` (a sweep that runs past its slot starts the next one
  late, never two at a time). It prints ``{"ready": t0}`` after tick 0 and one JSON line per
  tick;
* ``commands`` - a sweep each time ``sweep`` arrives on stdin, ``stop`` ends it: the parent
  counts each sweep's API calls at the emulator between two sweeps.

Every sweep prints ``{"tick", "began", "ended", "status", "sweep": {...}}`` after
:data:`MARKER` (the function's own JSON log lines share stdout, as on FunctionGraph, and
are left to the parent to skip or keep): ``began`` and
``ended`` are epoch seconds (``time.time``, the clock the emulator's records use),
``sweep`` is the summary the function answered. The function's settings come from this
process's environment, as on FunctionGraph; the context gives a request id and the remaining
time of the template's 60 s timeout, so the sweep bounds itself as it would there.
"""

from __future__ import annotations

import argparse
import json
import queue
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

TIMEOUT_SECONDS = 60.0  # template.yaml: restore-event's timeout
TRIGGER_NAME = "obs_workflow_restore_sweep"  # template.yaml: the timer trigger's name
MARKER = "BENCH-SWEEP "


class TimerContext:
    """The parts of FunctionGraph's context a timer call reads: request id, remaining time."""

    def __init__(self, request_id: str) -> None:
        self._request_id = request_id
        self._began = time.monotonic()

    def getRequestID(self) -> str:  # FunctionGraph's spelling
        return self._request_id

    def getRemainingTimeInMilliSeconds(self) -> float:
        return max(0.0, TIMEOUT_SECONDS - (time.monotonic() - self._began)) * 1000.0


class FunctionProcess:
    """Parent side: start the function's process in one mode, read its sweep lines, stop it.

    The function's log lines (every other line of its stdout) go to ``log_path``, so a
    failed run can be read afterwards; the marked lines are handed to :meth:`next`.
    """

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        from common import BENCH_DIR, PYTHON, ROOT

        self._log: IO[str] = log_path.open("a", encoding="utf-8")
        self.log_path = log_path
        self._process = subprocess.Popen(
            [PYTHON, str(BENCH_DIR / "functiongraph_process.py"), *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    def __enter__(self) -> FunctionProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def next(self, timeout: float) -> dict[str, Any]:
        """The next sweep line (or the ready line), waiting at most ``timeout`` seconds."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(
                f"the function process said nothing within {timeout:g}s; see {self.log_path}"
            ) from None
        if line is None:
            raise RuntimeError(f"the function process exited; see {self.log_path}")
        return line

    def sweep(self, timeout: float) -> dict[str, Any]:
        """``commands`` mode: one timer call now, and its line."""
        assert self._process.stdin is not None
        self._process.stdin.write("sweep\n")
        self._process.stdin.flush()
        return self.next(timeout)

    def wait(self, timeout: float) -> int:
        return self._process.wait(timeout=timeout)

    def stop(self) -> None:
        if self._process.poll() is None:
            try:
                assert self._process.stdin is not None
                self._process.stdin.write("stop\n")
                self._process.stdin.flush()
                self._process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait(timeout=10)
        self._reader.join(timeout=10)
        self._log.close()

    def _collect(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            if line.startswith(MARKER):
                self._lines.put(json.loads(line[len(MARKER) :]))
            else:
                self._log.write(line)
        self._lines.put(None)  # end of output: the process is gone


def timer_event() -> dict[str, Any]:
    """What the template's TIMER trigger delivers (huawei-platform.md), empty userEvent."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "version": "v1.0",
        "time": now,
        "trigger_type": "TIMER",
        "trigger_name": TRIGGER_NAME,
        "user_event": "",
    }


def sweep_once(handler: Any, tick: int) -> dict[str, Any]:
    """One timer call; the line the parent reads."""
    began = time.time()
    answer = handler(timer_event(), TimerContext(f"bench-timer-{tick}"))
    ended = time.time()
    return {
        "tick": tick,
        "began": began,
        "ended": ended,
        "status": answer.get("statusCode"),
        "sweep": answer.get("sweep") or {"error": answer.get("error")},
    }


def _print(document: dict[str, Any]) -> None:
    sys.stdout.write(MARKER + json.dumps(document) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    timer = modes.add_parser("timer")
    timer.add_argument("--interval", type=float, required=True)
    timer.add_argument("--ticks", type=int, required=True)
    modes.add_parser("commands")
    args = parser.parse_args(argv)

    from handler.main import handler

    if args.mode == "commands":
        _print({"ready": time.time()})
        for tick, line in enumerate(sys.stdin, start=1):
            if line.strip() != "sweep":
                break
            _print(sweep_once(handler, tick))
        return 0
    origin = time.monotonic()  # Rate schedule: slots at fixed times from the first call
    first = sweep_once(handler, 0)
    _print({"ready": first["began"], **first})
    for tick in range(1, args.ticks + 1):
        delay = origin + tick * args.interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        _print(sweep_once(handler, tick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
