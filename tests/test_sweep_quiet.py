"""Quiet listings (handler/pipeline/quiet.py): a graph whose listing found no failure is
listed again at its next slot, not by every sweep - and no failure inside the lookback is
missed for it.

The service is the project's emulator (both APIs) on a simulated clock shared with the
runtime and the store, so a schedule of hours of sweeps runs in a fraction of a second; list
calls that answer 503 are the emulator's faults. The property test draws random schedules of
failures (graph, stop time, how late the list shows them) and sweeps (times, list calls
answering 503, the list of graphs answering 503) and checks the guarantee of the module:
every failure is found by a sweep whenever some sweep in ``[shown + interval, stop +
lookback]`` got an answer for its graph.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from handler.devtools.emulator import DwrEmulator, Emulator
from handler.invocation import Invocation
from handler.pipeline.quiet import interval_for, next_slot
from handler.report import Reporter, configure_logging
from handler.runtime import Runtime
from handler.settings import SettingsError, load_settings
from handler.store import open_store
from handler.sweep import SweepRequest
from tests.conftest import AK, SK

PROJECT = "0123456789abcdef0123456789abcdef"
HOUR = 3600.0
# Simulated time starts well before the real clock: DWR's list window ends a minute after the
# real now, and every simulated moment here stays before it.
START = time.time() - 10 * 86400


class SimulatedClock:
    """Wall-clock seconds that move only when told to."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def advance_to(self, moment: float) -> None:
        self.now = max(self.now, moment)


class Harness:
    """The runtime over an emulator of one API, a memory store and one simulated clock."""

    def __init__(self, api: str, **env: str) -> None:
        self.clock = SimulatedClock()
        kind = Emulator if api == "obs" else DwrEmulator
        # Requests are dated by the real clock: the simulated one is days behind it.
        self.emu = kind({AK: SK}, project_id=PROJECT, clock=self.clock, max_skew=30 * 86400)
        self.emu.start()
        self.store = open_store("memory://", clock=self.clock)
        endpoint = (
            {"OBS_ENDPOINT": self.emu.url}
            if api == "obs"
            else {"WORKFLOW_API": "dwr", "DWR_ENDPOINT": self.emu.url, "DWR_PROJECT_ID": PROJECT}
        )
        self.settings = load_settings(
            {
                **endpoint,
                "OBS_ACCESS_KEY_ID": AK,
                "OBS_SECRET_ACCESS_KEY": SK,
                "OBS_MAX_ATTEMPTS": "1",  # a 503 ends the listing at once: no retry sleeps
                "RESTORE_SWEEP_GRACE": "0",
                "RESTORE_RATE_LIMIT": "off",
                "RESTORE_BREAKER_THRESHOLD": "0",
                "RESTORE_SWEEP_MAX_RESTORES": "10000",
                **env,
            }
        )
        reporter = Reporter(configure_logging("WARNING", io.StringIO()))
        self.runtime = Runtime(self.settings, self.store, reporter, self.clock)

    def close(self) -> None:
        self.runtime.close()
        self.store.close()
        self.emu.stop()

    def graphs(self, count: int) -> list[str]:
        """``count`` graphs, each with two succeeded runs (OBS lists every state)."""
        names = [f"graph-{n}" for n in range(count)]
        for graph in names:
            for run in ("ok-1", "ok-2"):
                self.emu.seed(graph, run, self.emu.state_word("SUCCESS"))
        return names

    def sweep(self, request: SweepRequest | None = None) -> dict:
        request = request or SweepRequest.from_settings(self.settings)
        _, summary = self.runtime.sweep(request, Invocation(id="sweep"))
        return summary.document()

    def listed(self) -> dict[str, int]:
        """List calls per graph since the last look (a query names an execution too)."""
        counts: dict[str, int] = {}
        for call in self.emu.calls:
            if call.method == "GET" and call.graph is not None and call.execution is None:
                counts[call.graph] = counts.get(call.graph, 0) + 1
        self.emu.clear_calls()
        return counts


@pytest.fixture(params=["dwr", "obs"])
def harness(request):
    made: list[Harness] = []

    def factory(**env: str) -> Harness:
        made.append(Harness(request.param, **env))
        return made[-1]

    yield factory
    for each in made:
        each.close()


