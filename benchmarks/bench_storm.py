"""A storm of failures across many graphs: what the shared rate and the per-graph breaker cost
and save, against the same storm with both turned off.

The day a shared downstream breaks, every graph fails at once. This section seeds
``Settings.failures`` failed executions spread over ``Settings.graphs`` graphs on the DWR
emulator (in this process, loopback HTTP) and drives the function in-process through
:class:`handler.runtime.Runtime` with timer sweeps, on one simulated clock that the
emulator, the store (SQLite) and the runtime share - so a storm that takes minutes of
rate-limited time runs in seconds, and the figures are the function's decisions, not the
machine's speed. Three figures, each for ours (rate + breaker on) and for the baseline (the
same storm with ``RESTORE_RATE_LIMIT=off`` and ``RESTORE_BREAKER_THRESHOLD=0``):

1. **time to drain**, healthy downstream: from the first sweep to the last accepted restore,
   in simulated seconds, against the ideal ``failures ÷ rate`` (target ≤ 1.10x of it);
2. **restore requests per failure**, healthy downstream: every restore request that reached
   the emulator ÷ failures (goal ≤ 1.02: nothing sent twice);
3. **restores wasted while it is broken** (``break_downstream(0)``: every restored run fails
   again at once): accepted restores per graph during a bounded broken period, split into
   the first wave (each execution's first restore: nothing had told the function yet that
   this execution would fail again) and the re-restores (the goal, ≤ threshold + canaries
   per graph, is held against the re-restores).

Every loop is bounded (``max_sweeps``); the clock stays within minutes of the real one
because the emulator refuses requests signed far from its own time.
"""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from common import ACCESS_KEY, PROJECT_ID, SECRET_KEY
from report import Measure, Row

from handler.devtools.emulator import DwrEmulator
from handler.invocation import Invocation
from handler.report import Reporter, configure_logging
from handler.runtime import Runtime
from handler.settings import load_settings
from handler.store import open_store
from handler.sweep import SweepRequest

EMULATOR_AHEAD = 0.005  # seconds; see _Storm
BASELINE_ENV = {"RESTORE_RATE_LIMIT": "off", "RESTORE_BREAKER_THRESHOLD": "0"}


@dataclass(frozen=True)
class Settings:
    graphs: int
    failures: int  # spread evenly over the graphs
    rate: str = "100/s"  # the shared rate for "ours"; the ideal drain is failures ÷ rate
    sweep_interval: float = 1.0  # simulated seconds between timer sweeps
    sweep_cap: int = 500  # RESTORE_SWEEP_MAX_RESTORES: over rate x interval: the rate decides
    broken_seconds: float = 120.0  # simulated time the downstream stays broken
    broken_interval: float = 2.0
    threshold: int = 5  # RESTORE_BREAKER_THRESHOLD (the default)
    cooldown: str = "20s"  # short: the whole run must stay near the real clock
    max_sweeps: int = 400


class SimulatedClock:
    """Wall-clock seconds near now that move when told to, and by a microsecond per read, so
    that what happens later in the code also happens later in time."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        self.now += 1e-6
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingDwr(DwrEmulator):
    """The DWR emulator, counting every restore request and noting each accepted one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests = 0
        self.accepted: list[tuple[float, str, str]] = []

    def _take_restore(self, graph: str, execution: str) -> Any:
        taken, restored, now = super()._take_restore(graph, execution)
        self.requests += 1
        if restored:
            self.accepted.append((now, graph, execution))
        return taken, restored, now


def run(settings: Settings, work_dir: Path) -> tuple[list[Row], dict[str, Any]]:
    """The healthy and the broken storm, each with ours and the baseline; rows and raw."""
    raw: dict[str, Any] = {"settings": asdict(settings)}
    for variant, env in (("ours", _ours_env(settings)), ("baseline", BASELINE_ENV)):
        raw[variant] = {
            "healthy": _healthy(settings, env, work_dir / f"storm-{variant}-healthy.db"),
            "broken": _broken(settings, env, work_dir / f"storm-{variant}-broken.db"),
        }
    raw["ideal_drain_seconds"] = settings.failures / _per_second(settings.rate)
    return _rows(settings, raw), raw


def _ours_env(settings: Settings) -> dict[str, str]:
    return {
        "RESTORE_RATE_LIMIT": settings.rate,
        "RESTORE_BREAKER_THRESHOLD": str(settings.threshold),
        "RESTORE_BREAKER_COOLDOWN": settings.cooldown,
    }


def _per_second(rate: str) -> float:
    count, unit = rate.split("/")
    return int(count) / {"s": 1, "m": 60, "h": 3600}[unit]


