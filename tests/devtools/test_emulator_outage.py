"""The emulator's broken downstream, on both APIs: every restored execution fails again a
chosen time after its restore, naming the downstream, until the emulator is fixed."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from handler.client import DwrClient, RetrySchedule, WorkflowClient
from handler.devtools.emulator import DwrEmulator, Emulator, main
from handler.devtools.emulator.cli import _emulator_from_args, _parser

AK = "AK-outage-test"
SK = "SK-outage-test-secret-0123456789"
PROJECT = "0123456789abcdef0123456789abcdef"
GRAPH = "nightly-etl"
REPO = Path(__file__).resolve().parents[2]


class ShiftedClock:
    """The real clock, moved forward by the test: a moment ahead comes without waiting (less
    than the 15 minutes of date skew the emulator accepts)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def make(api: str, **options):
    if api == "dwr":
        return DwrEmulator({AK: SK}, project_id=PROJECT, **options)
    return Emulator({AK: SK}, **options)


def client_for(api: str, emu):
    if api == "dwr":
        return DwrClient(AK, SK, PROJECT, emu.url, retry=RetrySchedule(max_attempts=1))
    return WorkflowClient(
        access_key_id=AK, secret_access_key=SK, server=emu.url, retry=RetrySchedule(max_attempts=1)
    )


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture(params=["obs", "dwr"])
def api(request) -> str:
    return request.param


def test_a_broken_downstream_fails_every_restored_execution_again_naming_it(api):
    emu = make(api)
    for n in range(3):
        emu.seed(GRAPH, f"run-{n}")
    emu.break_downstream(0, name="orders-db")
    with emu, client_for(api, emu) as client:
        for round_ in (1, 2):  # the restore loop an outage makes
            for n in range(3):
                assert client.restoreFailedWorkflowExecution(f"run-{n}", GRAPH).status == 200
                assert emu.state(GRAPH, f"run-{n}") == emu.FAILED  # before the answer came
                assert emu.restores(GRAPH, f"run-{n}") == round_
        queried = client.getWorkflowExecution("run-0", GRAPH).body
        assert queried.executionState == "FAILED"
        if api == "dwr":  # the OBS API shows no error text
            assert queried.errorMessages == (
                "downstream orders-db unavailable: connection refused",
            )
    status = emu.downstream
    assert (status.name, status.broken, status.failed, status.passed) == ("orders-db", True, 6, 0)


def test_once_fixed_at_the_chosen_moment_restored_runs_go_on(api):
    clock = ShiftedClock()
    emu = make(api, clock=clock)
    emu.seed(GRAPH, "run-1")
    emu.break_downstream(0, fixed_at=clock() + 600)
    with emu, client_for(api, emu) as client:
        assert client.restoreFailedWorkflowExecution("run-1", GRAPH).status == 200
        assert emu.state(GRAPH, "run-1") == emu.FAILED
        clock.offset = 600  # the chosen moment has come
        assert emu.downstream.broken is False
        assert client.restoreFailedWorkflowExecution("run-1", GRAPH).status == 200
        assert emu.state(GRAPH, "run-1") == emu.RUNNING
        assert client.getWorkflowExecution("run-1", GRAPH).body.executionState == "RUNNING"
    assert (emu.downstream.failed, emu.downstream.passed) == (1, 1)


def test_a_run_fails_when_it_reaches_the_downstream_seconds_after_its_restore(api):
    clock = ShiftedClock()
    emu = make(api, clock=clock)
    emu.seed(GRAPH, "run-1")
    emu.seed(GRAPH, "run-2")
    emu.break_downstream(0.2, fixed_at=clock() + 600)
    with emu, client_for(api, emu) as client:
        assert client.restoreFailedWorkflowExecution("run-1", GRAPH).status == 200
        assert wait_for(lambda: emu.downstream.failed == 1)
        assert emu.state(GRAPH, "run-1") == emu.FAILED
        info = emu._executions[(GRAPH, "run-1")]
        assert info.stopped - info.restored >= 0.2
        # A run restored before the fix that reaches the downstream after it goes on.
        emu.break_downstream(1.0, fixed_at=clock() + 600)
        assert client.restoreFailedWorkflowExecution("run-2", GRAPH).status == 200
        clock.offset = 600
        assert wait_for(lambda: emu.downstream.passed == 1)
        assert emu.state(GRAPH, "run-2") == emu.RUNNING


