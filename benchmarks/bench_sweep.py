"""The sweep against the official SDK's list loop: 10,000 executions in 20 graphs, per API.

Measured over TLS and plain HTTP on both emulators' list APIs:

* ours - :meth:`handler.runtime.Runtime.sweep` as a timer runs it (the graphs named, a
  one-day lookback), with ``max_restores=0``: it lists and finds every failure and restores
  none, so the same executions serve every round and the work measured is the finding
  (memory:// state, log lines to /dev/null);
* the SDK loop - what a user writes with the official SDK. OBS (``esdk-obs-python``): per
  graph, ``listWorkflowExecution(graph, nextMarker, limit=1000)`` until not truncated,
  counting the executions whose state is FAILED (the API has no state filter; 1 in 10 is
  failed, the rest succeeded). DWR (``huaweicloudsdkdwr``): per graph,
  ``list_workflow_instance(status="fail", start_time, end_time, limit=200, offset)`` until
  ``is_truncated`` is false (the server filters, so every execution is failed and both sides
  page through all 10,000).

Rounds alternate which side goes first; the median of per-round ratios is reported. Memory: one
extra, untimed run per side under ``tracemalloc`` gives the peak of memory allocated during
the sweep, at 10,000 executions and at 1,000 (the first 2 graphs): "flat" means the peak
does not grow with the number of executions (pages are streamed, never all held).
"""

from __future__ import annotations

import os
import time
import tracemalloc
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from bench_client import ObsSdkSide, dwr_sdk_client
from common import ACCESS_KEY, PROJECT_ID, SECRET_KEY, clean_environ, median
from emulator_process import EmulatorProcess
from report import Measure, Row

PAGE = {"obs": 1000, "dwr": 200}  # the largest page each API serves
FAILED_ONE_IN = {"obs": 10, "dwr": 1}  # DWR filters on the server: list only failures
TIME_TARGET = 0.5
FLAT_TARGET = 1.25  # peak at 10x the executions, at most this many times the smaller peak


@dataclass(frozen=True)
class Settings:
    graphs: int
    executions_per_graph: int
    rounds: int


