"""What a timer sweep costs when (almost) nothing failed: API calls and wall time per sweep.

A timer sweep runs all day, and most of the day over healthy graphs. For 10, 100 and 1,000
graphs, each with a day of history (:data:`HISTORY_PER_GRAPH` succeeded executions), on
each API, one FunctionGraph event function in its own process (:mod:`functiongraph_process`)
is called with TIMER events as the template deploys it - every graph the list API returns
(``RESTORE_SWEEP_GRAPHS`` empty), the default lookback, SQLite state - and each sweep is
counted at the emulator, by operation (list of graphs, list of a graph's executions, query,
restore), and timed (the whole timer call). Two conditions, alternating: **quiet** (no
failure) and **1% failed** (1% of the graphs, at least one, each with one new failure since
the last sweep, which the sweep must restore). From those figures, per timer interval (1, 5
and 10 minutes): calls per day, and GB-s per day at the template's ``memorySize`` - measured
on loopback, and with an assumed round trip per call (:data:`ASSUMED_CALL_MS`, not
measured: a real endpoint answers in milliseconds, not the emulator's fraction of one).

**The baseline for the optimisation** (listing quiet graphs less often, a high-water mark) is
this same sweep without it. ``Settings.optimised_env`` is the place for it: the settings the
optimised sweep reads (e.g. ``(("RESTORE_SWEEP_...", "..."),)``). Empty - as now, the
optimisation does not exist yet - only the baseline runs, and the table's ``ours`` column
says ``-``. Set, every point runs twice in the same run, interleaved sweep by sweep, each
variant in its own process with its own state: ``ours`` is the optimised sweep and the
baseline column the sweep without it. An optimisation whose saving shows only over several
sweeps (a graph listed every n-th sweep) needs ``rounds`` of at least one such cycle: the
figures are per-sweep means.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common import ACCESS_KEY, ROOT, SECRET_KEY, function_env, median
from emulator_process import EmulatorProcess
from functiongraph_process import FunctionProcess
from report import Measure, Row

HISTORY_PER_GRAPH = 24  # succeeded executions in the lookback: a day of hourly runs
SUCCEEDED = {"obs": "SUCCESS", "dwr": "success"}
ASSUMED_CALL_MS = 30.0  # an assumed in-region HTTPS round trip per API call; not measured
SWEEP_TIMEOUT = 120.0
OPERATIONS = ("list_graphs", "list", "query", "restore")
CONDITIONS = ("quiet", "failed")


@dataclass(frozen=True)
class Settings:
    graph_counts: tuple[int, ...]
    rounds: int  # sweeps per (graphs, condition, variant), after one untimed warm-up
    failed_share: float = 0.01
    apis: tuple[str, ...] = ("dwr", "obs")
    timer_minutes: tuple[int, ...] = (1, 5, 10)
    # The settings the optimised sweep reads; empty: no optimised run (see the module doc).
    optimised_env: tuple[tuple[str, str], ...] = ()


def run(
    settings: Settings, tls: tuple[str, str], work_dir: Path
) -> tuple[list[Row], dict[str, Any]]:
    """Each API against an emulator of its own (HTTPS, ``tls`` is the certificate and key):
    "every graph" must mean these graphs only."""
    points: dict[str, dict[str, Any]] = {}
    for api in settings.apis:
        with EmulatorProcess(ACCESS_KEY, SECRET_KEY, api=api, tls=tls) as emulator:
            points[api] = _api_points(settings, api, emulator, work_dir)
    memory_mb = template_memory_mb()
    raw = {
        "settings": asdict(settings),
        "history_per_graph": HISTORY_PER_GRAPH,
        "memory_mb": memory_mb,
        "assumed_call_ms": ASSUMED_CALL_MS,
        "points": points,
    }
    return _rows(settings, points), raw


def template_memory_mb() -> int:
    """restore-event's ``memorySize`` in template.yaml: what a timer call is billed at."""
    import yaml

    template = yaml.safe_load((ROOT / "template.yaml").read_text(encoding="utf-8"))
    return int(template["services"]["restore-event"]["props"]["function"]["memorySize"])