def test_the_downstream_decides_before_the_after_restore_transition(api):
    succeed = "success" if api == "dwr" else "SUCCESS"
    emu = make(api, after_restore=(succeed, 0))
    emu.seed(GRAPH, "run-1")
    emu.break_downstream(0)
    with emu, client_for(api, emu) as client:
        assert client.restoreFailedWorkflowExecution("run-1", GRAPH).status == 200
        assert emu.state(GRAPH, "run-1") == emu.FAILED
        emu.fix_downstream()
        assert client.restoreFailedWorkflowExecution("run-1", GRAPH).status == 200
        assert emu.state(GRAPH, "run-1") == succeed  # fixed: the run ends as it would have


def test_a_broken_downstream_is_validated_and_cannot_be_fixed_before_it_broke(api):
    emu = make(api)
    assert emu.downstream is None
    with pytest.raises(ValueError, match="break_downstream"):
        emu.fix_downstream()
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="fails_after"):
            emu.break_downstream(bad)
    with pytest.raises(ValueError, match="name"):
        emu.break_downstream(0, name="")


# --- the command line -------------------------------------------------------------------------


def test_the_cli_fixes_the_downstream_the_chosen_seconds_after_start():
    before = time.time()
    args = _parser().parse_args(
        ["--access-key", AK, "--secret-key", SK, "--broken-downstream", "2", "--fixed-after", "60"]
    )
    emulator = _emulator_from_args(args)
    after = time.time()
    status = emulator.downstream
    assert (status.fails_after, status.name, status.broken) == (2.0, "shared-database", True)
    assert before + 60 <= status.fixed_at <= after + 60
    never = _emulator_from_args(
        _parser().parse_args(["--access-key", AK, "--secret-key", SK, "--broken-downstream", "0"])
    )
    assert never.downstream.fixed_at is None


@pytest.mark.parametrize(
    "flags",
    [
        ["--fixed-after", "5"],
        ["--broken-downstream", "-1"],
        ["--broken-downstream", "1", "--fixed-after", "-2"],
    ],
)
def test_the_cli_refuses_bad_downstream_flags(capsys, flags):
    assert main(["--port", "0", "--access-key", AK, "--secret-key", SK, *flags]) == 2
    error = capsys.readouterr().err
    assert "downstream" in error or "fixed-after" in error
    assert SK not in error


def test_the_cli_serves_a_broken_downstream_on_the_dwr_api():
    command = [sys.executable, "-m", "handler.devtools.emulator", "--api", "dwr", "--port", "0"]
    command += ["--access-key", AK, "--project-id", PROJECT, "--execution", f"{GRAPH}/run-1"]
    command += ["--broken-downstream", "0", "--downstream", "orders-db"]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env={**os.environ, "EMULATOR_SECRET_ACCESS_KEY": SK},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        line = [""]
        reader = threading.Thread(target=lambda: line.__setitem__(0, process.stdout.readline()))
        reader.start()
        reader.join(timeout=30)
        with DwrClient(AK, SK, PROJECT, line[0].strip()) as client:
            assert client.restoreFailedWorkflowExecution("run-1", GRAPH).status == 200
            body = client.getWorkflowExecution("run-1", GRAPH).body
            assert body.status == "fail"
            assert body.errorMessages == ("downstream orders-db unavailable: connection refused",)
        process.terminate()
        process.communicate(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
