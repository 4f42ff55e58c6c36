"""The sweep end to end: a FunctionGraph timer event against the emulator, both APIs.

Unlike tests/test_sweep.py (a stand-in on pytest-httpserver), the service here is the
project's emulator: signed requests checked, marker and offset paging as each API pages,
executions that really change state, restore counts per execution, faults on list calls.
Page sizes are shrunk so failures spread over many pages while the test stays quick.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from handler.client import dwr as dwr_client
from handler.client import obs as obs_client
from handler.devtools.emulator import DwrEmulator, Emulator
from tests.conftest import AK, SK
from tests.test_entry_events import FunctionGraphContext

PROJECT = "0123456789abcdef0123456789abcdef"
GRAPHS, PER_GRAPH = 20, 150
PAGE_SIZE = {"obs": 40, "dwr": 10}  # OBS lists every state, DWR only failures


@pytest.fixture(params=["obs", "dwr"])
def api(request) -> str:
    return request.param


@pytest.fixture
def emu(api):
    emulator = (Emulator if api == "obs" else DwrEmulator)({AK: SK}, project_id=PROJECT)
    with emulator:
        yield emulator


@pytest.fixture
def sweeper(api, emu, load_function, function_env, monkeypatch):
    """The function loaded against the emulator; ``sweep(context=None) -> document``."""
    for module, name in ((obs_client, "obs"), (dwr_client, "dwr")):
        monkeypatch.setattr(module, "FAILURE_PAGE_SIZE", PAGE_SIZE[name])
    if api == "obs":
        function_env["OBS_ENDPOINT"] = emu.url
    else:
        del function_env["OBS_ENDPOINT"]
        function_env.update(WORKFLOW_API="dwr", DWR_ENDPOINT=emu.url, DWR_PROJECT_ID=PROJECT)
    function_env.update(LOG_LEVEL="WARNING", RESTORE_SWEEP_MAX_RESTORES="10000")

    def factory(**env):
        function_env.update(env)
        main = load_function()

        def sweep(context=None) -> dict:
            event = {
                "version": "v1.0",
                "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "trigger_type": "TIMER",
                "trigger_name": "sweep",
                "user_event": "",
            }
            return main.handler(event, context or FunctionGraphContext(agency=None))

        return sweep

    return factory


def seed(emu, graphs=GRAPHS, per_graph=PER_GRAPH) -> tuple[set, list]:
    """A fifth failed (a quarter of those long ago), the rest succeeded or still running.

    Returns the failures inside the 24h lookback and every execution seeded.
    """
    now = datetime.now(timezone.utc)
    failed, succeeded, running = emu.FAILED, emu.state_word("SUCCESS"), emu.RUNNING
    inside, entries = set(), []
    for g in range(graphs):
        graph = f"graph-{g:02d}"
        for i in range(per_graph):
            name = f"run-{i:03d}"
            entry = {
                "graph": graph,
                "execution": name,
                "execution_type": ("APICALL", "TRIGGERCAL")[i % 2],
            }
            if i % 5 == 0:
                age = timedelta(hours=30) if i % 20 == 0 else timedelta(minutes=10 + i)
                entry.update(
                    state=failed, started_at=now - age - timedelta(minutes=5), stopped_at=now - age
                )
                if i % 20:
                    inside.add((graph, name))
            else:
                stopped = now - timedelta(minutes=i)
                if i % 3:
                    entry.update(
                        state=succeeded,
                        started_at=stopped - timedelta(minutes=1),
                        stopped_at=stopped,
                    )
                else:
                    entry.update(state=running, started_at=stopped)
            entries.append(entry)
    emu.seed_many(entries)
    return inside, [(e["graph"], e["execution"]) for e in entries]


def restore_counts(emu, executions) -> dict:
    return {key: emu.restores(*key) for key in executions if emu.restores(*key)}


def test_a_timer_restores_every_failure_in_the_window_exactly_once(emu, sweeper, api):
    inside, everything = seed(emu)
    assert len(inside) == 440  # 22 of each graph's 30 failures, over many pages
    stale = sorted(inside)[:25]
    stop_times = {
        (graph, name): next(
            e["stopped_at"] for e in emu_summaries(emu, graph) if e["execution_name"] == name
        )
        for graph, name in stale
    }
    # Every sweep lists every graph: the third must see the stale answers of graphs whose
    # listing found nothing (quiet listings are tests/test_sweep_quiet.py's).
    sweep = sweeper(RESTORE_SWEEP_QUIET_INTERVAL="0")
    summary = sweep()["sweep"]

    assert restore_counts(emu, everything) == dict.fromkeys(inside, 1)
    assert summary["outcomes"] == {"restored": len(inside)}
    assert (summary["graphsScanned"], summary["errors"], summary["stopped"]) == (GRAPHS, [], None)
    assert summary["failuresFound"] == len(inside)
    if api == "obs":  # every execution listed, 40 a page: 4 pages a graph
        assert (summary["executionsListed"], summary["pages"]) == (GRAPHS * PER_GRAPH, GRAPHS * 4)
    else:  # the server filters failures started in the window, 10 a page
        assert summary["pages"] == GRAPHS * 3

    again = sweep()["sweep"]
    assert (again["failuresFound"], again["outcomes"]) == (0, {})
    # A list answer that is stale (the old failures shown failed again, same stop time) is
    # the same failure: not restored a second time.
    for graph, name in stale:
        emu.seed(graph, name, emu.FAILED, stopped_at=stop_times[graph, name])
    third = sweep()["sweep"]
    assert third["failuresFound"] == len(stale) and "restored" not in third["outcomes"], third
    assert restore_counts(emu, everything) == dict.fromkeys(inside, 1)


def test_one_sweep_restores_every_failure_of_a_graph_listed_over_several_pages(
    emu, sweeper, api, request
):
    """The smallest case of the skip: one graph, 25 failures, 10 a DWR page."""
    now = datetime.now(timezone.utc)
    emu.seed_many(
        {
            "graph": "graph-1",
            "execution": f"run-{i:02d}",
            "stopped_at": now - timedelta(minutes=i + 1),
        }
        for i in range(25)
    )
    summary = sweeper()()["sweep"]
    assert summary["outcomes"] == {"restored": 25}, summary


def emu_summaries(emu, graph):
    """The emulator's own list entries for a graph (as its list answer shows them)."""
    with emu._lock:
        return [emu._summary(graph, name, e) for name, e in emu._by_graph[graph].items()]


