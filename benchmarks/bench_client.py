"""Per-restore client cost: our client against the official SDK's, over TLS and plain HTTP.

Two comparisons, each in one process against emulator processes (one serving HTTPS with a
throwaway certificate every client verifies, one plain HTTP):

* OBS: our ``WorkflowClient`` against ``esdk-obs-python``'s ``WorkflowClient`` (a
  process-wide singleton, built once; it opens a new connection - over TLS a new handshake -
  per call: that is its design);
* DWR: our ``DwrClient`` against ``huaweicloudsdkdwr``'s ``DwrClient`` (built once; it keeps
  its ``requests`` session alive too).

Every client is built once per transport. Each side has its own graph so the emulator's
counters tell their calls apart. Calls come in rounds; within a round every (transport,
side) pair runs once, in an order that rotates between rounds, so slow drift of the machine
(other work on it) hits all alike; each round restores fresh failed executions. Reported: the
median over rounds of (ours per call / the SDK's per call) for wall time - what a caller
waits - and, for information, CPU time of this process - what the client itself computes
while the emulator works in its own process.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from common import ACCESS_KEY, PROJECT_ID, SECRET_KEY, median
from emulator_process import EmulatorProcess
from report import Measure, Row

SIDES = ("ours", "sdk")
TARGETS = {  # wall-time ratio targets: (TLS, plain)
    "obs": (0.20, 0.85),
    "dwr": (0.50, None),
}
RESTORE_METHOD = {"obs": "PUT", "dwr": "POST"}


@dataclass(frozen=True)
class Settings:
    rounds: int
    calls_per_round: int
    warmup_calls: int


def run(
    settings: Settings, emulators: dict[str, EmulatorProcess], api: str
) -> tuple[list[Row], dict[str, Any]]:
    """``emulators`` maps ``"tls"`` and ``"plain"`` to emulators of ``api`` (obs or dwr)."""
    graphs = {side: f"client-{api}-{side}" for side in SIDES}
    clients = {
        (wire, side): _side(api, side, emulator)
        for wire, emulator in emulators.items()
        for side in SIDES
    }
    for (wire, side), client in clients.items():
        warmup = emulators[wire].fresh(graphs[side], settings.warmup_calls)
        _timed_calls(client, graphs[side], warmup)
    for emulator in emulators.values():
        emulator.calls()  # start counting after the warm-up
    pairs = list(clients)
    orders = list(itertools.permutations(pairs))
    rounds: dict[tuple[str, str], list[dict[str, float]]] = {pair: [] for pair in pairs}
    for index in range(settings.rounds):
        order = orders[(index * 7) % len(orders)]  # rotate: no pair is always first or last
        names = {
            (wire, side): emulators[wire].fresh(graphs[side], settings.calls_per_round)
            for wire, side in order
        }
        for pair in order:
            rounds[pair].append(_timed_calls(clients[pair], graphs[pair[1]], names[pair]))
    for client in clients.values():
        client.close()
    served = {wire: emulator.calls() for wire, emulator in emulators.items()}
    valid = {
        wire: _all_restored(rounds, wire, served[wire]["calls"], graphs, RESTORE_METHOD[api])
        for wire in emulators
    }
    return _rows(api, rounds, valid), _raw(settings, rounds, served, valid)


class Side:
    """One client on one emulator: ``restore(execution, graph) -> accepted?``.

    ``prepare`` runs before every timed batch, outside the timing; ``close`` at the end.
    """

    def __init__(self, restore: Callable[[str, str], bool], close: Callable[[], None]) -> None:
        self.restore, self.close = restore, close

    def prepare(self) -> None:
        """Nothing for a client built once."""


class ObsSdkSide(Side):
    """The OBS SDK's client for one emulator, built again (untimed) before each batch.

    The SDK's ``WorkflowClient`` is a process-wide singleton: building the second one (for
    the other emulator) re-points the first at the other server. Building it again before a
    batch - outside the timed part - keeps each batch on its own emulator.
    """

    def __init__(self, emulator: EmulatorProcess) -> None:
        super().__init__(self._restore, self._close)
        self._emulator = emulator
        self._client: Any = None

    def prepare(self) -> None:
        from obs import WorkflowClient as SdkWorkflowClient

        self._client = SdkWorkflowClient(
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            server=self._emulator.url,
            ssl_verify=self._emulator.ca_bundle or False,
        )

    @property
    def client(self) -> Any:
        return self._client

    def _restore(self, execution: str, graph: str) -> bool:
        return self._client.restoreFailedWorkflowExecution(execution, graph).status == 200

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()


def _side(api: str, side: str, emulator: EmulatorProcess) -> Side:
    if api == "obs" and side == "ours":
        from handler.client import WorkflowClient

        ours = WorkflowClient(
            ACCESS_KEY, SECRET_KEY, server=emulator.url, verify=emulator.ca_bundle or True
        )
        return Side(
            lambda e, g: ours.restoreFailedWorkflowExecution(e, g).status == 200, ours.close
        )
    if api == "obs":
        return ObsSdkSide(emulator)
    if side == "ours":
        from handler.client import DwrClient

        dwr = DwrClient(
            ACCESS_KEY, SECRET_KEY, PROJECT_ID, emulator.url, verify=emulator.ca_bundle or True
        )
        return Side(lambda e, g: dwr.restoreFailedWorkflowExecution(e, g).status == 200, dwr.close)
    from huaweicloudsdkdwr.v3 import RestoreWorkflowExecutionRequest

    client = dwr_sdk_client(emulator)

    def restore(execution: str, graph: str) -> bool:
        request = RestoreWorkflowExecutionRequest(execution_name=execution, graph_name=graph)
        return client.restore_workflow_execution(request).status_code == 200

    return Side(restore, client.close)


def dwr_sdk_client(emulator: EmulatorProcess) -> Any:
    """The official DWR client for an emulator; over TLS it verifies the emulator's CA."""
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.http.http_config import HttpConfig
    from huaweicloudsdkdwr.v3 import DwrClient as SdkDwrClient

    config = HttpConfig.get_default_config()
    config.ignore_ssl_verification = False
    if emulator.ca_bundle:
        config.ssl_ca_cert = emulator.ca_bundle
    return (
        SdkDwrClient.new_builder()
        .with_credentials(BasicCredentials(ACCESS_KEY, SECRET_KEY, PROJECT_ID))
        .with_endpoints([emulator.url])
        .with_http_config(config)
        .build()
    )


