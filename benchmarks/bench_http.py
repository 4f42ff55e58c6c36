"""HTTP throughput and latency of the served function, and the peak memory of both servers.

Two functions-framework servers run side by side with the same gunicorn settings (``WORKERS``
and ``THREADS`` from :mod:`common`):

* ours - ``--source handler/main.py --target restore``, exactly as deployed: bearer token,
  dedupe and restore budget on SQLite, one JSON log line per restore (stdout to a file);
* naive - ``--source benchmarks/naive_function.py``: the official SDK client built per
  request, no auth, no dedupe, no budget, no log line;
* floor - ``--source benchmarks/floor_function.py``: the naive function on ``requests``
  (one kept-alive session) instead of the SDK. The design card keeps ``requests`` and
  functions-framework, so no function of ours can beat this one; its ratio to the naive
  function is the bound of ours, measured in the same run.

For each concurrency the servers are loaded in turn, the order alternating between repetitions,
with the same closed-loop generator (:mod:`loadgen`). Every request is a different failure
event naming a different FAILED execution, so nothing is answered ``duplicate`` and the budget
never blocks; an answer counts only if it is a 200 that says the execution was restored, and
the emulator's own count of accepted restores must match. Peak memory (``VmHWM``) of each
server's process tree is read after all the load.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common import (
    AUTH_TOKEN,
    FLOOR_SOURCE,
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
from report import Measure, Row
from servers import FunctionServer, tree_cpu_seconds

GRAPHS = {"ours": "http-ours", "naive": "http-naive", "floor": "http-floor"}
HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {AUTH_TOKEN}"}


@dataclass(frozen=True)
class Settings:
    concurrencies: tuple[int, ...]
    repetitions: int  # timed runs per server and concurrency
    duration: float  # seconds per run
    request_cap: int  # requests per run at most
    warmup_requests: int


def run(
    settings: Settings, emulators: dict[str, EmulatorProcess], work_dir: Path
) -> tuple[list[Row], dict[str, Any]]:
    """``emulators`` maps ``"tls"`` and ``"plain"`` to OBS emulators; six servers run."""
    servers = {}
    for wire, emulator in emulators.items():
        ours_env = function_env(emulator.url, work_dir / f"http-state-{wire}", emulator.ca_bundle)
        servers[(wire, "ours")] = FunctionServer(
            f"ours {wire}", OUR_SOURCE, server_env(ours_env), work_dir / f"http-ours-{wire}.log"
        )
        naive_env = server_env(sdk_env(emulator.url, emulator.ca_bundle))
        servers[(wire, "naive")] = FunctionServer(
            f"naive {wire}", NAIVE_SOURCE, naive_env, work_dir / f"http-naive-{wire}.log"
        )
        servers[(wire, "floor")] = FunctionServer(
            f"floor {wire}", FLOOR_SOURCE, naive_env, work_dir / f"http-floor-{wire}.log"
        )
    with contextlib.ExitStack() as stack:
        for server in servers.values():
            stack.enter_context(server)
        for (wire, side), server in servers.items():  # connections, caches, the SQLite file
            warmup = _bodies(emulators[wire], side, settings.warmup_requests)
            _run(server, side, warmup, 8, 30.0)
        for emulator in emulators.values():
            emulator.calls()  # count from here on
        points = _measure(settings, emulators, servers)
        memory = {
            f"{wire} {side}": s.peak_memory()
            for (wire, side), s in servers.items()
            if side != "floor"
        }
    rows = _rows(settings, points, memory)
    raw = {
        "settings": asdict(settings),
        "gunicorn": {"WORKERS": WORKERS, "THREADS": THREADS},
        "ours_logging": "INFO: one JSON line per restore, stdout to a file in the run directory",
        "runs": points,
        "cores_used": {key: _cores_used(point) for key, point in points.items()},
        "peak_memory_kib": memory,
    }
    return rows, raw


def _measure(
    settings: Settings,
    emulators: dict[str, EmulatorProcess],
    servers: dict[tuple[str, str], FunctionServer],
) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """Every timed run, as ``{"wire side": {concurrency: [run summary, ...]}}``.

    Within a repetition every server is loaded once, in an order that rotates.
    """
    jobs = list(servers)
    points: dict[str, dict[int, list[dict[str, Any]]]] = {f"{w} {s}": {} for w, s in jobs}
    turn = 0
    for concurrency in settings.concurrencies:
        for _ in range(settings.repetitions):
            shift, turn = turn % len(jobs), turn + 1
            for wire, side in jobs[shift:] + jobs[:shift]:
                emulator, server = emulators[wire], servers[(wire, side)]
                bodies = _bodies(emulator, side, settings.request_cap)
                before = _cpu(server, emulator)
                result = _run(server, side, bodies, concurrency, settings.duration)
                after = _cpu(server, emulator)
                cpu = {name: after[name] - before[name] for name in after}
                served = emulator.calls()["calls"].get(f"{GRAPHS[side]} PUT 200", 0)
                summary = result.summary()
                summary.update(
                    emulator_restores=served,
                    cpu_seconds=cpu,
                    latencies_ms=[round(latency, 3) for latency in result.latencies_ms],
                    error_samples=result.error_samples,
                )
                points[f"{wire} {side}"].setdefault(concurrency, []).append(summary)
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
    check = _restored if side == "ours" else _naive_restored  # the floor answers as naive
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


THROUGHPUT_TARGETS = {"tls": 1.5, "plain": 0.9}  # at least, ours ÷ naive
P99_TARGETS = {8: {"plain": 1.2}}  # at most, by concurrency
MEMORY_TARGET = 0.9


def _rows(
    settings: Settings,
    points: dict[str, dict[int, list[dict[str, Any]]]],
    memory: dict[str, dict[str, Any]],
) -> list[Row]:
    rows = []
    for concurrency in settings.concurrencies:
        combined = {key: _combined(point[concurrency]) for key, point in points.items()}
        label = f"HTTP c={concurrency}"
        for name, metric, limits, at_most in (
            ("rps", "throughput", THROUGHPUT_TARGETS, False),
            ("p50_ms", "p50 latency", {}, True),
            ("p99_ms", "p99 latency", P99_TARGETS.get(concurrency, {}), True),
        ):
            measures = {}
            for wire in ("tls", "plain"):
                ours, naive = combined[f"{wire} ours"], combined[f"{wire} naive"]
                valid = ours["valid"] and naive["valid"]
                measures[wire] = Measure(
                    ours[name],
                    naive[name],
                    limits.get(wire),
                    at_most,
                    ratio_override=None if valid else float("nan"),
                )
            unit = "req/s" if name == "rps" else "ms"
            rows.append(Row("http", f"{label}: {metric}", unit, measures["tls"], measures["plain"]))
        floor = {
            wire: Measure(
                combined[f"{wire} floor"]["rps"],
                combined[f"{wire} naive"]["rps"],
                ratio_override=None if combined[f"{wire} floor"]["valid"] else float("nan"),
            )
            for wire in ("tls", "plain")
        }
        rows.append(
            Row(
                "http",
                f"{label}: throughput of the floor (a bare `requests` function)",
                "req/s",
                floor["tls"],
                floor["plain"],
            )
        )
    cpu = {key: _cpu_per_restore(point) for key, point in points.items()}
    for side, metric in (
        ("ours", "HTTP server CPU per restore (all runs)"),
        ("floor", "HTTP server CPU per restore, the floor (all runs)"),
    ):
        tls, plain = (Measure(cpu[f"{w} {side}"], cpu[f"{w} naive"]) for w in ("tls", "plain"))
        rows.append(Row("http", metric, "ms", tls, plain))
    mib = {key: memory[key]["total_kib"] / 1024 for key in memory}
    workers = {key: sum(memory[key]["workers_kib"]) / 1024 for key in memory}
    for metric, values, limit in (
        ("peak RSS, server tree (arbiter + worker VmHWM)", mib, MEMORY_TARGET),
        ("peak RSS, worker only (VmHWM)", workers, None),
    ):
        rows.append(
            Row(
                "memory",
                metric,
                "MiB",
                Measure(values["tls ours"], values["tls naive"], limit),
                Measure(values["plain ours"], values["plain naive"], limit),
            )
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