def test_a_graph_whose_listing_fails_is_reported_and_the_others_swept(emu, sweeper):
    inside, everything = seed(emu, graphs=4, per_graph=40)
    emu.faults_for(graph="graph-02", operation="list").fail_next(5, 503)
    sweep = sweeper(OBS_MAX_ATTEMPTS="2")
    summary = sweep()["sweep"]
    (error,) = summary["errors"]
    assert (error["graph"], error["status"]) == ("graph-02", 503)
    swept = {key for key in inside if key[0] != "graph-02"}
    assert restore_counts(emu, everything) == dict.fromkeys(swept, 1)
    assert summary["graphsScanned"] == 4

    emu.clear_faults()
    assert sweep()["sweep"]["errors"] == []
    assert restore_counts(emu, everything) == dict.fromkeys(inside, 1)


def test_a_failing_graph_list_is_reported_and_nothing_restored(emu, sweeper):
    _, everything = seed(emu, graphs=2, per_graph=20)
    emu.faults_for(operation="list_graphs").fail_next(1, 403)
    summary = sweeper()()["sweep"]
    (error,) = summary["errors"]
    assert (error["graph"], error["status"]) == (None, 403)
    assert restore_counts(emu, everything) == {}


def test_the_restore_cap_defers_the_rest_to_the_next_sweeps(emu, sweeper):
    inside, everything = seed(emu, graphs=3, per_graph=40)  # 18 failures in the window
    sweep = sweeper(RESTORE_SWEEP_MAX_RESTORES="7")
    waiting, restored = [], []
    for _ in range(3):
        summary = sweep()["sweep"]
        waiting.append(summary["waitingForNextSweep"])
        restored.append(summary["outcomes"].get("restored", 0))
    assert restored == [7, 7, 4]
    assert waiting == [11, 4, 0]
    assert restore_counts(emu, everything) == dict.fromkeys(inside, 1)


def test_the_deadline_cuts_a_sweep_off_and_the_next_one_goes_on(emu, sweeper):
    inside, everything = seed(emu, graphs=4, per_graph=40)
    sweep = sweeper()
    emu.latency(0.02)  # every call takes a while: the short invocation runs out of time
    # 3.6 s left: 1 s margin and 2 s reserve leave about 0.6 s for listing and restoring.
    short = sweep(FunctionGraphContext(remaining_ms=3_600, agency=None))["sweep"]
    assert short["stopped"] == "deadline"
    done = restore_counts(emu, everything)
    assert len(done) < len(inside) and set(done.values()) <= {1}
    emu.latency(0)
    rest = sweep()["sweep"]
    assert rest["stopped"] is None
    assert rest["outcomes"].get("restored") == len(inside) - len(done)
    assert restore_counts(emu, everything) == dict.fromkeys(inside, 1)