def test_a_quiet_graph_is_listed_again_at_its_slot_not_by_every_sweep(harness):
    h = harness(RESTORE_SWEEP_QUIET_INTERVAL="10m")
    graphs = h.graphs(20)
    first = h.sweep()
    assert (first["graphsScanned"], first["graphsQuiet"]) == (20, 0)
    assert h.listed() == dict.fromkeys(graphs, 1)
    # A sweep a minute later lists only the graphs whose slot came in that minute.
    due = {g for g in graphs if next_slot(g, START, 600) <= START + 60}
    h.clock.advance_to(START + 60)
    second = h.sweep()
    assert set(h.listed()) == due and second["graphsQuiet"] == 20 - len(due)
    # In the next ten minutes every graph has its slot once: each is listed once, none twice.
    listed: dict[str, int] = {}
    for minute in range(2, 12):
        h.clock.advance_to(START + 60 * minute)
        h.sweep()
        for graph, calls in h.listed().items():
            listed[graph] = listed.get(graph, 0) + calls
    assert listed == dict.fromkeys(graphs, 1)


def test_a_graph_whose_listing_shows_a_failure_is_listed_by_every_sweep(harness):
    h = harness(RESTORE_SWEEP_QUIET_INTERVAL="1h")
    h.graphs(3)
    h.emu.seed("graph-1", "run-9", h.emu.FAILED)
    h.emu.faults_for(graph="graph-1", operation="restore").fail_next(100, status=403)
    h.sweep()  # refused: the failure stays in the list
    h.listed()
    for minute in (1, 2, 3):
        h.clock.advance_to(START + 60 * minute)
        summary = h.sweep()
        assert h.listed().get("graph-1") == 1 and summary["failuresFound"] == 1


def test_a_graph_whose_failure_was_restored_is_quiet_after_the_next_listing(harness):
    h = harness(RESTORE_SWEEP_QUIET_INTERVAL="1h")
    h.graphs(3)
    h.emu.seed("graph-2", "run-1", h.emu.FAILED)
    assert h.sweep()["outcomes"] == {"restored": 1}
    h.listed()
    h.clock.advance_to(START + 60)
    assert h.sweep()["failuresFound"] == 0
    assert h.listed().get("graph-2") == 1  # listed again after a failure: now it shows none
    h.clock.advance_to(START + 120)
    h.sweep()
    slot_came = next_slot("graph-2", START + 60, HOUR) <= START + 120
    assert ("graph-2" in h.listed()) is slot_came


def test_a_listing_that_failed_leaves_its_graph_to_the_next_sweep(harness):
    h = harness(RESTORE_SWEEP_QUIET_INTERVAL="1h")
    h.graphs(2)
    h.emu.faults_for(graph="graph-0", operation="list").fail_next(1)
    first = h.sweep()
    assert [e["graph"] for e in first["errors"]] == ["graph-0"]
    h.listed()
    h.clock.advance_to(START + 60)
    h.emu.seed("graph-0", "run-1", h.emu.FAILED)  # failed while its listing could not be read
    second = h.sweep()
    assert "graph-0" in h.listed()  # not marked quiet: its listing was not read
    assert second["failuresFound"] == 1 and second["outcomes"] == {"restored": 1}


def test_a_dry_run_lists_every_graph_and_marks_none(harness):
    h = harness(RESTORE_SWEEP_QUIET_INTERVAL="1h", RESTORE_DRY_RUN="true")
    graphs = h.graphs(4)
    for _ in range(2):
        assert h.sweep()["graphsQuiet"] == 0
        assert h.listed() == dict.fromkeys(graphs, 1)
    assert h.store.quiet_until() == {}


def test_graphs_an_override_names_are_listed_by_every_sweep(harness):
    h = harness(RESTORE_SWEEP_QUIET_INTERVAL="1h")
    graphs = h.graphs(3)
    h.sweep()
    request = SweepRequest.from_settings(h.settings).overridden({"graphs": graphs[:2]})
    for minute in (1, 2):
        h.listed()
        h.clock.advance_to(START + 60 * minute)
        h.sweep(request)
        assert h.listed() == dict.fromkeys(graphs[:2], 1)


def test_no_quiet_interval_lists_every_graph_by_every_sweep(harness):
    h = harness(RESTORE_SWEEP_QUIET_INTERVAL="0")
    graphs = h.graphs(3)
    for minute in (0, 1, 2):
        h.clock.advance_to(START + 60 * minute)
        assert h.sweep()["graphsQuiet"] == 0
        assert h.listed() == dict.fromkeys(graphs, 1)


def test_a_quiet_interval_over_half_the_lookback_is_refused():
    env = {"OBS_ENDPOINT": "https://127.0.0.1:1", "RESTORE_SWEEP_LOOKBACK": "1h"}
    with pytest.raises(SettingsError, match="RESTORE_SWEEP_QUIET_INTERVAL"):
        load_settings({**env, "RESTORE_SWEEP_QUIET_INTERVAL": "31m"})
    assert load_settings(env).sweep_quiet_interval == 600.0