def _api_points(
    settings: Settings, api: str, emulator: EmulatorProcess, work_dir: Path
) -> dict[str, Any]:
    variants = {"baseline": {}}
    if settings.optimised_env:
        variants["optimised"] = dict(settings.optimised_env)
    graphs: list[str] = []
    points: dict[str, Any] = {}
    for count in sorted(settings.graph_counts):
        while len(graphs) < count:  # the graphs of the smaller point stay: one more decade
            graph = f"cost-{api}-{len(graphs):04d}"
            emulator.fresh(graph, HISTORY_PER_GRAPH, SUCCEEDED[api])
            graphs.append(graph)
        failing = max(1, math.ceil(count * settings.failed_share))
        step = count // failing
        failed_graphs = graphs[:count:step][:failing]
        sweeps: dict[str, dict[str, list[dict[str, Any]]]] = {
            variant: {condition: [] for condition in CONDITIONS} for variant in variants
        }
        processes = {}
        try:
            for variant, extra in variants.items():
                state = work_dir / f"cost-{api}-{count}-{variant}"
                env = function_env(emulator.url, state, emulator.ca_bundle, api)
                env.update(extra)
                log = work_dir / f"cost-{api}-{count}-{variant}.log"
                processes[variant] = FunctionProcess(["commands"], env, log)
                processes[variant].next(timeout=60.0)  # imported
                processes[variant].sweep(SWEEP_TIMEOUT)  # the cold call: not counted
            emulator.calls()
            order = list(variants)
            for index in range(settings.rounds):
                for variant in order[index % len(order) :] + order[: index % len(order)]:
                    for condition in CONDITIONS:
                        if condition == "failed":
                            for graph in failed_graphs:
                                emulator.fresh(graph, 1)  # a new failure since the last sweep
                            emulator.calls()  # seeding is not the sweep's
                        line = processes[variant].sweep(SWEEP_TIMEOUT)
                        counted = emulator.calls()
                        record = _sweep_record(
                            line, counted, count, len(failed_graphs), condition, variant
                        )
                        sweeps[variant][condition].append(record)
        finally:
            for process in processes.values():
                process.stop()
        points[str(count)] = {"failed_graphs": len(failed_graphs), "sweeps": sweeps}
    return points


def _sweep_record(
    line: dict[str, Any],
    counted: dict[str, Any],
    graphs: int,
    failing: int,
    condition: str,
    variant: str,
) -> dict[str, Any]:
    """One sweep's counts, and whether it did its job: no errors, exactly the injected
    failures found and restored (the optimised sweep too: it may list fewer graphs, never
    miss a failure), every graph scanned (the baseline), every call answered 200."""
    summary = line["sweep"]
    scanned = variant != "baseline" or summary.get("graphsScanned") == graphs
    operations = {name: counted["operations"].get(name, 0) for name in OPERATIONS}
    others = sum(n for name, n in counted["operations"].items() if name not in OPERATIONS)
    expected = failing if condition == "failed" else 0
    answered_ok = all(key.endswith(" 200") for key in counted["calls"])
    valid = (
        line["status"] == 200
        and not summary.get("errors")
        and summary.get("stopped") is None
        and scanned
        and summary.get("failuresFound") == expected
        and (summary.get("outcomes") or {}).get("restored", 0) == expected
        and others == 0
        and answered_ok
    )
    return {
        "wall_s": line["ended"] - line["began"],
        "calls": sum(operations.values()) + others,
        "operations": operations,
        "connections": counted["connections"],
        "summary": summary,
        "valid": valid,
    }


def figures(point: dict[str, list[dict[str, Any]]], condition: str) -> dict[str, Any]:
    """Per-sweep means of calls (and per operation) and the median wall time of one cell."""
    sweeps = point[condition]
    if not sweeps:
        return {"calls": math.nan, "wall_s": math.nan, "operations": {}, "valid": False}
    return {
        "calls": sum(s["calls"] for s in sweeps) / len(sweeps),
        "operations": {
            name: sum(s["operations"][name] for s in sweeps) / len(sweeps) for name in OPERATIONS
        },
        "wall_s": median([s["wall_s"] for s in sweeps]),
        "valid": all(s["valid"] for s in sweeps),
    }