def _timed_calls(client: Side, graph: str, names: list[str]) -> dict[str, float]:
    """Restore each execution once; per-call wall and CPU time, and how many were accepted."""
    client.prepare()
    restore, restored = client.restore, 0
    wall, cpu = time.perf_counter(), time.process_time()
    for name in names:
        if restore(name, graph):
            restored += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    calls = len(names)
    return {
        "calls": calls,
        "ok": restored,
        "wall_ms": wall / calls * 1e3,
        "cpu_ms": cpu / calls * 1e3,
    }


def _all_restored(
    rounds: dict[tuple[str, str], list[dict[str, float]]],
    wire: str,
    served: dict[str, int],
    graphs: dict[str, str],
    method: str,
) -> bool:
    """Every call answered 200, by the client's account and by the emulator's."""
    for side in SIDES:
        results = rounds[(wire, side)]
        calls = sum(r["calls"] for r in results)
        if sum(r["ok"] for r in results) != calls:
            return False
        if served.get(f"{graphs[side]} {method} 200", 0) != calls:
            return False
    return True


def _rows(
    api: str, rounds: dict[tuple[str, str], list[dict[str, float]]], valid: dict[str, bool]
) -> list[Row]:
    rows = []
    sdk = "esdk-obs-python" if api == "obs" else "huaweicloudsdkdwr"
    for key, label in (("wall_ms", "wall time"), ("cpu_ms", "CPU in the client's process")):
        measures = {}
        for wire in ("tls", "plain"):
            ours, theirs = rounds[(wire, "ours")], rounds[(wire, "sdk")]
            ratios = [o[key] / s[key] for o, s in zip(ours, theirs, strict=True)]
            limit = TARGETS[api][0 if wire == "tls" else 1] if key == "wall_ms" else None
            measures[wire] = Measure(
                median([r[key] for r in ours]),
                median([r[key] for r in theirs]),
                limit,
                ratio_override=median(ratios) if valid[wire] else float("nan"),
            )
        calls = sum(r["calls"] for r in rounds[("tls", "ours")])
        metric = (
            f"{api.upper()} client {label} per restore vs `{sdk}` "
            f"({calls:,} calls per side and transport; median of per-round ratios)"
        )
        rows.append(Row(f"client-{api}", metric, "ms", measures["tls"], measures["plain"]))
    return rows


def _raw(
    settings: Settings,
    rounds: dict[tuple[str, str], list[dict[str, float]]],
    served: dict[str, Any],
    valid: dict[str, bool],
) -> dict[str, Any]:
    return {
        "settings": asdict(settings),
        "all_calls_restored": valid,
        "rounds": {f"{wire} {side}": results for (wire, side), results in rounds.items()},
        "emulator_answers": {wire: answer["calls"] for wire, answer in served.items()},
        "emulator_connections_opened": {wire: a["connections"] for wire, a in served.items()},
    }
