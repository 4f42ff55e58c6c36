"""Time to recovery: from the moment an execution fails to the moment its restore is accepted.

What the user of the function waits for, measured on the emulator with real processes, both
ends on the emulator's clock: the emulator flips a running execution to failed and records
that moment (its stop time), and records when it accepted the restore
(:meth:`EmulatorCore.restored_at`). Two ways a failure reaches the function:

* **an event** - the failure event is POSTed to the HTTP function (functions-framework
  serving ``handler/main.py --target restore``, as deployed: bearer token, SQLite dedupe and
  budget, a JSON log line) the moment the flip is acknowledged: the figure is the function's
  own time, with no event source in between (a real source adds its own delivery time). The
  baseline is the naive SDK function (``benchmarks/naive_function.py``) served the same way:
  the ratio says how much longer ours takes to turn a failure into an accepted restore than
  the simplest function a user would write (it does auth, a dedupe claim, the budget and a
  log line on top). OBS API (the naive function is on the OBS SDK), TLS and plain HTTP, one
  failure at a time, the four (transport, side) pairs in rotating order.
* **the timer sweep** - a FunctionGraph event function in its own process
  (:mod:`functiongraph_process`) is called with a TIMER event every ``T`` seconds at fixed
  rate, while failures are injected at moments spread over the run. ``T`` is scaled down:
  :data:`STANDS_FOR` (the template's 10-minute timer) becomes ``T`` seconds. A failure waits
  for the next sweep (uniform over ``0..T``: the failures' phases are spread evenly over the
  interval) and then for the sweep to reach it, so the floor
  of the p-th percentile is ``p/100 * T + the sweep's own time`` - for p50 the issue's
  ``T/2 + sweep time``. The baseline column is that floor (sweep time: the median timer
  call for p50, the 99th percentile for p99, measured in the same run); the ratio is
  measured / floor: 1.0 means a failure waits for nothing but the timer and one sweep, more
  means something else delays it (a failure left to a later sweep, a slow sweep). The waiting
  part scales with ``T``, the sweep's own time does not: at the real interval the figure is
  about ``(measured - sweep time) * scale + sweep time``. Both APIs' timer loops run at the
  same time, each against its own (TLS) emulator, since they spend nearly all their time
  waiting for the next slot.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import random
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common import (
    AUTH_TOKEN,
    LOOPBACK,
    NAIVE_SOURCE,
    OUR_SOURCE,
    function_env,
    median,
    percentile,
    ratio,
    sdk_env,
    server_env,
)
from emulator_process import EmulatorProcess
from functiongraph_process import FunctionProcess
from report import Measure, Row
from servers import FunctionServer

STANDS_FOR = 600.0  # seconds: template.yaml's timer, `schedule: 10m`
EVENT_GRAPHS = {"ours": "ttr-event-ours", "naive": "ttr-event-naive"}
HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {AUTH_TOKEN}"}
REQUEST_TIMEOUT = 30.0
RUNNING = {"obs": "RUNNING", "dwr": "running"}
SUCCEEDED = {"obs": "SUCCESS", "dwr": "success"}
HISTORY_PER_GRAPH = 24  # succeeded executions each swept graph already has: a day of hourly runs
SEED = 24  # the injection schedule is random but the same in every run


@dataclass(frozen=True)
class Settings:
    event_samples: int  # failures per (transport, side)
    timer_interval: float  # T, seconds; stands for STANDS_FOR
    timer_ticks: int  # timed sweeps after the first (cold) one
    timer_failures: int  # failures injected over those ticks, per API
    timer_graphs: int  # graphs the sweep lists (RESTORE_SWEEP_GRAPHS), per API
    timer_apis: tuple[str, ...] = ("dwr", "obs")


def run(
    settings: Settings, emulators: dict[tuple[str, str], EmulatorProcess], work_dir: Path
) -> tuple[list[Row], dict[str, Any]]:
    """``emulators`` maps ``(api, wire)`` to running emulators (run.py's four)."""
    obs = {wire: emulators[("obs", wire)] for wire in ("tls", "plain")}
    event = _event_recovery(settings, obs, work_dir)
    timed = {api: emulators[(api, "tls")] for api in settings.timer_apis}
    timer = _timer_recovery(settings, timed, work_dir)
    raw = {
        "settings": asdict(settings),
        "stands_for_seconds": STANDS_FOR,
        "event": event,
        "timer": timer,
    }
    return _rows(event, timer, settings), raw


# --- through an event -----------------------------------------------------------------------


def _event_recovery(
    settings: Settings, emulators: dict[str, EmulatorProcess], work_dir: Path
) -> dict[str, Any]:
    servers = {}
    for wire, emulator in emulators.items():
        env = function_env(emulator.url, work_dir / f"ttr-state-{wire}", emulator.ca_bundle)
        servers[(wire, "ours")] = FunctionServer(
            f"ours {wire}", OUR_SOURCE, server_env(env), work_dir / f"ttr-ours-{wire}.log"
        )
        naive_env = server_env(sdk_env(emulator.url, emulator.ca_bundle))
        servers[(wire, "naive")] = FunctionServer(
            f"naive {wire}", NAIVE_SOURCE, naive_env, work_dir / f"ttr-naive-{wire}.log"
        )
    samples: dict[str, list[dict[str, float]]] = {f"{w} {s}": [] for w, s in servers}
    failures: dict[str, int] = dict.fromkeys(samples, 0)
    with contextlib.ExitStack() as stack:
        for server in servers.values():
            stack.enter_context(server)
        senders = {key: _Sender(server.port) for key, server in servers.items()}
        pools = {
            (wire, side): emulators[wire].fresh(
                EVENT_GRAPHS[side], settings.event_samples + 5, RUNNING["obs"]
            )
            for wire, side in servers
        }
        jobs = list(servers)
        for index in range(settings.event_samples + 5):  # the first 5: warm-up, not counted
            shift = index % len(jobs)
            for wire, side in jobs[shift:] + jobs[:shift]:
                emulator, name = emulators[wire], pools[(wire, side)][index]
                graph = EVENT_GRAPHS[side]
                failed_at = emulator.flip(graph, [name])[0]
                sent_at = time.time()
                ok = senders[(wire, side)].restore(graph, name, side)
                answered_at = time.time()
                if index < 5:
                    continue
                if not ok:
                    failures[f"{wire} {side}"] += 1
                sample = {"name": name, "failed_at": failed_at, "sent_at": sent_at}
                samples[f"{wire} {side}"].append({**sample, "answered_at": answered_at})
        for sender in senders.values():
            sender.close()
    for (wire, side), _ in servers.items():
        key = f"{wire} {side}"
        names = [sample["name"] for sample in samples[key]]
        restored = emulators[wire].restored_at(EVENT_GRAPHS[side], names)
        for sample, restored_at in zip(samples[key], restored, strict=True):
            sample["restored_at"] = restored_at
    return {"samples": samples, "failed_requests": failures}


class _Sender:
    """One keep-alive connection to a served function: POST a failure event, check the answer."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._connection = http.client.HTTPConnection(LOOPBACK, port, timeout=REQUEST_TIMEOUT)

    def restore(self, graph: str, execution: str, side: str) -> bool:
        body = json.dumps({"graphName": graph, "executionName": execution}).encode()
        try:
            self._connection.request("POST", "/", body=body, headers=HEADERS)
            answer = self._connection.getresponse()
            status, data = answer.status, answer.read()
        except (OSError, http.client.HTTPException):
            self._connection.close()
            self._connection = http.client.HTTPConnection(
                LOOPBACK, self._port, timeout=REQUEST_TIMEOUT
            )
            return False
        if status != 200:
            return False
        document = json.loads(data)
        if side == "naive":
            return document.get("status") == 200
        results = document.get("results") or [{}]
        return len(results) == 1 and results[0].get("outcome") == "restored"

    def close(self) -> None:
        self._connection.close()


# --- through the timer sweep ----------------------------------------------------------------


def _timer_recovery(
    settings: Settings, emulators: dict[str, EmulatorProcess], work_dir: Path
) -> dict[str, Any]:
    """Every API's timer loop at once; failures injected on one schedule thread per API."""
    results: dict[str, dict[str, Any]] = {}
    errors: list[BaseException] = []

    def one(api: str) -> None:
        try:
            results[api] = _timer_loop(settings, api, emulators[api], work_dir)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(api,)) for api in emulators]
    for thread in threads:
        thread.start()
    bound = settings.timer_interval * (settings.timer_ticks + 2) + 120.0
    for thread in threads:
        thread.join(timeout=bound)
    if errors:
        raise errors[0]
    if len(results) != len(emulators):
        raise RuntimeError(f"a timer loop did not finish within {bound:g}s")
    return results


