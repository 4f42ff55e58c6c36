"""Cold start: from spawning a fresh process to holding the first restore result.

* FunctionGraph event entry: a fresh interpreter imports ``handler.main`` and calls
  ``handler({"graphName", "executionName"}, None)`` (SQLite state in a new directory, as on a
  new instance); the baseline imports the SDK, builds its ``WorkflowClient`` and restores.
* HTTP entry: spawn ``functions-framework --source ... --target restore`` and POST the
  restore until the first answer arrives; the baseline is the naive SDK function served the
  same way, with the same gunicorn settings.
* The floor of the event entry: a fresh interpreter that imports ``requests`` and sends one
  signed restore with it, nothing else (``floor_function.FLOOR_EVENT``). No function built on
  ``requests``, which the design card keeps, can start faster, so its ratio to the SDK is the
  lower bound of ours, measured in the same run.

Times are taken by this process, from just before the spawn to reading the result, so they
include the interpreter's own start-up (the same for both). Every run restores a fresh FAILED
execution and must end in a restore, else it counts as failed. Ours and the baseline
alternate, and the median is reported.
"""

from __future__ import annotations

import http.client
import json
import queue
import subprocess
import tempfile
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
    PYTHON,
    ROOT,
    function_env,
    median,
    sdk_env,
    server_env,
)
from emulator_process import EmulatorProcess
from floor_function import FLOOR_EVENT
from report import Measure, Row
from servers import FunctionServer

MARKER = "BENCH-RESULT "
RUN_TIMEOUT = 60.0
POLL_INTERVAL = 0.005
GRAPHS = {"ours": "cold-ours", "sdk": "cold-sdk", "floor": "cold-floor"}

FUNCTIONGRAPH_OURS = """
import json, os, time
began = time.perf_counter()
from handler.main import handler
event = {"graphName": os.environ["BENCH_GRAPH"], "executionName": os.environ["BENCH_EXECUTION"]}
result = handler(event, None)
outcome = result["results"][0]["outcome"]
ok = result["statusCode"] == 200 and outcome == "restored"
inside = time.perf_counter() - began
print("BENCH-RESULT " + json.dumps({"ok": ok, "detail": outcome, "inside_s": inside}), flush=True)
"""

FUNCTIONGRAPH_SDK = """
import json, os, time
began = time.perf_counter()
from obs import WorkflowClient
client = WorkflowClient(access_key_id=os.environ["OBS_ACCESS_KEY_ID"],
                        secret_access_key=os.environ["OBS_SECRET_ACCESS_KEY"],
                        server=os.environ["OBS_ENDPOINT"],
                        ssl_verify=os.environ.get("OBS_CA_BUNDLE") or False)
response = client.restoreFailedWorkflowExecution(os.environ["BENCH_EXECUTION"],
                                                 os.environ["BENCH_GRAPH"])
ok = response.status == 200
inside = time.perf_counter() - began
print("BENCH-RESULT " + json.dumps({"ok": ok, "detail": response.status, "inside_s": inside}),
      flush=True)
"""


@dataclass(frozen=True)
class Settings:
    functiongraph_runs: int  # per side
    http_runs: int  # per side


def run(
    settings: Settings, emulators: dict[str, EmulatorProcess], work_dir: Path
) -> tuple[list[Row], dict[str, Any]]:
    """``emulators`` maps ``"tls"`` and ``"plain"`` to OBS emulators."""
    event = _alternate(
        settings.functiongraph_runs,
        emulators,
        lambda side, emu: _functiongraph(side, emu),
        ("ours", "sdk", "floor"),
    )
    served_event = {wire: emu.calls()["calls"] for wire, emu in emulators.items()}
    web = _alternate(settings.http_runs, emulators, lambda side, emu: _http(side, emu, work_dir))
    served_web = {wire: emu.calls()["calls"] for wire, emu in emulators.items()}
    rows = [
        _row("FunctionGraph event entry: fresh process → first restore result", event, 0.8),
        _row(
            "the floor of that entry: a bare `requests` restore, fresh process → result",
            event,
            None,
            side="floor",
        ),
        _row("HTTP entry: spawn functions-framework → first restore answer", web, None),
    ]
    raw = {
        "settings": asdict(settings),
        "functiongraph": event,
        "http": web,
        "emulator_answers": {"functiongraph": served_event, "http": served_web},
    }
    return rows, raw


