"""``make demo``: the whole job end to end on loopback, with no cloud account.

``make demo`` shows it on the DWR v3 API, the one an account opened today has, and ``make demo
API=obs`` (``--api obs``) on the OBS workflow API - the same story, as the function tells both
apart only by its settings:

1. start the workflow emulator with one failed execution;
2. start the function exactly as deployed (functions-framework, SQLite state, an auth token);
3. send a realistic EventGrid failure event to its URL and show the answer and the log line;
4. show the execution is running again;
5. send the same event again: the function answers ``duplicate`` and calls nothing;
6. stop everything it started.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from handler.devtools.emulator import EMULATORS
from handler.entry.serve import serve_command

GRAPH, EXECUTION = "nightly-etl", "run-20261127-0200"
ACCESS_KEY, SECRET_KEY = "DEMOACCESSKEY", "demo-secret-key"
PROJECT_ID = "0123456789abcdef0123456789abcdef"  # the DWR project the demo's workflows live in
WHY_IT_FAILED = "transcode-videos: ffmpeg exited with status 1"
AUTH_TOKEN = "demo-auth-token"  # noqa: S105 - a loopback demo value
START_TIMEOUT = 30.0

FAILURE_EVENT = {"events": [{
    "specversion": "1.0",
    "id": "5f0c7a2e-0f4e-4c39-9d1b-7d7c2b1e9a01",
    "source": "HC.OBS",
    "type": "com.huaweicloud.obs.workflow.execution.failed",
    "subject": f"{GRAPH}/{EXECUTION}",
    "time": "2026-11-27T02:14:09Z",
    "datacontenttype": "application/json",
    "data": {
        "execution_urn": f"urn:fgs:cn-north-4:0123456789abcdef:execution:{GRAPH}:{EXECUTION}:"
                         "fedcba9876543210",
        "execution_state": "FAILED",
        "failed_state": "transcode-videos",
    },
}]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the demo; 0 when every step showed what it should."""
    parser = argparse.ArgumentParser(prog="python -m handler.devtools.demo", description=__doc__)
    parser.add_argument("--api", choices=sorted(EMULATORS), default="dwr", help="default: dwr")
    api = parser.parse_args(argv).api
    started = time.monotonic()
    emulator_class, service = EMULATORS[api], api.upper()
    with (
        tempfile.TemporaryDirectory(prefix="obs-workflow-restore-demo-") as workdir,
        emulator_class({ACCESS_KEY: SECRET_KEY}, project_id=PROJECT_ID) as emulator,
    ):
        emulator.seed(GRAPH, EXECUTION, emulator.FAILED, error_message=WHY_IT_FAILED)
        step(
            1,
            f"{service} emulator on {emulator.url}: {GRAPH}/{EXECUTION} is "
            f"{emulator.state(GRAPH, EXECUTION)}",
        )
        settings = _api_settings(api, emulator.url)
        with Function(settings, Path(workdir) / "state.db") as function:
            step(2, f"function listening on {function.url} (functions-framework, SQLite state)")
            step(3, "EventGrid delivers the failure event")
            first = function.deliver(FAILURE_EVENT)
            show_answer(first, function.log_lines())
            state = emulator.state(GRAPH, EXECUTION)
            step(4, f"the execution is now {state}")
            step(5, "EventGrid delivers the same event again (at-least-once delivery)")
            second = function.deliver(FAILURE_EVENT)
            show_answer(second, function.log_lines())
            restores = emulator.restores(GRAPH, EXECUTION)
        step(6, f"stopped. {service} saw {restores} restore call(s) for two deliveries.")
    ok = (
        outcome_of(first) == "restored"
        and state == emulator.RUNNING
        and outcome_of(second) == "duplicate"
        and restores == 1
    )
    took = time.monotonic() - started  # from the emulator's start to everything stopped
    print(f"\ndemo {'succeeded' if ok else 'FAILED'} in {took:.1f} s")
    return 0 if ok else 1


def _api_settings(api: str, url: str) -> dict[str, str]:
    """The settings that point the function at the emulator's API (handler/settings.py): the
    endpoint setting alone chooses the API, as in a deployment."""
    if api == "dwr":
        return {"DWR_ENDPOINT": url, "DWR_PROJECT_ID": PROJECT_ID}
    return {"OBS_ENDPOINT": url}


class Function:
    """The HTTP function in its own functions-framework process, as it is deployed."""

    def __init__(self, api_settings: dict[str, str], state_file: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self._env = {
            **_inherited_environment(),
            "LOG_LEVEL": "INFO",  # the demo shows the function's item log lines
            **api_settings,
            "OBS_ACCESS_KEY_ID": ACCESS_KEY,
            "OBS_SECRET_ACCESS_KEY": SECRET_KEY,
            "RESTORE_AUTH_TOKEN": AUTH_TOKEN,
            "RESTORE_STATE_URL": f"sqlite:///{state_file}",
        }
        self._lines: queue.Queue[str] = queue.Queue()
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> Function:
        self._process = subprocess.Popen(  # noqa: S603 - our own, fixed command line
            serve_command("127.0.0.1", self.port),
            env=self._env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._collect, daemon=True).start()
        self._wait_until_ready()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)

    def deliver(self, event: dict[str, Any]) -> requests.Response:
        return requests.post(
            self.url, json=event, timeout=30, headers={"Authorization": f"Bearer {AUTH_TOKEN}"}
        )

    def log_lines(self, settle: float = 0.3) -> list[dict[str, Any]]:
        """The item log lines the function printed since the last call."""
        deadline = time.monotonic() + settle
        lines = []
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.05)
            except queue.Empty:
                continue
            try:
                document = json.loads(line)
            except ValueError:
                continue
            if document.get("outcome"):
                lines.append(document)
        return lines

    def _collect(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line)

    def _wait_until_ready(self) -> None:
        give_up = time.monotonic() + START_TIMEOUT
        while time.monotonic() < give_up:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError("the function exited during start-up")
            try:
                requests.get(self.url, timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError(f"the function did not start within {START_TIMEOUT:g}s")


# What the function reads (handler/settings.py), what functions-framework reads, and the
# K_SINK a Knative shell may carry: the demo sets what it needs and must not pick up the rest
# from the caller's shell (a RESTORE_STATE_URL, RESTORE_DRY_RUN or FUNCTION_TARGET there would
# change or break it).
_NOT_INHERITED_PREFIXES = (
    "RESTORE_",
    "OBS_",
    "DWR_",
    "WORKFLOW_",
    "HUAWEICLOUD_SDK_",
    "FUNCTION_",
    "EMULATOR_",
)
_NOT_INHERITED = frozenset({"K_SINK", "LOG_LEVEL", "AccessKeyID", "SecretAccessKey", "WORKERS"})


def _inherited_environment() -> dict[str, str]:
    """The caller's environment (PATH, locale, proxies, ...) without any setting of ours."""
    return {
        name: value
        for name, value in os.environ.items()
        if name not in _NOT_INHERITED and not name.startswith(_NOT_INHERITED_PREFIXES)
    }


def step(number: int, text: str) -> None:
    print(f"\n[{number}] {text}", flush=True)


def show_answer(response: requests.Response, lines: list[dict[str, Any]]) -> None:
    print(f"    HTTP {response.status_code}")
    print(indent(json.dumps(response.json(), indent=2)))
    for line in lines:
        print("    log line:")
        print(indent(json.dumps(line)))


def outcome_of(response: requests.Response) -> str | None:
    results = response.json().get("results") or [{}]
    return results[0].get("outcome")


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