def _timer_loop(
    settings: Settings, api: str, emulator: EmulatorProcess, work_dir: Path
) -> dict[str, Any]:
    interval, ticks = settings.timer_interval, settings.timer_ticks
    graphs = [f"ttr-timer-{api}-{index:02d}" for index in range(settings.timer_graphs)]
    pools: dict[str, list[str]] = {}
    for index, graph in enumerate(graphs):
        emulator.fresh(graph, HISTORY_PER_GRAPH, SUCCEEDED[api])
        share = settings.timer_failures // len(graphs) + (
            index < settings.timer_failures % len(graphs)
        )
        pools[graph] = emulator.fresh(graph, share, RUNNING[api])  # they will fail, one by one
    env = function_env(emulator.url, work_dir / f"ttr-timer-{api}", emulator.ca_bundle, api)
    env["RESTORE_SWEEP_GRAPHS"] = ",".join(graphs)
    rng = random.Random(f"{SEED}-{api}")
    plan = [(graph, name) for graph in graphs for name in pools[graph]]
    rng.shuffle(plan)
    args = ["timer", "--interval", str(interval), "--ticks", str(ticks)]
    with FunctionProcess(args, env, work_dir / f"ttr-timer-{api}.log") as function:
        ready = function.next(timeout=60.0)
        moments = _moments(ready["ready"], len(plan), interval, ticks, rng)
        injected = []
        for (graph, name), moment in zip(plan, moments, strict=True):
            delay = moment - time.time()
            if delay > 0:
                time.sleep(delay)
            failed_at = emulator.flip(graph, [name])[0]
            injected.append({"graph": graph, "name": name, "failed_at": failed_at})
        sweeps = [function.next(timeout=interval + 60.0) for _ in range(ticks)]
        function.wait(timeout=60.0)
    for graph in graphs:
        names = [item["name"] for item in injected if item["graph"] == graph]
        restored = dict(zip(names, emulator.restored_at(graph, names), strict=True))
        for item in injected:
            if item["graph"] == graph:
                item["restored_at"] = restored[item["name"]]
    return {
        "api": api,
        "interval": interval,
        "graphs": len(graphs),
        "first": ready,
        "sweeps": sweeps,
        "failures": injected,
    }


