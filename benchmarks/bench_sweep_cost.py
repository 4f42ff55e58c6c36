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

**The optimisation and its baseline**: quiet listings (:mod:`handler.pipeline.quiet`: a
graph whose listing found no failure is listed again at its next slot), measured against
this same sweep listing every graph by every sweep (``RESTORE_SWEEP_QUIET_INTERVAL=0``, the
benchmarks' environment). ``Settings.optimised_env`` holds the settings the optimised sweep
reads; set, every point runs both variants in the same run, side by side (each sweeping a
pace after its own last sweep started, so a slow baseline sweep does not stretch the
optimised one's timer), each in its own process with its own state and its own emulator (one
variant must not restore a failure the other left for a later sweep). Its saving shows over
an interval, so the sweeps are paced (``Settings.pace``: the timer, scaled; the quiet
interval scaled alike) and the figures are per-sweep means over ``rounds`` that span at
least one interval; a last sweep one interval after the others checks that every failure
injected was restored (``never_restored``), and how many sweeps each waited is kept
(``sweeps_waited``). Empty, only the baseline runs, and the table's ``ours`` column says
``-``.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
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
    # Seconds from one sweep of a variant to its next: the timer, scaled down (0: back to
    # back). An optimisation that lists a graph every so often is measured in that time.
    pace: float = 0.0


def run(
    settings: Settings, tls: tuple[str, str], work_dir: Path
) -> tuple[list[Row], dict[str, Any]]:
    """Each API and variant against an emulator of its own (HTTPS, ``tls`` is the certificate
    and key): "every graph" must mean these graphs only, and a failure one variant left for
    a later sweep must not be restored by the other."""
    points: dict[str, dict[str, Any]] = {}
    variants = ["baseline", "optimised"] if settings.optimised_env else ["baseline"]
    for api in settings.apis:
        emulators = {
            variant: EmulatorProcess(ACCESS_KEY, SECRET_KEY, api=api, tls=tls)
            for variant in variants
        }
        try:
            for emulator in emulators.values():
                emulator.__enter__()
            points[api] = _api_points(settings, api, emulators, work_dir)
        finally:
            for emulator in emulators.values():
                emulator.__exit__(None, None, None)
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
    settings: Settings, api: str, emulators: dict[str, EmulatorProcess], work_dir: Path
) -> dict[str, Any]:
    variants: dict[str, dict[str, str]] = {"baseline": {}}
    if settings.optimised_env:
        variants["optimised"] = dict(settings.optimised_env)
    graphs: list[str] = []
    points: dict[str, Any] = {}
    for count in sorted(settings.graph_counts):
        while len(graphs) < count:  # the graphs of the smaller point stay: one more decade
            graph = f"cost-{api}-{len(graphs):04d}"
            for emulator in emulators.values():
                emulator.fresh(graph, HISTORY_PER_GRAPH, SUCCEEDED[api])
            graphs.append(graph)
        failing = max(1, math.ceil(count * settings.failed_share))
        step = count // failing
        failed_graphs = graphs[:count:step][:failing]
        sweeps: dict[str, dict[str, list[dict[str, Any]]]] = {
            variant: {condition: [] for condition in CONDITIONS} for variant in variants
        }
        waited: dict[str, list[int]] = {}  # per injected failure: the sweeps it waited
        never: dict[str, int] = {}  # injected failures not restored by the end
        processes = {}
        try:
            for variant, extra in variants.items():
                state = work_dir / f"cost-{api}-{count}-{variant}"
                env = function_env(emulators[variant].url, state, emulators[variant].ca_bundle, api)
                env["RESTORE_RATE_LIMIT"] = "off"  # what is measured is listing, not the rate
                env.update(extra)
                log = work_dir / f"cost-{api}-{count}-{variant}.log"
                processes[variant] = FunctionProcess(["commands"], env, log)
                processes[variant].next(timeout=60.0)  # imported
                processes[variant].sweep(SWEEP_TIMEOUT)  # the cold call: not counted
                emulators[variant].calls()

            with ThreadPoolExecutor(max_workers=len(variants)) as pool:
                running = {
                    variant: pool.submit(
                        _timeline,
                        settings,
                        variant,
                        emulators[variant],
                        processes[variant],
                        failed_graphs,
                        count,
                        _seconds(extra.get("RESTORE_SWEEP_QUIET_INTERVAL", "0")),
                    )
                    for variant, extra in variants.items()
                }
                for variant, done in running.items():
                    sweeps[variant], waited[variant], never[variant] = done.result()
        finally:
            for process in processes.values():
                process.stop()
        points[str(count)] = {
            "failed_graphs": len(failed_graphs),
            "sweeps": sweeps,
            "sweeps_waited": waited,  # per injected failure: 1 = restored by the next sweep
            "never_restored": never,
        }
    return points