def per_day(calls: float, wall_s: float, minutes: int, memory_mb: int) -> dict[str, float]:
    """Calls, invocations and GB-s in a day of sweeps every ``minutes``: loopback wall time,
    and with every call taking :data:`ASSUMED_CALL_MS` more (a real endpoint)."""
    sweeps = 24 * 60 / minutes
    gigabytes = memory_mb / 1024
    return {
        "sweeps": sweeps,
        "calls": calls * sweeps,
        "gb_s": gigabytes * wall_s * sweeps,
        "gb_s_assumed": gigabytes * (wall_s + calls * ASSUMED_CALL_MS / 1000) * sweeps,
    }


def _rows(settings: Settings, points: dict[str, dict[str, Any]]) -> list[Row]:
    largest = str(max(settings.graph_counts))
    rows = []
    for api in settings.apis:
        point = points[api][largest]["sweeps"]
        baseline = figures(point["baseline"], "quiet")
        optimised = figures(point["optimised"], "quiet") if "optimised" in point else None
        for name, unit, scale in (("calls", "calls", 1.0), ("wall_s", "ms", 1000.0)):
            ours = optimised[name] * scale if optimised else math.nan
            valid = baseline["valid"] and (optimised is None or optimised["valid"])
            what = "API calls" if name == "calls" else "wall time"
            metric = (
                f"timer sweep of {int(largest):,} quiet graphs ({api.upper()}): {what} per "
                "sweep; baseline = today's sweep, ours = optimised (`-`: not built yet)"
            )
            measure = Measure(
                ours, baseline[name] * scale, ratio_override=None if valid else math.nan
            )
            rows.append(Row("sweep-cost", metric, unit, measure))
    return rows


def markdown(raw: dict[str, Any]) -> list[str]:
    """RESULTS.md's section: every point, per day, and where the optimised figures go."""
    settings, memory_mb = raw["settings"], raw["memory_mb"]
    minutes = settings["timer_minutes"]
    every = " / ".join(f"{m} min" for m in minutes)
    lines = [
        f"Every graph has {raw['history_per_graph']} succeeded executions in the lookback; "
        f'"1% failed": 1% of the graphs (at least one) each have one new failure, restored '
        f"by the sweep. Calls are counted at the emulator per sweep (the mean of "
        f"{settings['rounds']} sweeps after an untimed cold one; list of graphs + list of "
        "executions + query + restore), wall time is the whole timer call (median). Per day "
        f"at a timer of {every}: calls, and GB-s at the template's memorySize "
        f"({memory_mb} MB) from the loopback wall time and, in brackets, with an assumed "
        f"{raw['assumed_call_ms']:g} ms round trip per call (not measured).",
        "",
        f"| API | graphs | failed | calls per sweep (graphs + list + query + restore) | "
        f"wall per sweep | optimised: calls | optimised: wall | calls per day at {every} | "
        f"GB-s per day at {every} |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for api, points in raw["points"].items():
        for count, point in points.items():
            for condition in CONDITIONS:
                base = figures(point["sweeps"]["baseline"], condition)
                optimised = (
                    figures(point["sweeps"]["optimised"], condition)
                    if "optimised" in point["sweeps"]
                    else None
                )
                days = [per_day(base["calls"], base["wall_s"], m, memory_mb) for m in minutes]
                ops = base["operations"]
                split = " + ".join(f"{ops[name]:g}" for name in OPERATIONS)
                failed = point["failed_graphs"] if condition == "failed" else 0
                flag = "" if base["valid"] else " (INVALID: see the JSON)"
                lines.append(
                    f"| {api.upper()} | {int(count):,} | {failed} | {base['calls']:,.0f} "
                    f"({split}){flag} | {_ms(base['wall_s'])} | "
                    + (
                        f"{optimised['calls']:,.0f} | {_ms(optimised['wall_s'])} | "
                        if optimised
                        else "not built yet | not built yet | "
                    )
                    + " / ".join(f"{day['calls']:,.0f}" for day in days)
                    + " | "
                    + " / ".join(f"{day['gb_s']:,.1f} ({day['gb_s_assumed']:,.0f})" for day in days)
                    + " |"
                )
    lines += [
        "",
        "The optimised columns fill in when `bench_sweep_cost.Settings.optimised_env` names "
        "the setting the optimisation reads (run.py's profiles): both variants then run in "
        "the same run, interleaved, and the README table's `ours` column shows the optimised "
        "sweep against this baseline.",
    ]
    return lines


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return f"{seconds * 1000:,.0f} ms" if seconds >= 0.1 else f"{seconds * 1000:,.1f} ms"
