"""A function served by functions-framework in its own process tree, exactly as deployed.

functions-framework runs gunicorn in its own process (the arbiter) and forks the workers, so
the server is a tree: peak memory is read per process from ``/proc/<pid>/status`` (``VmHWM``,
the kernel's high-water mark of resident memory) for the arbiter and each worker.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import time
from pathlib import Path
from typing import IO

from common import FUNCTIONS_FRAMEWORK, LOOPBACK, ROOT, free_port

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class FunctionServer:
    """``functions-framework --source SOURCE --target restore`` on a free loopback port."""

    def __init__(self, name: str, source: str, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.source = source
        self.env = env
        self.log_path = log_path
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __enter__(self) -> FunctionServer:
        self.start()
        self.wait_ready()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Spawn the server; stdout and stderr (our JSON log lines) go to ``log_path``."""
        command = [FUNCTIONS_FRAMEWORK, "--source", self.source, "--target", "restore",
                   "--host", LOOPBACK, "--port", str(self.port)]  # fmt: skip
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Return once the server answers any HTTP request (a GET has no side effects)."""
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            self.check_alive()
            connection = http.client.HTTPConnection(LOOPBACK, self.port, timeout=5)
            try:
                connection.request("GET", "/")
                connection.getresponse().read()
                return
            except OSError:
                time.sleep(0.02)
            finally:
                connection.close()
        raise RuntimeError(f"{self.name} did not start within {timeout:g}s:\n{self._log_tail()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)
        if self._log is not None:
            self._log.close()
            self._log = None

    def peak_memory(self) -> dict[str, object]:
        """Peak resident memory (VmHWM, KiB) of the arbiter and of each worker, and the sum.

        The sum double-counts pages a worker still shares with the arbiter after ``fork``;
        it is the same construction for both servers, so the comparison stays fair.
        """
        assert self.process is not None
        root = self.process.pid
        processes = {pid: _status(pid) for pid in [root, *_descendants(root)]}
        peaks = {pid: status.get("VmHWM", 0) for pid, status in processes.items()}
        return {
            "arbiter_kib": peaks.get(root, 0),
            "workers_kib": [peak for pid, peak in peaks.items() if pid != root],
            "total_kib": sum(peaks.values()),
        }

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the arbiter and its live workers."""
        assert self.process is not None
        return tree_cpu_seconds(self.process.pid)

    def check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited:\n{self._log_tail()}")

    def _log_tail(self, lines: int = 20) -> str:
        """The end of the server's output: the log file is deleted with the work directory."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no output)"


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of ``root`` and every process below it (/proc/<pid>/stat)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in [root, *_descendants(root)]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / ticks


def _descendants(root: int) -> list[int]:
    """Every process below ``root``, found by walking parent ids in /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue  # exited meanwhile
            # The command name is in parentheses and may contain spaces: split after it.
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found.extend(children)
        frontier.extend(children)
    return found


def _status(pid: int) -> dict[str, int]:
    """The ``Vm*`` lines of /proc/<pid>/status, in KiB."""
    values = {}
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return values
    for line in lines:
        name, _, rest = line.partition(":")
        if name.startswith("Vm") and rest.strip().endswith("kB"):
            values[name] = int(rest.split()[0])
    return values