def _timeline(
    settings: Settings,
    variant: str,
    emulator: EmulatorProcess,
    process: FunctionProcess,
    failed_graphs: list[str],
    graphs: int,
    interval: float,
) -> tuple[dict[str, list[dict[str, Any]]], list[int], int]:
    """One variant's sweeps, a pace apart from start to start (its timer): the variants run
    side by side, so a slow sweep of one does not stretch the other's pace. Returns its
    records per condition, the sweeps each injected failure waited, and how many were never
    restored - after a last sweep a pace after the quiet interval, within which every
    graph's slot came (not counted)."""
    records: dict[str, list[dict[str, Any]]] = {condition: [] for condition in CONDITIONS}
    pending: list[tuple[str, str, int]] = []  # (graph, name, sweeps before it was injected)
    waited: list[int] = []
    swept = 0
    last_start = time.time()
    for _ in range(settings.rounds):
        for condition in CONDITIONS:
            if condition == "failed":
                for graph in failed_graphs:  # a new failure since the last sweep
                    pending += [(graph, name, swept) for name in emulator.fresh(graph, 1)]
                emulator.calls()  # seeding is not the sweep's
            time.sleep(max(0.0, last_start + settings.pace - time.time()))
            last_start = time.time()
            line = process.sweep(SWEEP_TIMEOUT)
            counted = emulator.calls()
            swept += 1
            pending = _still_pending(emulator, pending, swept, waited)
            record = _sweep_record(line, counted, graphs, len(failed_graphs), condition, variant)
            record["began"] = line["began"]
            records[condition].append(record)
    time.sleep(max(0.0, last_start + interval + settings.pace - time.time()))
    process.sweep(SWEEP_TIMEOUT)
    pending = _still_pending(emulator, pending, swept + 1, waited)
    return records, waited, len(pending)


def _still_pending(
    emulator: EmulatorProcess,
    pending: list[tuple[str, str, int]],
    swept: int,
    waited: list[int],
) -> list[tuple[str, str, int]]:
    """The injected failures not restored yet; the sweeps each restored one waited go to
    ``waited``."""
    left = []
    for graph, name, injected_at in pending:
        if emulator.restored_at(graph, [name])[0] is None:
            left.append((graph, name, injected_at))
        else:
            waited.append(swept - injected_at)
    return left


def _seconds(text: str) -> float:
    """A duration setting as the function reads it (``20s``, ``10m``, a bare number)."""
    from handler.settings import parse_duration

    return parse_duration(text, "RESTORE_SWEEP_QUIET_INTERVAL", minimum=0)


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
    operations = {name: counted["operations"].get(name, 0) for name in OPERATIONS}
    others = sum(n for name, n in counted["operations"].items() if name not in OPERATIONS)
    found = summary.get("failuresFound")
    restored = (summary.get("outcomes") or {}).get("restored", 0)
    if variant == "baseline":  # every graph listed, exactly this sweep's failures restored
        expected = failing if condition == "failed" else 0
        did_its_job = (
            summary.get("graphsScanned") == graphs and found == expected and restored == expected
        )
    else:  # quiet graphs wait for their slot: what it found it restored (the run checks
        # that every failure was restored by the end: ``never_restored``)
        did_its_job = found == restored and (
            summary.get("graphsScanned", 0) + summary.get("graphsQuiet", 0) == graphs
        )
    answered_ok = all(key.endswith(" 200") for key in counted["calls"])
    valid = (
        line["status"] == 200
        and not summary.get("errors")
        and summary.get("stopped") is None
        and did_its_job
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
        caught_up = not any(points[api][largest].get("never_restored", {}).values())
        interval = dict(settings.optimised_env).get("RESTORE_SWEEP_QUIET_INTERVAL", "-")
        for name, unit, scale in (("calls", "calls", 1.0), ("wall_s", "ms", 1000.0)):
            ours = optimised[name] * scale if optimised else math.nan
            valid = baseline["valid"] and (optimised is None or optimised["valid"]) and caught_up
            what = "API calls" if name == "calls" else "wall time"
            metric = (
                f"timer sweep of {int(largest):,} quiet graphs ({api.upper()}): {what} per "
                f"sweep, a sweep every {settings.pace:g} s; baseline = every graph listed by "
                f"every sweep, ours = quiet listings (RESTORE_SWEEP_QUIET_INTERVAL={interval})"
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
        f"wall per sweep | optimised: calls (graphs + list + query + restore) | optimised: "
        f"wall | optimised: sweeps a failure waited (mean / max) | calls per day at {every} | "
        f"GB-s per day at {every} |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
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
                        _optimised_cells(optimised, point, condition)
                        if optimised
                        else "not built yet | not built yet | - | "
                    )
                    + " / ".join(f"{day['calls']:,.0f}" for day in days)
                    + " | "
                    + " / ".join(f"{day['gb_s']:,.1f} ({day['gb_s_assumed']:,.0f})" for day in days)
                    + " |"
                )
    optimised_env = ", ".join(f"`{k}={v}`" for k, v in settings["optimised_env"]) or "none"
    lines += [
        "",
        f"Optimised: {optimised_env}; the baseline lists every graph by every sweep "
        "(`RESTORE_SWEEP_QUIET_INTERVAL=0`). Both run in the same run, side by side, each "
        f"against an emulator of its own, a sweep of each every {settings['pace']:g} s "
        "(the timer, scaled): a quiet graph is listed once per interval, so its new failure "
        "waits up to an interval's sweeps (the *waited* column: 1 = the next sweep "
        "restored it), and a last sweep one interval after the others checks that every "
        "failure was restored. The per-day columns are the baseline's.",
    ]
    return lines


def _optimised_cells(optimised: dict[str, Any], point: dict[str, Any], condition: str) -> str:
    ops = optimised["operations"]
    split = " + ".join(f"{ops[name]:.1f}" for name in OPERATIONS)
    left = point.get("never_restored", {}).get("optimised", 0)
    flag = "" if optimised["valid"] and not left else " (INVALID: see the JSON)"
    waited = point.get("sweeps_waited", {}).get("optimised") or []
    shown = f"{sum(waited) / len(waited):.1f} / {max(waited)}" if waited else "-"
    if condition == "quiet":
        shown = "-"  # failures are injected before the 1% sweeps only
    return f"{optimised['calls']:,.1f} ({split}){flag} | {_ms(optimised['wall_s'])} | {shown} | "


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return f"{seconds * 1000:,.0f} ms" if seconds >= 0.1 else f"{seconds * 1000:,.1f} ms"
