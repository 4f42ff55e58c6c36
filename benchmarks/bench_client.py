"""Per-restore client cost: our ``WorkflowClient`` against the official SDK's.

Both clients run in this process against the same emulator process, each on its own graph so
the emulator's counters tell their calls apart. The calls come in rounds that alternate which
client goes first, so slow drift of the machine hits both alike; each round restores fresh
FAILED executions (a second restore of one would be a 409, not a restore). Reported: the
median over rounds of (our time per call / the SDK's time per call), for wall time - what a
caller waits - and, for information, CPU time of this process - what the client itself
computes while the emulator runs in its own process.

Our client is built once and keeps its connection alive; the SDK's is a process-wide
singleton, also built once (it opens a new connection per call: that is its design).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from common import ACCESS_KEY, SECRET_KEY, median
from emulator_process import EmulatorProcess
from report import Row

GRAPHS = {"ours": "client-ours", "sdk": "client-sdk"}


@dataclass(frozen=True)
class Settings:
    rounds: int
    calls_per_round: int
    warmup_calls: int


def run(settings: Settings, emulator: EmulatorProcess) -> tuple[list[Row], dict[str, Any]]:
    clients = _clients(emulator.url)
    for side, client in clients.items():
        _timed_calls(client, GRAPHS[side], emulator.fresh(GRAPHS[side], settings.warmup_calls))
    emulator.calls()  # start counting after the warm-up
    rounds: dict[str, list[dict[str, float]]] = {"ours": [], "sdk": []}
    for index in range(settings.rounds):
        order = ("ours", "sdk") if index % 2 == 0 else ("sdk", "ours")
        names = {side: emulator.fresh(GRAPHS[side], settings.calls_per_round) for side in order}
        for side in order:
            rounds[side].append(_timed_calls(clients[side], GRAPHS[side], names[side]))
    clients["ours"].close()
    served = emulator.calls()
    valid = _all_restored(rounds, served["calls"])
    return _rows(rounds, valid), _raw(settings, rounds, served, valid)


def _clients(url: str) -> dict[str, Any]:
    from obs import WorkflowClient as SdkWorkflowClient

    from handler.client import WorkflowClient

    return {
        "ours": WorkflowClient(ACCESS_KEY, SECRET_KEY, server=url),
        "sdk": SdkWorkflowClient(
            access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY, server=url
        ),
    }


def _timed_calls(client: Any, graph: str, names: list[str]) -> dict[str, float]:
    """Restore each execution once; per-call wall and CPU time, and how many answered 200."""
    restored = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for name in names:
        if client.restoreFailedWorkflowExecution(name, graph).status == 200:
            restored += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    calls = len(names)
    return {
        "calls": calls,
        "ok": restored,
        "wall_ms": wall / calls * 1e3,
        "cpu_ms": cpu / calls * 1e3,
    }


def _all_restored(rounds: dict[str, list[dict[str, float]]], served: dict[str, int]) -> bool:
    """Every call answered 200, by the client's account and by the emulator's."""
    for side, results in rounds.items():
        calls = sum(r["calls"] for r in results)
        if sum(r["ok"] for r in results) != calls:
            return False
        if served.get(f"{GRAPHS[side]} PUT 200", 0) != calls:
            return False
    return True


def _rows(rounds: dict[str, list[dict[str, float]]], valid: bool) -> list[Row]:
    rows = []
    labels = (
        ("wall_ms", "wall time per restore", 0.8),
        ("cpu_ms", "CPU per restore in the client's process", None),
    )
    for key, label, limit in labels:
        ratios = [o[key] / s[key] for o, s in zip(rounds["ours"], rounds["sdk"], strict=True)]
        ours = median([r[key] for r in rounds["ours"]])
        sdk = median([r[key] for r in rounds["sdk"]])
        calls = sum(r["calls"] for r in rounds["ours"])
        row = Row(
            "client",
            f"client {label} ({calls:,} calls each; median of per-round ratios)",
            ours,
            sdk,
            "ms",
            limit,
            ratio_override=median(ratios) if valid else float("nan"),
        )
        rows.append(row)
    return rows


def _raw(
    settings: Settings,
    rounds: dict[str, list[dict[str, float]]],
    served: dict[str, Any],
    valid: bool,
) -> dict[str, Any]:
    return {
        "settings": asdict(settings),
        "all_calls_restored": valid,
        "rounds": rounds,
        "ratios_wall": [
            o["wall_ms"] / s["wall_ms"] for o, s in zip(rounds["ours"], rounds["sdk"], strict=True)
        ],
        "ratios_cpu": [
            o["cpu_ms"] / s["cpu_ms"] for o, s in zip(rounds["ours"], rounds["sdk"], strict=True)
        ],
        "emulator_answers": served["calls"],
        "emulator_connections_opened": served["connections"],
    }
