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

``make demo SCENARIO=outage`` (``--scenario outage``) shows outage mode instead: a downstream
every restored run needs is broken, so many executions of one graph fail, are restored, and fail
again; the breaker opens and holds the rest, a canary finds the downstream fixed, the breaker
closes and every held failure is restored once (:func:`outage_story`). ``make demo
SCENARIO=give-up`` (DWR) shows an execution whose restore budget is spent, and the give-up
message the function publishes to the operators' SMN topic (:func:`give_up_story`).
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
    parser = argparse.ArgumentParser(
        prog="python -m handler.devtools.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--api", choices=sorted(EMULATORS), default="dwr", help="default: dwr")
    parser.add_argument(
        "--scenario", choices=sorted(SCENARIOS), default="restore", help="default: restore"
    )
    arguments = parser.parse_args(argv)
    started = time.monotonic()
    ok = SCENARIOS[arguments.scenario](arguments.api)
    took = time.monotonic() - started  # from the emulator's start to everything stopped
    print(f"\ndemo {'succeeded' if ok else 'FAILED'} in {took:.1f} s")
    return 0 if ok else 1


def restore_story(api: str) -> bool:
    """One failure restored once, its redelivery answered ``duplicate``."""
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
    return (
        outcome_of(first) == "restored"
        and state == emulator.RUNNING
        and outcome_of(second) == "duplicate"
        and restores == 1
    )


# Outage mode in well under a minute: the shortest cooldown the settings allow (10 s) to the
# canary and as long again to its judgement; a threshold of 3 re-failures opens the breaker.
OUTAGE_EXECUTIONS = 12
OUTAGE_SETTINGS = {
    "RESTORE_BREAKER_THRESHOLD": "3",
    "RESTORE_BREAKER_COOLDOWN": "10s",
    "RESTORE_RATE_LIMIT": "off",  # the breaker alone holds the storm here
    "RESTORE_SWEEP_GRACE": "0",  # a sweep may pick up a failure the moment it is seen
}
SWEEP_EVERY = 1.0  # seconds between the demo's POST /sweep (a timer trigger's, made short)
RECOVERY_TIMEOUT = 45.0  # canary (10 s) + judgement (10 s) + the held failures, with margin


def outage_story(api: str) -> bool:
    """Outage mode on a broken downstream: what the breaker holds, and what it saves."""
    emulator_class, service = EMULATORS[api], api.upper()
    names = [f"run-{n:02d}" for n in range(1, OUTAGE_EXECUTIONS + 1)]
    with (
        tempfile.TemporaryDirectory(prefix="obs-workflow-restore-demo-") as workdir,
        emulator_class({ACCESS_KEY: SECRET_KEY}, project_id=PROJECT_ID) as emulator,
    ):
        for name in names:
            emulator.seed(GRAPH, name, emulator.FAILED, error_message=WHY_IT_FAILED)
        emulator.break_downstream(0, name="warehouse-db")  # every restored run fails again
        step(
            1,
            f"{service} emulator on {emulator.url}: {len(names)} executions of {GRAPH} failed; "
            "its downstream warehouse-db is broken, so every restored run fails again",
        )
        settings = {**_api_settings(api, emulator.url), **OUTAGE_SETTINGS}
        with Function(settings, Path(workdir) / "state.db") as function:
            step(
                2,
                f"function listening on {function.url}; "
                + ", ".join(f"{k}={v}" for k, v in OUTAGE_SETTINGS.items()),
            )
            first = [outcome_of(function.deliver(failure_event(name, "first"))) for name in names]
            function.records()
            step(3, f"first wave, {len(names)} failure events: {counted(first)}")
            refailed = failed_count(emulator, names)
            print(f"    every restored run failed again on warehouse-db: {refailed} failed")
            second_answers = [function.deliver(failure_event(name, "again")) for name in names]
            second = [outcome_of(answer) for answer in second_answers]
            opened = [r for r in function.records() if "breaker opened" in str(r.get("message"))]
            step(4, f"second wave, {len(names)} failure events again: {counted(second)}")
            for record in opened:
                print(f"    {record.get('level')} {record.get('message')}")
            # The breaker's hold, not the watch's (the one re-failure it holds before the
            # opening): it is what the rest of the story is about.
            deferred = [a for a in second_answers if outcome_of(a) == "deferred"]
            held = next((a for a in deferred if reason_of(a).startswith("breaker open")), None)
            if held is not None:
                print(f"    a deferred answer says: {reason_of(held)}")
            while_broken = total_restores(emulator, names)
            before_fix = {name: emulator.restores(GRAPH, name) for name in names}
            emulator.fix_downstream()
            step(5, f"warehouse-db is fixed; {service} saw {while_broken} restores while broken")
            step(6, f"a sweep every {SWEEP_EVERY:g} s (POST /sweep) until every run is running")
            closed = recover(function, emulator, names)
            after_fix = {name: emulator.restores(GRAPH, name) - before_fix[name] for name in names}
        running = sum(emulator.state(GRAPH, name) == emulator.RUNNING for name in names)
        once_each = all(count == 1 for count in after_fix.values())
        # Without a breaker every failure event is answered with a restore into the outage.
        without_breaker = len(first) + len(second)
        step(
            7,
            f"stopped. {running} of {len(names)} running; after the fix each was restored "
            f"{'exactly once' if once_each else 'NOT exactly once: ' + str(after_fix)}.",
        )
        print(
            f"    restores sent while warehouse-db was broken: {while_broken} with the breaker, "
            f"{without_breaker} without one (one per failure event, and more with every "
            "further failure)"
        )
    return (
        opened != []
        and held is not None
        and closed
        and running == len(names)
        and once_each
        and while_broken < without_breaker
    )


