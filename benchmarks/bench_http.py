"""HTTP throughput and latency of the served function, and the peak memory of both servers.

Two functions-framework servers run side by side with the same gunicorn settings (``WORKERS``
and ``THREADS`` from :mod:`common`):

* ours - ``--source handler/main.py --target restore``, exactly as deployed: bearer token,
  dedupe and restore budget on SQLite, one JSON log line per restore (stdout to a file);
* naive - ``--source benchmarks/naive_function.py``: the official SDK client built per
  request, no auth, no dedupe, no budget, no log line.

For each concurrency the two are loaded in turn, the order alternating between repetitions,
with the same closed-loop generator (:mod:`loadgen`). Every request is a different failure
event naming a different FAILED execution, so nothing is answered ``duplicate`` and the budget
never blocks; an answer counts only if it is a 200 that says the execution was restored, and
the emulator's own count of accepted restores must match. Peak memory (``VmHWM``) of each
server's process tree is read after all the load.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common import (
    AUTH_TOKEN,
    NAIVE_SOURCE,
    OUR_SOURCE,
    THREADS,
    WORKERS,
    function_env,
    median,
    percentile,
    sdk_env,
    server_env,
)
from emulator_process import EmulatorProcess
from loadgen import LoadResult, run_load
from report import Row
from servers import FunctionServer, tree_cpu_seconds

GRAPHS = {"ours": "http-ours", "naive": "http-naive"}
HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {AUTH_TOKEN}"}


@dataclass(frozen=True)
class Settings:
    concurrencies: tuple[int, ...]
    repetitions: int  # timed runs per server and concurrency
    duration: float  # seconds per run
    request_cap: int  # requests per run at most
    warmup_requests: int


def run(
    settings: Settings, emulator: EmulatorProcess, work_dir: Path
) -> tuple[list[Row], dict[str, Any]]:
    servers = {
        "ours": FunctionServer(
            "ours",
            OUR_SOURCE,
            server_env(function_env(emulator.url, work_dir / "http-state")),
            work_dir / "http-ours.log",
        ),
        "naive": FunctionServer(
            "naive", NAIVE_SOURCE, server_env(sdk_env(emulator.url)), work_dir / "http-naive.log"
        ),
    }
    with servers["ours"], servers["naive"]:
        for side, server in servers.items():  # connections, caches, the SQLite file
            _run(server, side, _bodies(emulator, side, settings.warmup_requests), 8, 30.0)
        emulator.calls()  # count from here on
        points = _measure(settings, emulator, servers)
        memory = {side: server.peak_memory() for side, server in servers.items()}
    rows = _rows(settings, points, memory)
    raw = {
        "settings": asdict(settings),
        "gunicorn": {"WORKERS": WORKERS, "THREADS": THREADS},
        "ours_logging": "INFO: one JSON line per restore, stdout to a file in the run directory",
        "runs": points,
        "cores_used": {side: _cores_used(points[side]) for side in points},
        "peak_memory_kib": memory,
    }
    return rows, raw


def _measure(
    settings: Settings, emulator: EmulatorProcess, servers: dict[str, FunctionServer]
) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """Every timed run, as ``{side: {concurrency: [run summary, ...]}}``."""
    points: dict[str, dict[int, list[dict[str, Any]]]] = {side: {} for side in servers}
    for concurrency in settings.concurrencies:
        for repetition in range(settings.repetitions):
            order = ("ours", "naive") if repetition % 2 == 0 else ("naive", "ours")
            for side in order:
                bodies = _bodies(emulator, side, settings.request_cap)
                before = _cpu(servers[side], emulator)
                result = _run(servers[side], side, bodies, concurrency, settings.duration)
                after = _cpu(servers[side], emulator)
                cpu = {name: after[name] - before[name] for name in after}
                served = emulator.calls()["calls"].get(f"{GRAPHS[side]} PUT 200", 0)
                summary = result.summary()
                summary.update(
                    emulator_restores=served,
                    cpu_seconds=cpu,
                    latencies_ms=[round(latency, 3) for latency in result.latencies_ms],
                    error_samples=result.error_samples,
                )
                points[side].setdefault(concurrency, []).append(summary)
    return points


def _cpu(server: FunctionServer, emulator: EmulatorProcess) -> dict[str, float]:
    """CPU seconds so far of the server tree, the emulator and this process (the generator).

    Who used the machine's cores during a run: the generator and the emulator compete with
    the server for them.
    """
    return {
        "server": server.cpu_seconds(),
        "emulator": tree_cpu_seconds(emulator.pid),
        "generator": time.process_time(),
    }


def _bodies(emulator: EmulatorProcess, side: str, count: int) -> list[bytes]:
    """``count`` requests, each naming a freshly seeded FAILED execution of this side's graph."""
    graph = GRAPHS[side]
    names = emulator.fresh(graph, count)
    return [json.dumps({"graphName": graph, "executionName": name}).encode() for name in names]