def _moments(
    origin: float, count: int, interval: float, ticks: int, rng: random.Random
) -> list[float]:
    """When each failure happens: evenly spread phases within the timer's interval, in random
    intervals between tick 1 and the last tick, sorted.

    The phases are ``(j + 0.5) / count`` of the interval, one each, so their distribution is
    the uniform one a real failure has (any moment between two sweeps) without the sampling
    noise of random phases: with ~70 failures, random phases alone would move the measured
    p50 by about ±0.06 T from run to run and hide what the ratio is there to show. No
    failure falls before tick 1: tick 0 is the cold call.
    """
    phases = [(index + 0.5) / count for index in range(count)]
    rng.shuffle(phases)
    slots = [1 + index % (ticks - 1) for index in range(count)] if ticks > 1 else [0] * count
    pairs = zip(slots, phases, strict=True)
    return sorted(origin + (slot + phase) * interval for slot, phase in pairs)


# --- the rows --------------------------------------------------------------------------------


def event_figures(event: dict[str, Any]) -> dict[str, dict[str, float]]:
    """p50 / p99 time to recovery (ms) per ``"wire side"``, and whether every sample counts."""
    figures = {}
    for key, samples in event["samples"].items():
        seconds = [s["restored_at"] - s["failed_at"] for s in samples if s.get("restored_at")]
        delivery = [s["sent_at"] - s["failed_at"] for s in samples]
        valid = event["failed_requests"][key] == 0 and len(seconds) == len(samples) > 0
        figures[key] = {
            "p50_ms": median(seconds) * 1000,
            "p99_ms": percentile(seconds, 99) * 1000,
            "delivery_p50_ms": median(delivery) * 1000,
            "samples": len(samples),
            "valid": valid,
        }
    return figures


def timer_figures(loop: dict[str, Any]) -> dict[str, Any]:
    """Measured p50/p99 against their floors, for one API's timer loop (seconds)."""
    interval = loop["interval"]
    durations = [s["ended"] - s["began"] for s in loop["sweeps"]]
    recoveries = [f["restored_at"] - f["failed_at"] for f in loop["failures"] if f["restored_at"]]
    starts = [s["began"] for s in loop["sweeps"]]
    later = 0  # failures restored by a sweep that began after a later one had begun
    for failure in loop["failures"]:
        if failure["restored_at"] is None:
            continue
        after = [b for b in starts if failure["failed_at"] < b <= failure["restored_at"]]
        later += len(after) > 1
    sweep_p50, sweep_p99 = median(durations), percentile(durations, 99)
    floors = {"p50": 0.5 * interval + sweep_p50, "p99": 0.99 * interval + sweep_p99}
    measured = {"p50": median(recoveries), "p99": percentile(recoveries, 99)}
    scale = STANDS_FOR / interval
    clean = all(not s["sweep"].get("errors") and s["status"] == 200 for s in loop["sweeps"])
    return {
        "api": loop["api"],
        "interval_s": interval,
        "scale": scale,
        "samples": len(loop["failures"]),
        "restored": len(recoveries),
        "restored_by_a_later_sweep": later,
        "sweep_s": {"p50": sweep_p50, "p99": sweep_p99, "max": max(durations, default=math.nan)},
        "measured_s": measured,
        "floor_s": floors,
        "ratio": {q: ratio(measured[q], floors[q]) for q in measured},
        "projected_s": {q: (measured[q] - sweep_p50) * scale + sweep_p50 for q in measured},
        "valid": clean and len(recoveries) == len(loop["failures"]) > 0,
    }