def recover(function: Function, emulator: Any, names: list[str]) -> bool:
    """Sweep until every run is running (bounded); True when the breaker was seen to close.

    While the breaker is open or half-open it lets one restore through, the canary, so a
    restore logged before the ``breaker closed`` line is the canary's."""
    closed = False
    released: list[str] = []
    give_up = time.monotonic() + RECOVERY_TIMEOUT
    while time.monotonic() < give_up:
        time.sleep(SWEEP_EVERY)
        function.sweep()
        for record in function.records(settle=0.1):
            message = str(record.get("message") or "")
            if "breaker closed" in message:
                closed = True
                print(f"    {record.get('level')} {message}")
            elif record.get("outcome") == "restored" and not closed:
                print(
                    f"    canary: {record.get('executionName')} restored, judged a cooldown later"
                )
            elif record.get("outcome") == "restored":
                released.append(str(record.get("executionName")))
        if all(emulator.state(GRAPH, name) == emulator.RUNNING for name in names):
            print(f"    held failures restored: {len(released)} ({', '.join(sorted(released))})")
            return closed
    print(f"    not every run was running within {RECOVERY_TIMEOUT:g} s")
    return closed


def failure_event(execution: str, delivery: str) -> dict[str, Any]:
    """An EventGrid failure event for one execution of the demo's graph."""
    body = json.loads(json.dumps(FAILURE_EVENT))
    event = body["events"][0]
    event["id"] = f"{delivery}-{execution}"
    event["subject"] = f"{GRAPH}/{execution}"
    event["data"]["execution_urn"] = (
        f"urn:fgs:cn-north-4:0123456789abcdef:execution:{GRAPH}:{execution}:fedcba9876543210"
    )
    return body


def counted(outcomes: list[str | None]) -> str:
    return ", ".join(f"{outcomes.count(o)} {o}" for o in dict.fromkeys(outcomes))


def failed_count(emulator: Any, names: list[str]) -> int:
    return sum(emulator.state(GRAPH, name) == emulator.FAILED for name in names)


def total_restores(emulator: Any, names: list[str]) -> int:
    return sum(emulator.restores(GRAPH, name) for name in names)


def reason_of(response: requests.Response) -> str:
    results = response.json().get("results") or [{}]
    return str(results[0].get("reason") or results[0].get("message") or results[0])