def test_a_shorter_lookback_override_shortens_the_interval_to_half_of_it():
    assert interval_for(600.0, 86400.0) == 600.0
    assert interval_for(600.0, 600.0) == 300.0  # a request's 10-minute lookback
    assert interval_for(0.0, 86400.0) == 0.0


def test_a_slot_is_never_more_than_an_interval_away_and_spreads_graphs():
    slots = [next_slot(f"graph-{n}", START, 600.0) - START for n in range(1000)]
    assert all(0 <= slot <= 600.0 for slot in slots)
    assert len({int(slot // 60) for slot in slots}) == 10  # every minute of the interval
    # Listed at its slot, a graph's next slot is one interval on.
    slot = next_slot("graph-7", START, 600.0)
    assert next_slot("graph-7", slot + 1e-3, 600.0) == pytest.approx(slot + 600.0)


# --- the guarantee, over random schedules --------------------------------------------------------


@dataclass(frozen=True)
class Scheduled:
    graph: int
    stop: float  # seconds after START
    shown_after: float  # how long after its stop the list shows it (list answers lag)


@st.composite
def schedules(draw):
    lookback = draw(st.sampled_from([2 * HOUR, 6 * HOUR, 24 * HOUR]))
    interval = draw(st.floats(min_value=60.0, max_value=lookback / 2))
    graphs = draw(st.integers(min_value=1, max_value=4))
    gaps = draw(
        st.lists(st.floats(min_value=30.0, max_value=lookback / 3), min_size=3, max_size=24)
    )
    sweeps = []
    moment = 0.0
    for gap in gaps:
        moment += gap
        sweeps.append(moment)
    down = draw(  # per sweep: the graph list answers 503, and which graphs' lists do
        st.lists(
            st.tuples(st.booleans(), st.sets(st.integers(0, graphs - 1))),
            min_size=len(sweeps),
            max_size=len(sweeps),
        )
    )
    down = [
        (graph_list and draw(st.integers(0, 9)) == 0, broken if draw(st.booleans()) else set())
        for graph_list, broken in down
    ]
    failures = draw(
        st.lists(
            st.builds(
                Scheduled,
                graph=st.integers(0, graphs - 1),
                stop=st.floats(min_value=0.0, max_value=sweeps[-1]),
                shown_after=st.floats(min_value=0.0, max_value=600.0),
            ),
            min_size=1,
            max_size=6,
        )
    )
    return lookback, interval, graphs, sweeps, down, failures


def answered(graph: int, sweep: int, down: list) -> bool:
    graph_list_down, broken = down[sweep]
    return not graph_list_down and graph not in broken


@pytest.mark.parametrize("api", ["dwr", "obs"])
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(schedule=schedules())
def test_every_failure_inside_the_lookback_is_found_whatever_the_schedule(api, schedule):
    lookback, interval, count, sweeps, down, failures = schedule
    h = Harness(
        api,
        RESTORE_SWEEP_LOOKBACK=f"{lookback:.0f}",
        RESTORE_SWEEP_QUIET_INTERVAL=f"{interval:.3f}",
    )
    try:
        graphs = h.graphs(count)
        shown = sorted((START + f.stop + f.shown_after, index) for index, f in enumerate(failures))
        for sweep, at in enumerate(sweeps):
            while shown and shown[0][0] <= START + at:  # failures the list shows by now
                moment, index = shown.pop(0)
                h.clock.advance_to(moment)
                f = failures[index]
                h.emu.seed(
                    graphs[f.graph],
                    f"run-{index}",
                    h.emu.FAILED,
                    started_at=START + f.stop - 60,
                    stopped_at=START + f.stop,
                )
            h.clock.advance_to(START + at)
            graph_list_down, broken = down[sweep]
            if graph_list_down:
                h.emu.faults_for(operation="list_graphs").fail_next(1)
            for graph in broken:
                h.emu.faults_for(graph=graphs[graph], operation="list").fail_next(1)
            h.sweep()
            h.emu.clear_faults()  # a quiet graph left its fault unused: it is this sweep's
        for index, f in enumerate(failures):
            # Some sweep in [shown + interval, stop + lookback] had an answer for its graph:
            # then the failure must have been found (and, here, restored).
            first = f.stop + f.shown_after + interval_for(interval, lookback)
            promised = any(
                first <= at <= f.stop + lookback and answered(f.graph, sweep, down)
                for sweep, at in enumerate(sweeps)
            )
            event(f"promised: {promised}")
            if promised:
                assert h.emu.restores(graphs[f.graph], f"run-{index}") >= 1, (f, sweeps, down)
    finally:
        h.close()