def _alternate(
    runs: int,
    emulators: dict[str, EmulatorProcess],
    measure: Any,
    sides: tuple[str, ...] = ("ours", "sdk"),
) -> dict[str, list[dict[str, Any]]]:
    """Every (transport, side) once per run, the order rotating between runs."""
    jobs = [(wire, side) for wire in emulators for side in sides]
    results: dict[str, list[dict[str, Any]]] = {f"{wire} {side}": [] for wire, side in jobs}
    for index in range(runs):
        shift = index % len(jobs)
        for wire, side in jobs[shift:] + jobs[:shift]:
            results[f"{wire} {side}"].append(measure(side, emulators[wire]))
    return results


def _row(
    metric: str,
    results: dict[str, list[dict[str, Any]]],
    limit: float | None,
    side: str = "ours",
) -> Row:
    """``side`` (ours, or the floor) against the SDK, each the median of its runs."""
    measures = {}
    for wire in ("tls", "plain"):
        runs = results[f"{wire} {side}"] + results[f"{wire} sdk"]
        valid = all(run["ok"] for run in runs)
        measures[wire] = Measure(
            median([run["seconds"] * 1000 for run in results[f"{wire} {side}"]]),
            median([run["seconds"] * 1000 for run in results[f"{wire} sdk"]]),
            limit,
            ratio_override=None if valid else float("nan"),
        )
    return Row("cold start", metric, "ms", measures["tls"], measures["plain"])


def _functiongraph(side: str, emulator: EmulatorProcess) -> dict[str, Any]:
    """One fresh interpreter running the event entry (or the SDK) once."""
    graph = GRAPHS[side]
    (execution,) = emulator.fresh(graph, 1)
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as state_dir:
        if side == "ours":
            env = function_env(emulator.url, state_dir, emulator.ca_bundle)
        else:
            env = sdk_env(emulator.url, emulator.ca_bundle)
        env.update(BENCH_GRAPH=graph, BENCH_EXECUTION=execution)
        script = {"ours": FUNCTIONGRAPH_OURS, "sdk": FUNCTIONGRAPH_SDK, "floor": FLOOR_EVENT}[side]
        began = time.perf_counter()
        process = subprocess.Popen(
            [PYTHON, "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        try:
            line = _first_marked_line(process, RUN_TIMEOUT)
            seconds = time.perf_counter() - began
        finally:
            _finish(process)
    result = json.loads(line[len(MARKER) :])
    return {"seconds": seconds, **result}


def _first_marked_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The child's result line, read as soon as it is written (the child may log before it)."""
    lines: queue.Queue[str] = queue.Queue()

    def collect() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(MARKER):
                lines.put(line)
        lines.put("")

    threading.Thread(target=collect, daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        raise RuntimeError(f"no result within {timeout:g}s") from None
    if not line:
        raise RuntimeError(f"the process exited without a result (exit code {process.wait()})")
    return line


def _finish(process: subprocess.Popen[str]) -> None:
    try:
        process.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _http(side: str, emulator: EmulatorProcess, work_dir: Path) -> dict[str, Any]:
    """Spawn a server, POST until the first answer; the time from spawn to that answer."""
    graph = GRAPHS[side]
    (execution,) = emulator.fresh(graph, 1)
    body = json.dumps({"graphName": graph, "executionName": execution}).encode()
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as state_dir:
        if side == "ours":
            env, source = function_env(emulator.url, state_dir, emulator.ca_bundle), OUR_SOURCE
        else:
            env, source = sdk_env(emulator.url, emulator.ca_bundle), NAIVE_SOURCE
        server = FunctionServer(
            f"cold {side}", source, server_env(env), work_dir / f"cold-http-{side}.log"
        )
        began = time.perf_counter()
        server.start()
        try:
            status, answer = _post_until_answered(server, body, began + RUN_TIMEOUT)
            seconds = time.perf_counter() - began
        finally:
            server.stop()
    document = json.loads(answer)
    if side == "ours":
        detail = document["results"][0]["outcome"] if document.get("results") else None
        ok = status == 200 and detail == "restored"
    else:
        detail = document.get("status")
        ok = status == 200 and detail == 200
    return {"seconds": seconds, "ok": ok, "detail": detail, "http_status": status}


def _post_until_answered(server: FunctionServer, body: bytes, give_up: float) -> tuple[int, bytes]:
    """POST the restore, retrying only while nothing listens yet (refused: no side effect)."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {AUTH_TOKEN}"}
    while time.perf_counter() < give_up:
        server.check_alive()
        connection = http.client.HTTPConnection(LOOPBACK, server.port, timeout=RUN_TIMEOUT)
        try:
            connection.request("POST", "/", body=body, headers=headers)
            answer = connection.getresponse()
            return answer.status, answer.read()
        except ConnectionRefusedError:
            time.sleep(POLL_INTERVAL)
        finally:
            connection.close()
    raise RuntimeError(f"{server.name} gave no answer within {RUN_TIMEOUT:g}s")