class _Storm:
    """One storm: a fresh emulator, store and runtime on one simulated clock."""

    def __init__(self, settings: Settings, env: dict[str, str], db: Path) -> None:
        self.settings, self.clock, self.log = settings, SimulatedClock(), io.StringIO()
        # The emulator's clock runs a few milliseconds ahead of the function's: a run that fails
        # again "at once" then stops after the moment the function recorded sending its
        # restore (timestamps have millisecond resolution), as it does with a real network
        # in between; without it a microsecond clock would make re-failures look older.
        self.emu = CountingDwr(
            {ACCESS_KEY: SECRET_KEY},
            project_id=PROJECT_ID,
            clock=lambda: self.clock() + EMULATOR_AHEAD,
        )
        self.emu.__enter__()
        self.store = open_store(f"sqlite:///{db}", clock=self.clock)
        runtime_settings = load_settings({
            "WORKFLOW_API": "dwr",
            "DWR_ENDPOINT": self.emu.url,
            "DWR_PROJECT_ID": PROJECT_ID,
            "OBS_ACCESS_KEY_ID": ACCESS_KEY,
            "OBS_SECRET_ACCESS_KEY": SECRET_KEY,
            "RESTORE_SWEEP_GRACE": "0",
            "RESTORE_SWEEP_MAX_RESTORES": str(settings.sweep_cap),
            **env,
        })  # fmt: skip
        reporter = Reporter(configure_logging("INFO", self.log))
        self.runtime = Runtime(runtime_settings, self.store, reporter, self.clock)
        self.names = self._seed()
        self.sweeps = 0
        self.wall = 0.0
        self._parsed: list[dict[str, Any]] = []
        self._parsed_to = 0

    def _seed(self) -> list[tuple[str, str]]:
        settings = self.settings
        stopped = datetime.fromtimestamp(self.clock() - 5 * 60, timezone.utc)  # before the storm
        names = [
            (f"graph-{n % settings.graphs:03d}", f"run-{n:05d}") for n in range(settings.failures)
        ]
        self.emu.seed_many(
            {"graph": g, "execution": e, "state": self.emu.FAILED, "stopped_at": stopped}
            for g, e in names
        )
        return names

    def sweep(self) -> dict[str, Any]:
        began = time.perf_counter()
        _, summary = self.runtime.sweep(
            SweepRequest(max_restores=self.settings.sweep_cap), Invocation(id=f"s{self.sweeps}")
        )
        self.wall += time.perf_counter() - began
        self.sweeps += 1
        return summary.document()

    def restored(self) -> int:
        return len({(g, e) for _, g, e in self.emu.accepted})

    def lines(self, message_start: str) -> list[dict[str, Any]]:
        # Parsed once each, as they come: the broken storm asks after every sweep, and
        # parsing the whole log again each time grew with the square of the storm.
        text = self.log.getvalue()
        end = text.rfind("\n", self._parsed_to) + 1
        self._parsed.extend(json.loads(line) for line in text[self._parsed_to : end].splitlines())
        self._parsed_to = max(self._parsed_to, end)
        return [line for line in self._parsed if line["message"].startswith(message_start)]

    def close(self) -> None:
        self.store.close()
        self.emu.__exit__(None, None, None)


def _healthy(settings: Settings, env: dict[str, str], db: Path) -> dict[str, Any]:
    storm = _Storm(settings, env, db)
    try:
        started = storm.clock.now
        errors = 0
        while storm.restored() < settings.failures and storm.sweeps < settings.max_sweeps:
            errors += len(storm.sweep()["errors"])
            storm.clock.advance(settings.sweep_interval)
        last = max((at for at, _, _ in storm.emu.accepted), default=started)
        return {
            "restored": storm.restored(),
            "drained": storm.restored() == settings.failures,
            "drain_seconds": last - started,
            "restore_requests": storm.emu.requests,
            "accepted": len(storm.emu.accepted),
            "requests_per_failure": storm.emu.requests / settings.failures,
            "sweeps": storm.sweeps,
            "sweep_errors": errors,
            "wall_seconds": storm.wall,
        }
    finally:
        storm.close()


def _broken(settings: Settings, env: dict[str, str], db: Path) -> dict[str, Any]:
    storm = _Storm(settings, env, db)
    try:
        storm.emu.break_downstream(0)  # every restored run fails again at once
        ends = storm.clock.now + settings.broken_seconds
        # Restores of each graph accepted when its breaker first opened: what came after are
        # its canaries (a sweep restores a graph's re-failures before it opens, never after).
        at_opening: dict[str, int] = {}
        while storm.clock.now < ends and storm.sweeps < settings.max_sweeps:
            storm.sweep()
            for line in storm.lines("breaker opened"):
                graph = line.get("graphName")
                if graph not in at_opening:
                    at_opening[graph] = sum(1 for _, g, _ in storm.emu.accepted if g == graph)
            storm.clock.advance(settings.broken_interval)
        per_execution = Counter((g, e) for _, g, e in storm.emu.accepted)
        per_graph = Counter(g for _, g, _ in storm.emu.accepted)
        first_wave = len(per_execution)
        re_restores = sum(per_execution.values()) - first_wave
        canaries = sum(per_graph[graph] - count for graph, count in at_opening.items())
        goal = settings.threshold * settings.graphs + canaries
        return {
            "accepted": len(storm.emu.accepted),
            "accepted_per_graph": len(storm.emu.accepted) / settings.graphs,
            "first_wave": first_wave,
            "re_restores": re_restores,
            "re_restores_per_graph": re_restores / settings.graphs,
            "graphs_opened": len(at_opening),
            "breaker_lines": {
                "opened": len(storm.lines("breaker opened")),
                "reopened": len(storm.lines("breaker reopened")),
                "closed": len(storm.lines("breaker closed")),
            },
            "canaries": canaries,
            "goal_per_graph": goal / settings.graphs,
            "re_restores_to_goal": re_restores / goal,
            "sweeps": storm.sweeps,
            "wall_seconds": storm.wall,
        }
    finally:
        storm.close()