TOPIC = "workflow-restore-alerts"
PUBLISH_TIMEOUT = 10.0  # the message is sent at the end of the invocation, in bounded time


def give_up_story(api: str) -> bool:
    """An execution that fails again once its budget (here 1 restore) is spent: the function
    gives up and tells the operators' SMN topic, which the DWR emulator serves."""
    if api != "dwr":
        print("the give-up scenario needs --api dwr: the DWR emulator serves SMN", file=sys.stderr)
        return False
    with (
        tempfile.TemporaryDirectory(prefix="obs-workflow-restore-demo-") as workdir,
        EMULATORS[api]({ACCESS_KEY: SECRET_KEY}, project_id=PROJECT_ID, topics=[TOPIC]) as emulator,
    ):
        topic_urn = emulator.topic_urn(TOPIC)
        emulator.seed(GRAPH, EXECUTION, emulator.FAILED, error_message=WHY_IT_FAILED)
        step(1, f"DWR emulator on {emulator.url}, serving SMN topic {topic_urn} too")
        extra = {
            "RESTORE_MAX_RESTORES": "1",  # one restore, so the second failure spends the budget
            "RESTORE_NOTIFY_TOPIC_URN": topic_urn,
            "SMN_ENDPOINT": emulator.url,
        }
        settings = {**_api_settings(api, emulator.url), **extra}
        with Function(settings, Path(workdir) / "state.db") as function:
            step(
                2, f"function on {function.url}; " + ", ".join(f"{k}={v}" for k, v in extra.items())
            )
            first = outcome_of(function.deliver(failure_event(EXECUTION, "first")))
            function.records()
            step(3, f"the failure event is answered {first}; then the run fails again")
            emulator.seed(GRAPH, EXECUTION, emulator.FAILED, error_message=WHY_IT_FAILED)
            second = function.deliver(failure_event(EXECUTION, "again"))
            show_answer(second, function.log_lines())
            published = wait_for_publish(emulator, topic_urn)
        step(4, f"SMN topic {TOPIC} received {len(published)} message(s)")
        for message in published:
            print(f"    subject: {message.subject}")
            print(indent(message.text() or ""))
    return first == "restored" and outcome_of(second) == "budget_exhausted" and len(published) == 1


def wait_for_publish(emulator: Any, topic_urn: str) -> list[Any]:
    """The topic's messages once one arrived, or none after PUBLISH_TIMEOUT (bounded)."""
    give_up = time.monotonic() + PUBLISH_TIMEOUT
    while time.monotonic() < give_up:
        published = emulator.publishes(topic_urn)
        if published:
            time.sleep(0.5)  # a second one, if the function sent one, shows in the count
            return emulator.publishes(topic_urn)
        time.sleep(0.1)
    return []


SCENARIOS = {"restore": restore_story, "outage": outage_story, "give-up": give_up_story}


def _api_settings(api: str, url: str) -> dict[str, str]:
    """The settings that point the function at the emulator's API (handler/settings.py): the
    endpoint setting alone chooses the API, as in a deployment."""
    if api == "dwr":
        return {"DWR_ENDPOINT": url, "DWR_PROJECT_ID": PROJECT_ID}
    return {"OBS_ENDPOINT": url}


class Function:
    """The HTTP function in its own functions-framework process, as it is deployed."""

    def __init__(
        self, api_settings: dict[str, str], state_file: Path, extra: dict[str, str] | None = None
    ) -> None:
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
            **(extra or {}),
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

    def sweep(self) -> requests.Response:
        """``POST /sweep``, as the timer trigger's sweep would run."""
        return requests.post(
            f"{self.url}sweep",
            json={},
            timeout=60,
            headers={"Authorization": f"Bearer {AUTH_TOKEN}"},
        )

    def log_lines(self, settle: float = 0.3) -> list[dict[str, Any]]:
        """The item log lines the function printed since the last call."""
        return [line for line in self.records(settle) if line.get("outcome")]

    def records(self, settle: float = 0.3) -> list[dict[str, Any]]:
        """Every JSON log line the function printed since the last call (items, breaker)."""
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
            if isinstance(document, dict):
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