def _run(
    server: FunctionServer, side: str, bodies: list[bytes], concurrency: int, duration: float
) -> LoadResult:
    check = _restored if side == "ours" else _naive_restored
    return run_load(server.port, bodies, HEADERS, check, concurrency, duration)


def _restored(status: int, body: bytes) -> bool:
    """Ours: a 200 whose only item is ``restored``."""
    if status != 200:
        return False
    results = json.loads(body).get("results") or [{}]
    return len(results) == 1 and results[0].get("outcome") == "restored"


def _naive_restored(status: int, body: bytes) -> bool:
    """The naive function: a 200 carrying the SDK's 200."""
    return status == 200 and json.loads(body).get("status") == 200


def _rows(
    settings: Settings,
    points: dict[str, dict[int, list[dict[str, Any]]]],
    memory: dict[str, dict[str, Any]],
) -> list[Row]:
    rows = []
    for concurrency in settings.concurrencies:
        ours, naive = (_combined(points[side][concurrency]) for side in ("ours", "naive"))
        valid = ours["valid"] and naive["valid"]
        invalid = None if valid else float("nan")
        label = f"HTTP c={concurrency}"
        rows += [
            Row("http", f"{label}: throughput", ours["rps"], naive["rps"], "req/s", 1.0, False,
                ratio_override=invalid),
            Row("http", f"{label}: p50 latency", ours["p50_ms"], naive["p50_ms"], "ms",
                ratio_override=invalid),
            Row("http", f"{label}: p99 latency", ours["p99_ms"], naive["p99_ms"], "ms", 1.0,
                ratio_override=invalid),
        ]  # fmt: skip
    cpu = {side: _cpu_per_restore(points[side]) for side in points}
    rows.append(
        Row("http", "HTTP server CPU per restore (all runs)", cpu["ours"], cpu["naive"], "ms")
    )
    mib = {side: memory[side]["total_kib"] / 1024 for side in memory}
    rows.append(
        Row("memory", "peak RSS, server tree (arbiter + worker VmHWM)", mib["ours"],
            mib["naive"], "MiB", 1.0)
    )  # fmt: skip
    workers = {side: sum(memory[side]["workers_kib"]) / 1024 for side in memory}
    rows.append(
        Row("memory", "peak RSS, worker only (VmHWM)", workers["ours"], workers["naive"], "MiB")
    )
    return rows


def _combined(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """All repetitions of one point together: total successes over total time, pooled latencies.

    Valid only if there were no errors and the emulator accepted exactly as many restores as
    the generator counted successes.
    """
    latencies = [latency for run in runs for latency in run["latencies_ms"]]
    elapsed = sum(run["elapsed_s"] for run in runs)
    ok = sum(run["ok"] for run in runs)
    valid = all(run["errors"] == 0 and run["emulator_restores"] == run["ok"] for run in runs)
    return {
        "rps": ok / elapsed if elapsed else 0.0,
        "p50_ms": median(latencies),
        "p99_ms": percentile(latencies, 99),
        "valid": valid and ok > 0,
    }


def _cpu_per_restore(runs: dict[int, list[dict[str, Any]]]) -> float:
    """Milliseconds of server CPU (arbiter + worker) per successful restore, over every run."""
    every = [run for point in runs.values() for run in point]
    ok = sum(run["ok"] for run in every)
    return sum(run["cpu_seconds"]["server"] for run in every) / ok * 1000 if ok else float("nan")


def _cores_used(runs: dict[int, list[dict[str, Any]]]) -> dict[str, float]:
    """Average cores busy during this side's runs: server, emulator, load generator."""
    every = [run for point in runs.values() for run in point]
    elapsed = sum(run["elapsed_s"] for run in every)
    names = every[0]["cpu_seconds"] if every else {}
    return {name: sum(run["cpu_seconds"][name] for run in every) / elapsed for name in names}