def run(
    settings: Settings, emulators: dict[str, EmulatorProcess], api: str
) -> tuple[list[Row], dict[str, Any]]:
    """``emulators`` maps ``"tls"`` and ``"plain"`` to emulators of ``api`` (obs or dwr)."""
    graphs = tuple(f"sweep-{api}-{index:02d}" for index in range(settings.graphs))
    failed = settings.executions_per_graph // FAILED_ONE_IN[api]
    for emulator in emulators.values():
        for graph in graphs:
            emulator.fresh(graph, failed)
            if failed < settings.executions_per_graph:
                done = "SUCCESS" if api == "obs" else "success"
                emulator.fresh(graph, settings.executions_per_graph - failed, done)
    # The list window's end is whole seconds: executions started this second are after it.
    time.sleep(1.1)
    total = settings.graphs * settings.executions_per_graph
    loop = _ObsSdkLoop if api == "obs" else _DwrSdkLoop
    sides = {
        wire: {"ours": _OurSweep(emulator, api), "sdk": loop(emulator)}
        for wire, emulator in emulators.items()
    }
    for wire in sides:  # warm-up: connections, imports
        for side in sides[wire].values():
            side.sweep(graphs[:1])
    seconds: dict[str, list[float]] = {f"{w} {s}": [] for w in sides for s in ("ours", "sdk")}
    found: dict[str, int] = {}
    for index in range(settings.rounds):
        for wire in ("tls", "plain") if index % 2 == 0 else ("plain", "tls"):
            for side in ("ours", "sdk") if index % 2 == 0 else ("sdk", "ours"):
                began = time.perf_counter()
                found[f"{wire} {side}"] = sides[wire][side].sweep(graphs)
                seconds[f"{wire} {side}"].append(time.perf_counter() - began)
    memory = {
        f"{side} {count}": _peak_kib(
            sides["tls"][side], graphs[: count // settings.executions_per_graph]
        )
        for side in ("ours", "sdk")
        for count in (total, total // 10)
    }
    for side in sides.values():
        side["ours"].close()
        side["sdk"].close()
    valid = all(count == failed * settings.graphs for count in found.values())
    rows = _rows(api, total, seconds, memory, valid)
    raw = {
        "settings": asdict(settings),
        "failures_found": found,
        "seconds": seconds,
        "peak_traced_kib": memory,
        "api": api,
    }
    return rows, raw


class _OurSweep:
    def __init__(self, emulator: EmulatorProcess, api: str) -> None:
        from handler.runtime import build_runtime
        from handler.settings import load_settings

        env = clean_environ()
        if api == "dwr":
            env.update(WORKFLOW_API="dwr", DWR_ENDPOINT=emulator.url, DWR_PROJECT_ID=PROJECT_ID)
        else:
            env.update(OBS_ENDPOINT=emulator.url)
        env.update(
            OBS_ACCESS_KEY_ID=ACCESS_KEY,
            OBS_SECRET_ACCESS_KEY=SECRET_KEY,
            RESTORE_STATE_URL="memory://",
            LOG_LEVEL="WARNING",
        )
        if emulator.ca_bundle:
            env["OBS_CA_BUNDLE"] = emulator.ca_bundle
        self._log = open(os.devnull, "w")  # noqa: SIM115 - closed in close()
        self._runtime = build_runtime(load_settings(env), self._log)

    def sweep(self, graphs: tuple[str, ...]) -> int:
        from handler.invocation import Invocation
        from handler.sweep import SweepRequest

        request = SweepRequest(graphs=graphs, lookback=86400.0, max_restores=0)
        _, summary = self._runtime.sweep(request, Invocation())
        if summary.errors:
            raise RuntimeError(f"the sweep failed: {summary.errors[:2]}")
        return summary.failures_found

    def close(self) -> None:
        self._runtime.close()
        self._log.close()


class _ObsSdkLoop:
    """The OBS SDK's list loop; its client (a process-wide singleton) is built per sweep."""

    def __init__(self, emulator: EmulatorProcess) -> None:
        self._side = ObsSdkSide(emulator)

    def sweep(self, graphs: tuple[str, ...]) -> int:
        self._side.prepare()  # re-point the singleton at this emulator (see ObsSdkSide)
        client = self._side.client
        failures = 0
        for graph in graphs:
            marker = None
            while True:
                page = client.listWorkflowExecution(graph, nextMarker=marker, limit=PAGE["obs"])
                if page.status != 200:
                    raise RuntimeError(f"the SDK's list failed: {page.status}")
                body = page.body
                failures += sum(
                    1 for e in body.executions or () if e.get("execution_state") == "FAILED"
                )
                if not body.isTruncated or not body.nextMarker:
                    break
                marker = body.nextMarker
        return failures

    def close(self) -> None:
        self._side.close()


class _DwrSdkLoop:
    def __init__(self, emulator: EmulatorProcess) -> None:
        self._client = dwr_sdk_client(emulator)

    def sweep(self, graphs: tuple[str, ...]) -> int:
        from huaweicloudsdkdwr.v3 import ListWorkflowInstanceRequest

        now = datetime.now(timezone.utc)
        start = (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        end = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        failures = 0
        for graph in graphs:
            offset = 1
            while True:
                request = ListWorkflowInstanceRequest(
                    graph_name=graph, status="fail", start_time=start, end_time=end,
                    limit=PAGE["dwr"], offset=offset,
                )  # fmt: skip
                page = self._client.list_workflow_instance(request)
                failures += sum(1 for e in page.executions or () if e.execution_name)
                if not page.is_truncated or not page.next_offset:
                    break
                offset = page.next_offset
        return failures

    def close(self) -> None:
        self._client.close()


def _peak_kib(side: Any, graphs: tuple[str, ...]) -> float:
    """Peak memory allocated (tracemalloc) during one sweep of ``graphs``, above its start."""
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        side.sweep(graphs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return (peak - base) / 1024


def _rows(
    api: str, total: int, seconds: dict[str, list[float]], memory: dict[str, float], valid: bool
) -> list[Row]:
    measures = {}
    for wire in ("tls", "plain"):
        ours, sdk = seconds[f"{wire} ours"], seconds[f"{wire} sdk"]
        ratios = [o / s for o, s in zip(ours, sdk, strict=True)]
        measures[wire] = Measure(
            median(ours) * 1000,
            median(sdk) * 1000,
            TIME_TARGET,
            ratio_override=median(ratios) if valid else float("nan"),
        )
    small = total // 10
    return [
        Row(
            f"sweep-{api}",
            f"{api.upper()} sweep of {total:,} executions (20 graphs) vs the SDK's list loop: time",
            "ms",
            measures["tls"],
            measures["plain"],
        ),
        Row(
            f"sweep-{api}",
            f"{api.upper()} sweep peak memory growth: {total:,} vs {small:,} executions, ours "
            f"(the baseline column is ours at {small:,}; flat ≤ {FLAT_TARGET:.2f}x)",
            "KiB",
            Measure(memory[f"ours {total}"], memory[f"ours {small}"], FLAT_TARGET),
            wire=False,
        ),
        Row(
            f"sweep-{api}",
            f"{api.upper()} sweep peak memory growth at {total:,} executions vs the SDK loop",
            "KiB",
            Measure(memory[f"ours {total}"], memory[f"sdk {total}"]),
            wire=False,
        ),
    ]
