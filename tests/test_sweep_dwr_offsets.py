"""DWR's list offset stops at 1000: the sweep still reaches every failure in the lookback.

DWR documents its list ``offset`` as 1-1000 and the emulator refuses more, as the service
does; a page holds at most 200, so one time window reaches 1,199 failures. A graph with more
(permission errors left alone pile up exactly like this) is listed by splitting the window
in two by time until each part fits. The function runs through its FunctionGraph timer
entry point against the emulator, at the real page size.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from handler.devtools.emulator import DwrEmulator
from tests.conftest import AK, SK
from tests.test_entry_events import FunctionGraphContext

PROJECT = "0123456789abcdef0123456789abcdef"
REACHABLE_IN_ONE_WINDOW = 1000 - 1 + 200  # the last offset, and the page it starts


@pytest.fixture
def emu():
    with DwrEmulator({AK: SK}, project_id=PROJECT) as emulator:
        yield emulator


@pytest.fixture
def sweep(emu, load_function, function_env):
    """``sweep(**env)`` runs one timer sweep against the emulator; returns its document."""
    del function_env["OBS_ENDPOINT"]
    function_env.update(
        WORKFLOW_API="dwr",
        DWR_ENDPOINT=emu.url,
        DWR_PROJECT_ID=PROJECT,
        LOG_LEVEL="ERROR",
        RESTORE_SWEEP_MAX_RESTORES="10000",
        RESTORE_RATE_LIMIT="off",  # thousands restored in one sweep: no outage here
        RESTORE_STATE_URL="memory://",
    )

    def run(user_event: str = "", **env: str) -> dict:
        function_env.update(env)
        event = {"trigger_type": "TIMER", "trigger_name": "sweep", "user_event": user_event}
        return load_function().handler(
            event, FunctionGraphContext(remaining_ms=600_000, agency=None)
        )

    return run


def seed_failures(
    emu,
    count: int,
    *,
    graph: str = "graph-1",
    prefix: str = "run",
    age: timedelta = timedelta(minutes=1),
    same_second: bool = False,
    error: str | None = None,
) -> list:
    """``count`` failures that started ``age`` ago and before, 5 s apart (or all in the same
    second), and failed 30 s ago; their names."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    names = [f"{prefix}-{i:05d}" for i in range(count)]
    emu.seed_many(
        {
            "graph": graph,
            "execution": name,
            "started_at": now - age - timedelta(seconds=0 if same_second else 5 * i),
            "stopped_at": now - timedelta(seconds=30),
            "error_message": error,
        }
        for i, name in enumerate(names)
    )
    return names


def list_calls(emu) -> list:
    return [call for call in emu.calls if call.method == "GET" and call.execution is None]


# Permission errors are left alone (they would fail again at once); everything else restores.
LEAVE_PERMISSIONS = json.dumps(
    {"rules": [{"name": "permissions", "leave_on": ["permission"]}, {"name": "rest"}]}
)


def test_failures_newer_than_a_pile_of_left_alone_ones_are_restored(emu, sweep):
    """1,300 permission errors, left alone, fill more than the offsets reach (the list is
    oldest first); the 40 failures after them are found and restored all the same."""
    left_alone = seed_failures(
        emu, 1_300, prefix="left", age=timedelta(minutes=10), error="permission denied: bucket"
    )
    newer = seed_failures(emu, 40, prefix="new")
    summary = sweep(RESTORE_POLICY=LEAVE_PERMISSIONS)["sweep"]
    assert summary["errors"] == [] and summary["stopped"] is None
    assert summary["failuresFound"] == 1_340
    assert summary["outcomes"] == {"skipped": 1_300, "restored": 40}
    assert {name: emu.restores("graph-1", name) for name in newer} == dict.fromkeys(newer, 1)
    assert not any(emu.restores("graph-1", name) for name in left_alone)
    # Every list call was answered: no offset past 1000 was ever asked for.
    assert {call.status for call in list_calls(emu)} == {200}


def test_a_graph_with_more_failures_than_offsets_reach_has_every_one_restored_once(emu, sweep):
    names = seed_failures(emu, 1_250)
    summary = sweep()["sweep"]
    assert summary["errors"] == [] and summary["outcomes"] == {"restored": 1_250}
    assert {name: emu.restores("graph-1", name) for name in names} == dict.fromkeys(names, 1)


def test_thousands_of_failures_are_all_found_over_many_split_windows(emu, sweep):
    seed_failures(emu, 3_000)
    seed_failures(emu, 5, graph="graph-2")  # the next graph is reached too
    both = json.dumps({"graphs": ["graph-1", "graph-2"]})
    summary = sweep(both, RESTORE_SWEEP_MAX_RESTORES="1")["sweep"]
    assert summary["errors"] == []
    assert summary["failuresFound"] == 3_005  # each once, though windows overlap at their edges
    assert summary["waitingForNextSweep"] == 3_004
    assert {call.status for call in list_calls(emu)} == {200}


def test_more_failures_started_in_one_second_than_offsets_reach_are_named_in_errors(emu, sweep):
    seed_failures(emu, 1_300, same_second=True, age=timedelta(hours=2))
    seed_failures(emu, 3, graph="graph-2")
    both = json.dumps({"graphs": ["graph-1", "graph-2"]})
    summary = sweep(both, RESTORE_SWEEP_MAX_RESTORES="1")["sweep"]
    (error,) = summary["errors"]
    assert (error["graph"], error["errorCode"]) == ("graph-1", "WindowTooDense")
    assert "within one second" in error["message"]
    # As many as the offsets reach (one more for the one restored, which left the list),
    # and graph-2 was swept.
    assert REACHABLE_IN_ONE_WINDOW + 3 <= summary["failuresFound"] < 1_300 + 3


def test_a_truncated_page_without_a_next_offset_goes_on_by_position(emu, sweep):
    names = seed_failures(emu, 5)
    with emu._lock:  # the emulator's own rows for the first two, as its list shows them
        first_two = [  # the list is oldest first: the last two seeded
            emu._summary("graph-1", name, emu._by_graph["graph-1"][name]) for name in names[:-3:-1]
        ]
    page = {"count": 5, "is_truncated": True, "executions": first_two}  # no next_offset
    emu.faults_for(graph="graph-1", operation="list").fail_next(1, 200, body=page)
    summary = sweep()["sweep"]
    assert summary["errors"] == []
    assert summary["outcomes"] == {"restored": 5}
    assert {name: emu.restores("graph-1", name) for name in names} == dict.fromkeys(names, 1)


def test_an_empty_truncated_page_without_a_next_offset_is_named_in_errors(emu, sweep):
    seed_failures(emu, 3)
    page = {"count": 3, "is_truncated": True, "executions": []}
    emu.faults_for(graph="graph-1", operation="list").fail_next(1, 200, body=page)
    summary = sweep()["sweep"]
    (error,) = summary["errors"]
    assert (error["graph"], error["errorCode"]) == ("graph-1", "NoNextMarker")