def _rows(event: dict[str, Any], timer: dict[str, Any], settings: Settings) -> list[Row]:
    figures = event_figures(event)
    rows = []
    for quantile in ("p50", "p99"):
        measures = {}
        for wire in ("tls", "plain"):
            ours, naive = figures[f"{wire} ours"], figures[f"{wire} naive"]
            measures[wire] = Measure(
                ours[f"{quantile}_ms"],
                naive[f"{quantile}_ms"],
                ratio_override=None if ours["valid"] and naive["valid"] else math.nan,
            )
        metric = (
            f"time to recovery through an event (HTTP function, OBS; {settings.event_samples} "
            f"failures per side and transport): {quantile}"
        )
        rows.append(Row("recovery", metric, "ms", measures["tls"], measures["plain"]))
    for api in settings.timer_apis:
        loop = timer_figures(timer[api])
        for quantile in ("p50", "p99"):
            metric = (
                f"time to recovery through the timer sweep ({api.upper()}; T = "
                f"{settings.timer_interval:g} s for {STANDS_FOR / 60:g} min, {loop['samples']} "
                f"failures) vs its floor {_floor_words(quantile)}: {quantile}"
            )
            rows.append(
                Row(
                    "recovery",
                    metric,
                    "ms",
                    Measure(
                        loop["measured_s"][quantile] * 1000,
                        loop["floor_s"][quantile] * 1000,
                        ratio_override=None if loop["valid"] else math.nan,
                    ),
                )
            )
    return rows


def _floor_words(quantile: str) -> str:
    return "T/2 + sweep time" if quantile == "p50" else "0.99 T + sweep time"


def markdown(raw: dict[str, Any]) -> list[str]:
    """RESULTS.md's section on time to recovery: what the rows mean, and the projection."""
    settings = raw["settings"]
    figures = event_figures(raw["event"])
    lines = [
        "Both ends of every figure are the emulator's clock: the moment it made a running "
        "execution fail (its stop time) and the moment it accepted the restore.",
        "",
        "- **Event** (HTTP function, OBS): the event is POSTed the moment the flip is "
        "acknowledged (median "
        f"{figures['tls ours']['delivery_p50_ms']:.2f} ms after the failure), so this is the "
        "function's own time; an event source adds its delivery time on top. The ratio is "
        "ours ÷ the naive SDK function's own time from failure to accepted restore: above 1 "
        "is what auth, the dedupe claim, the budget and the log line cost before the restore "
        "is sent (over TLS the naive function also opens a connection per request).",
        "",
        "| timer loop | T (scale) | failures | sweep p50 / p99 | measured p50 / p99 | floor "
        "p50 / p99 | ratio p50 / p99 | at the real interval, p50 / p99 | left to a later "
        "sweep |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for api in settings["timer_apis"]:
        loop = timer_figures(raw["timer"][api])
        lines.append(
            f"| {api.upper()} | {loop['interval_s']:g} s (1:{loop['scale']:g}, "
            f"{STANDS_FOR / 60:g} min) | {loop['restored']}/{loop['samples']} | "
            f"{_ms(loop['sweep_s']['p50'])} / {_ms(loop['sweep_s']['p99'])} | "
            f"{_ms(loop['measured_s']['p50'])} / {_ms(loop['measured_s']['p99'])} | "
            f"{_ms(loop['floor_s']['p50'])} / {_ms(loop['floor_s']['p99'])} | "
            f"{loop['ratio']['p50']:.2f}x / {loop['ratio']['p99']:.2f}x | "
            f"{loop['projected_s']['p50']:.0f} s / {loop['projected_s']['p99']:.0f} s | "
            f"{loop['restored_by_a_later_sweep']} |"
        )
    lines += [
        "",
        "- **Timer**: a FunctionGraph event function in its own process, called with a TIMER "
        "event at a fixed rate (a warm instance; a cold one adds its cold start to the sweep "
        "time), while failures are injected at phases spread evenly over the interval (each "
        "at a different one, in random intervals). The floor of the "
        "p-th percentile is p/100 x T + the sweep's own time (for p50 the issue's T/2 + "
        "sweep time; the sweep time is the whole timer call, median for p50 and p99 for "
        "p99, so a failure reached early in a sweep can come in under the floor); ratio = "
        "measured ÷ floor: 1.0 means a failure waits for nothing but the timer and one "
        'sweep. "At the real interval" scales the waiting part back: (measured - sweep '
        'p50) x scale + sweep p50. "Left to a later sweep": failures the first sweep after '
        "them did not restore. With fewer than 100 failures the p99 is the slowest one.",
    ]
    return lines


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds >= 0.1 else f"{seconds * 1000:,.1f} ms"