def _rows(settings: Settings, raw: dict[str, Any]) -> list[Row]:
    ours, base = raw["ours"], raw["baseline"]
    ideal = raw["ideal_drain_seconds"]
    drain = ours["healthy"]["drain_seconds"] if ours["healthy"]["drained"] else float("nan")
    return [
        # Against the ideal: the ratio is ours ÷ (failures ÷ rate); the baseline column is the
        # unlimited storm's drain, shown for comparison.
        Row(
            "storm",
            f"time to drain {settings.failures:,} failures (simulated s; ratio to failures ÷ rate)",
            "s",
            Measure(drain, base["healthy"]["drain_seconds"], 1.10, ratio_override=drain / ideal),
            wire=False,
        ),
        Row(
            "storm",
            "restore requests per failure, healthy (ratio: ours ÷ 1)",
            "",
            Measure(
                ours["healthy"]["requests_per_failure"],
                base["healthy"]["requests_per_failure"],
                1.02,
                ratio_override=ours["healthy"]["requests_per_failure"],
            ),
            wire=False,
        ),
        Row(
            "storm",
            "re-restores per graph while broken (ratio: ÷ threshold + canaries per graph)",
            "",
            Measure(
                ours["broken"]["re_restores_per_graph"],
                base["broken"]["re_restores_per_graph"],
                1.00,
                ratio_override=ours["broken"]["re_restores_to_goal"],
            ),
            wire=False,
        ),
    ]


def markdown(raw: dict[str, Any]) -> list[str]:
    """RESULTS.md's section: the three figures, ours against the baseline, and the scale."""
    settings, ours, base = raw["settings"], raw["ours"], raw["baseline"]
    oh, bh, ob, bb = ours["healthy"], base["healthy"], ours["broken"], base["broken"]
    return [
        f"{settings['failures']:,} failures across {settings['graphs']} graphs, DWR emulator, "
        f"SQLite state, timer sweeps every {settings['sweep_interval']:g} simulated s (cap "
        f"{settings['sweep_cap']}); ours: `RESTORE_RATE_LIMIT={settings['rate']}`, threshold "
        f"{settings['threshold']}, cooldown {settings['cooldown']}; baseline: "
        "`RESTORE_RATE_LIMIT=off`, `RESTORE_BREAKER_THRESHOLD=0`. Broken: "
        f"`break_downstream(0)` for {settings['broken_seconds']:g} simulated s, a sweep every "
        f"{settings['broken_interval']:g} s.",
        "",
        "| figure | ours | baseline | goal |",
        "|---|---|---|---|",
        f"| time to drain, healthy (simulated s) | {oh['drain_seconds']:.1f} "
        f"({oh['drain_seconds'] / raw['ideal_drain_seconds']:.2f}x ideal) | "
        f"{bh['drain_seconds']:.1f} | ideal {raw['ideal_drain_seconds']:.1f} s "
        "(failures ÷ rate), ≤ 1.10x |",
        f"| restore requests per failure, healthy | {oh['requests_per_failure']:.3f} | "
        f"{bh['requests_per_failure']:.3f} | ≤ 1.02 |",
        f"| restores accepted while broken, per graph | {ob['accepted_per_graph']:.2f} | "
        f"{bb['accepted_per_graph']:.2f} | - |",
        f"| of which first restores (first wave), per graph | "
        f"{ob['first_wave'] / settings['graphs']:.2f} | "
        f"{bb['first_wave'] / settings['graphs']:.2f} | - |",
        f"| re-restores while broken, per graph | {ob['re_restores_per_graph']:.2f} | "
        f"{bb['re_restores_per_graph']:.2f} | ≤ threshold + canaries per graph = "
        f"{ob['goal_per_graph']:.2f} |",
        "",
        f"Breaker while broken: {ob['graphs_opened']} graphs opened, "
        f"{ob['breaker_lines']['reopened']} reopenings, {ob['canaries']} canaries restored after "
        "an opening (the systemic hold, `RESTORE_BREAKER_GLOBAL` = 3 by default, holds the "
        "graphs that did not open themselves). Wall time "
        f"of the sweeps: healthy {oh['wall_seconds']:.1f} s ours / {bh['wall_seconds']:.1f} s "
        f"baseline, broken {ob['wall_seconds']:.1f} s / {bb['wall_seconds']:.1f} s.",
    ]
