"""Outage mode in the pipeline: sweeps against the DWR emulator with a broken downstream, on
one clock the emulator, the store and the runtime share (a fake one that ticks a millisecond
per read, so a run that fails again "at once" stops after its restore was sent).

What is proved here: a breaker bounds the restores a broken downstream wastes and releases
every held failure after the fix, exactly once each; the shared rate holds in every second;
held items end ``deferred`` with their due time and nothing is lost; the sweep's cap is spent
round-robin across graphs; a rule may set its own threshold or turn the breaker off.
"""

from __future__ import annotations

import io
import json
import time
from datetime import datetime, timezone

import pytest

from handler.devtools.emulator import DwrEmulator
from handler.invocation import Invocation
from handler.pipeline.pauses import pause, resume
from handler.report import Reporter, configure_logging
from handler.runtime import Runtime
from handler.settings import load_settings
from handler.store import open_store
from handler.sweep import SweepRequest
from tests.conftest import AK, SK

PROJECT = "0123456789abcdef0123456789abcdef"
GRAPH = "etl"


class TickingClock:
    """Wall-clock seconds near now that move only when told to - and by a millisecond on
    every read, so that what happens later in the code also happens later in time."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        self.now += 0.001
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingDwr(DwrEmulator):
    """The DWR emulator, noting when (its clock) each restore it accepted was taken."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.accepted: list[tuple[float, str, str]] = []

    def _take_restore(self, graph, execution):
        taken, restored, now = super()._take_restore(graph, execution)
        if restored:
            self.accepted.append((now, graph, execution))
        return taken, restored, now


@pytest.fixture
def clock() -> TickingClock:
    return TickingClock()


@pytest.fixture
def emu(clock):
    with RecordingDwr({AK: SK}, project_id=PROJECT, clock=clock) as emulator:
        yield emulator


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path, clock):
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'state.db'}"
    opened = open_store(url, clock=clock)
    yield opened
    opened.close()


class Harness:
    """A runtime over the emulator, the store and the clock; its log lines kept."""

    def __init__(self, emu, store, clock, **env: str) -> None:
        self.emu, self.clock, self.log = emu, clock, io.StringIO()
        settings = load_settings(
            {
                "WORKFLOW_API": "dwr",
                "DWR_ENDPOINT": emu.url,
                "DWR_PROJECT_ID": PROJECT,
                "OBS_ACCESS_KEY_ID": AK,
                "OBS_SECRET_ACCESS_KEY": SK,
                "RESTORE_SWEEP_GRACE": "0",
                **env,
            }
        )
        reporter = Reporter(configure_logging("INFO", self.log))
        self.runtime = Runtime(settings, store, reporter, clock)

    def sweep(self, max_restores: int = 50) -> dict:
        _, summary = self.runtime.sweep(
            SweepRequest(max_restores=max_restores), Invocation(id="sweep")
        )
        return summary.document()

    def lines(self, message_start: str) -> list[dict]:
        lines = [json.loads(line) for line in self.log.getvalue().splitlines()]
        return [line for line in lines if line["message"].startswith(message_start)]


def seed(emu, count: int, graph: str = GRAPH, minutes_ago: int = 5) -> list[str]:
    names = [f"run-{n:03d}" for n in range(count)]
    stopped = datetime.fromtimestamp(emu._clock() - minutes_ago * 60 - 1, timezone.utc)
    emu.seed_many(
        {"graph": graph, "execution": name, "state": emu.FAILED, "stopped_at": stopped}
        for name in names
    )
    return names


BREAKER = {
    "RESTORE_RATE_LIMIT": "off",
    "RESTORE_BREAKER_THRESHOLD": "3",
    "RESTORE_BREAKER_COOLDOWN": "10s",  # short: the emulator refuses a clock 15m off
    # The first wave, a re-failure and a canary (the canary rotates: each is one execution's
    # unit), and the restore after the fix.
    "RESTORE_MAX_RESTORES": "4",
}


def test_a_broken_downstream_wastes_at_most_the_first_wave_threshold_and_canaries(
    emu, store, clock
):
    names = seed(emu, 20)
    emu.break_downstream(0)  # every restored run fails again before its restore is answered
    h = Harness(emu, store, clock, **BREAKER)

    first = h.sweep()
    assert first["outcomes"] == {"restored": 20}  # the first wave: nothing has re-failed yet
    clock.advance(1)
    second = h.sweep()
    # The first re-failure is restored again (one alone may be one flaky execution), the
    # second waits under the watch, the third opens the breaker: the other 17 are held.
    assert second["outcomes"] == {"restored": 1, "deferred": 19}
    codes = [line["errorCode"] for line in h.lines("restore deferred")]
    assert codes.count("BreakerWatch") == 1 and codes.count("BreakerOpen") == 18
    opened = h.lines("breaker opened")
    assert len(opened) == 1 and opened[0]["level"] == "WARNING"
    assert len(opened[0]["refailures"]) == 3 and opened[0]["graphName"] == GRAPH
    for _ in range(6):  # canaries (10s, 20s, 40s apart...) while it stays broken
        clock.advance(25)
        h.sweep()
    canaries = 1 + len(h.lines("breaker reopened"))
    wasted = len(emu.accepted)
    assert wasted <= 20 + 3 + canaries < 20 * 5  # not every budget spent
    assert h.lines("breaker closed") == []

    fixed_at = clock()
    emu.fix_downstream()
    for _ in range(10):  # bounded: the canary after the fix, its judgement, the release
        clock.advance(60)
        h.sweep()
        if all(emu.state(GRAPH, name) != emu.FAILED for name in names):
            break
    after_fix = [execution for at, _, execution in emu.accepted if at >= fixed_at]
    assert sorted(after_fix) == names  # every one restored, each exactly once after the fix
    assert all(emu.state(GRAPH, name) == emu.RUNNING for name in names)
    closed = h.lines("breaker closed")
    assert len(closed) == 1 and closed[0]["level"] == "INFO"


def test_a_held_item_ends_deferred_with_the_breaker_s_reason_and_is_restored_when_due(
    emu, store, clock
):
    seed(emu, 5)
    emu.break_downstream(0)
    h = Harness(emu, store, clock, **BREAKER)
    h.sweep()
    clock.advance(1)
    h.sweep()
    held = [line for line in h.lines("restore deferred") if line.get("errorCode") == "BreakerOpen"]
    assert held and all("breaker open since" in line["reason"] for line in held)
    assert all("next canary at" in line["reason"] for line in held)
    clock.advance(11)
    third = h.sweep()
    # Due at the canary time: remembered (deferred) and listed both come back; one canary.
    assert third["outcomes"].get("restored") == 1


def test_the_shared_rate_never_admits_more_than_its_limit_in_any_second(emu, store, clock):
    names = seed(emu, 50)
    h = Harness(emu, store, clock, RESTORE_RATE_LIMIT="5/s", RESTORE_BREAKER_THRESHOLD="0")
    for _ in range(30):  # bounded: 10 seconds' worth at 5/s, with room
        h.sweep()
        if len(emu.accepted) == 50:
            break
        clock.advance(0.5)
    times = sorted(at for at, _, _ in emu.accepted)
    assert sorted(execution for _, _, execution in emu.accepted) == names  # all, once each
    assert max(sum(1 for t in times if start <= t < start + 1) for start in times) <= 5
    rated = [line for line in h.lines("restore deferred") if line.get("errorCode") == "RateLimited"]
    assert rated and "RESTORE_RATE_LIMIT" in rated[0]["reason"]


def test_a_sweep_spends_its_cap_round_robin_so_a_small_graph_is_not_starved(emu, store, clock):
    seed(emu, 200, graph="big")
    small = seed(emu, 5, graph="small", minutes_ago=50)  # older failures, listed after
    h = Harness(emu, store, clock, RESTORE_RATE_LIMIT="off")
    summary = h.sweep(max_restores=20)
    assert summary["outcomes"] == {"restored": 20}
    assert all(emu.restores("small", name) == 1 for name in small)
    assert summary["waitingForNextSweep"] == 205 - 20


def test_within_a_graph_the_most_recently_stopped_failure_is_restored_first(emu, store, clock):
    old = seed(emu, 3, graph="etl", minutes_ago=100)
    emu.seed("etl", "run-new", emu.FAILED)
    h = Harness(emu, store, clock, RESTORE_RATE_LIMIT="off")
    h.sweep(max_restores=1)
    assert emu.restores("etl", "run-new") == 1
    assert [emu.restores("etl", name) for name in old] == [0, 0, 0]


def test_a_rule_with_breaker_off_is_never_held(emu, store, clock):
    seed(emu, 10)
    emu.break_downstream(0)
    policy = json.dumps({"rules": [{"name": "independent", "breaker": "off"}]})
    h = Harness(emu, store, clock, RESTORE_POLICY=policy, **BREAKER)
    h.sweep()
    clock.advance(1)
    second = h.sweep()
    assert second["outcomes"] == {"restored": 10}
    assert h.lines("breaker opened") == []


def test_a_rule_s_own_threshold_opens_its_breaker_sooner(emu, store, clock):
    seed(emu, 10)
    emu.break_downstream(0)
    policy = json.dumps({"rules": [{"name": "fragile", "breaker": 1}]})
    h = Harness(emu, store, clock, RESTORE_POLICY=policy, **BREAKER)
    h.sweep()
    clock.advance(1)
    second = h.sweep()
    assert second["outcomes"] == {"deferred": 10}  # the first re-failure opens it
    assert h.lines("breaker opened")[0]["threshold"] == 1


def test_a_restore_that_was_refused_gives_its_rate_slot_back(emu, store, clock):
    from handler.intake import from_http

    emu.seed(GRAPH, "done", emu.state_word("SUCCESS"))
    emu.seed(GRAPH, "broken", emu.FAILED)
    h = Harness(emu, store, clock, RESTORE_RATE_LIMIT="1/m")
    results = []
    for name in ("done", "broken"):
        items = from_http(json.dumps({"graphName": GRAPH, "executionName": name}).encode(), {})
        results += h.runtime.run(items, Invocation(id=name)).document()["results"]
    # The first took the minute's one slot and was refused (not failed): the slot came back.
    assert results[0]["outcome"] != "restored"
    assert results[1]["outcome"] == "restored"
    assert [execution for _, _, execution in emu.accepted] == ["broken"]


def test_on_obs_a_failure_held_before_the_canary_is_not_taken_for_the_canary_failing_again(
    clock,
):
    """OBS gives no stop times: a held event's failure is remembered with when it was seen,
    so when it comes due after the canary's restore it is not a re-failure of the canary."""
    from handler.devtools.emulator import Emulator
    from handler.intake import from_http

    names = [f"exec-{n:02d}" for n in range(20)]
    with Emulator({AK: SK}, clock=clock) as emu:
        for name in names:
            emu.seed(GRAPH, name, "FAILED")
        emu.break_downstream(0)
        store = open_store("memory://", clock=clock)
        env = {"OBS_ENDPOINT": emu.url, "OBS_ACCESS_KEY_ID": AK, "OBS_SECRET_ACCESS_KEY": SK}
        settings = load_settings({**env, "RESTORE_SWEEP_GRACE": "0", **BREAKER})
        log = io.StringIO()
        runtime = Runtime(settings, store, Reporter(configure_logging("INFO", log)), clock)

        def event(event_id: str, name: str) -> str:
            body = {
                "events": [
                    {
                        "specversion": "1.0",
                        "id": event_id,
                        "source": "HC.OBS",
                        "type": "com.huaweicloud.obs.workflow.execution.failed",
                        "data": {"graph_name": GRAPH, "execution_name": name},
                    }
                ]
            }
            items = from_http(json.dumps(body).encode(), {})
            return runtime.run(items, Invocation(id=event_id)).document()["results"][0]["outcome"]

        assert [event(f"a-{name}", name) for name in names] == ["restored"] * 20
        clock.advance(0.5)
        # One restored again, one waits under the watch, the third re-failure opens it.
        assert [event(f"b-{name}", name) for name in names].count("deferred") == 19
        emu.fix_downstream()
        for _ in range(4):  # the canary after 10s, its judgement 10s later, the release
            clock.advance(6)
            runtime.sweep(SweepRequest(), Invocation(id="sweep"))
        assert all(emu.state(GRAPH, name) == emu.RUNNING for name in names)
        store.close()
    messages = [json.loads(line)["message"] for line in log.getvalue().splitlines()]
    assert not any(message.startswith("breaker reopened") for message in messages)
    assert sum(message.startswith("breaker closed") for message in messages) == 1


def test_a_re_failed_execution_is_not_restored_again_before_the_breaker_has_judged_its_graph(
    emu, store, clock
):
    """The storm's shape: the rate gives a sweep one restore, and the execution just restored
    is the most recently stopped failure. Restoring it again adds no evidence (the breaker
    counts distinct executions), so once a second execution has re-failed the graph is
    watched: every restore until the opening goes to a new execution, and none is restored
    again while it stays broken except as a canary."""
    seed(emu, 20)
    emu.break_downstream(0)
    h = Harness(emu, store, clock, **{**BREAKER, "RESTORE_RATE_LIMIT": "1/s"})
    before_opening = None
    for _ in range(20):  # bounded: the opening after a few sweeps' restores, then canaries
        h.sweep()
        if before_opening is None and h.lines("breaker opened"):
            before_opening = list(emu.accepted)
        clock.advance(2)
    assert before_opening is not None
    executions = [execution for _, _, execution in before_opening]
    first = executions[0]  # alone, it keeps its rule's pace: restored up to its budget
    assert executions.count(first) == 4 and executions[4:] == ["run-001", "run-002"]
    assert len(set(executions)) == 3  # then one restore each, the threshold's worth in all
    canaries = len(emu.accepted) - len(before_opening)
    re_restores = len(emu.accepted) - len({execution for _, _, execution in emu.accepted})
    assert canaries >= 1 and re_restores <= (4 - 1) + canaries
    watched = [line for line in h.lines("restore deferred") if line["errorCode"] == "BreakerWatch"]
    assert watched and all("watched after a re-failure" in line["reason"] for line in watched)


def test_a_watched_execution_is_delayed_by_the_watch_never_lost(emu, store, clock):
    """Two executions fail again after their restores, fewer than the threshold: the breaker
    never opens, and each waits out the watch (remembered in the store with its due time,
    like every deferral) and is then restored as usual."""
    names = seed(emu, 2)
    emu.break_downstream(0)
    h = Harness(emu, store, clock, **BREAKER)
    assert h.sweep()["outcomes"] == {"restored": 2}
    emu.fix_downstream()
    clock.advance(1)
    # The first re-failure alone is restored again; the second makes the graph watched.
    assert h.sweep()["outcomes"] == {"restored": 1, "deferred": 1}
    (held,) = h.lines("restore deferred")
    assert held["errorCode"] == "BreakerWatch" and "due at" in held["reason"]
    assert store.due_deferred(10) == []  # not due before the watch ends
    clock.advance(10)
    assert [failure["execution"] for _, failure in store.due_deferred(10)] == [
        held["executionName"]
    ]
    assert h.sweep()["outcomes"] == {"restored": 1}
    assert [emu.restores(GRAPH, name) for name in names] == [2, 2]
    assert all(emu.state(GRAPH, name) == emu.RUNNING for name in names)
    assert h.lines("breaker opened") == []


def test_a_sweep_counts_a_held_failure_once_when_it_is_both_listed_and_remembered(
    emu, store, clock
):
    """A held failure is remembered with its due time, and the listing shows it too, under
    the same identity: the sweep handles it once, so its outcomes add up to what it found."""
    seed(emu, 5)
    emu.break_downstream(0)
    h = Harness(emu, store, clock, **BREAKER)
    h.sweep()
    clock.advance(1)
    # One restored again, the others remembered, due a cooldown later.
    assert h.sweep()["outcomes"] == {"restored": 1, "deferred": 4}
    clock.advance(11)
    third = h.sweep()
    assert third["failuresFound"] == 5
    assert third["outcomes"] == {"restored": 1, "deferred": 4}  # the canary; the rest held
    assert third["waitingForNextSweep"] == 0


def test_a_systemic_outage_holds_a_graph_that_did_not_open_and_releases_it_when_they_close(
    emu, store, clock
):
    """RESTORE_BREAKER_GLOBAL (3) graphs open at once: a fourth graph, none of whose
    executions re-failed, is held too (``SystemicOutage``) while the open ones send their
    canaries; once the downstream is fixed and a breaker closes, it is restored, once."""
    broken = ("etl-a", "etl-b", "etl-c")
    for graph in broken:
        seed(emu, 5, graph=graph)
    emu.break_downstream(0)
    h = Harness(emu, store, clock, **BREAKER, RESTORE_BREAKER_GLOBAL="3")
    assert h.sweep()["outcomes"] == {"restored": 15}
    clock.advance(1)
    h.sweep()
    assert sorted(line["graphName"] for line in h.lines("breaker opened")) == list(broken)

    (bystander,) = seed(emu, 1, graph="reports", minutes_ago=1)
    clock.advance(1)
    h.sweep()
    assert emu.restores("reports", bystander) == 0
    held = [line for line in h.lines("restore deferred") if line["graphName"] == "reports"]
    assert held and held[-1]["errorCode"] == "SystemicOutage"
    assert "systemic outage: the breakers of 3 graphs are open" in held[-1]["reason"]

    emu.fix_downstream()
    for _ in range(8):  # bounded: a canary per graph, its judgement, the release
        clock.advance(11)
        h.sweep()
        if h.lines("breaker closed"):
            break
        assert emu.restores("reports", bystander) == 0  # held while 3 stay open
    closed = h.lines("breaker closed")
    assert closed and closed[0]["systemicHoldLifted"] is True
    assert emu.restores("reports", bystander) == 1  # released by the sweep that closed it
    clock.advance(11)
    h.sweep()
    assert emu.restores("reports", bystander) == 1  # once: never restored twice
    assert emu.state("reports", bystander) == emu.RUNNING


def test_a_held_graph_s_failures_already_deferred_are_answered_without_being_deferred_again(
    emu, store, clock
):
    """While the breaker holds a graph (open, its canary not yet due), a sweep answers the
    failures it deferred before ``deferred`` with their breaker reason, from one read of
    the store: no new deferral is written, no ledger entry, one line for them all. A new
    failure is admitted as before, and once the downstream is fixed every held failure is
    restored, exactly once."""
    names = seed(emu, 10)
    emu.break_downstream(0)
    h = Harness(emu, store, clock, **BREAKER)
    h.sweep()
    clock.advance(1)
    assert h.sweep()["outcomes"] == {"restored": 1, "deferred": 9}  # the breaker opened
    remembered = store.waiting_deferred(100)
    ledgers = {name: store.ledger(GRAPH, name) for name in names}
    clock.advance(1)  # the canary is due 10 s after the opening: not yet

    answer, summary = h.runtime.sweep(SweepRequest(max_restores=50), Invocation(id="held"))

    assert summary.document()["outcomes"] == {"deferred": 10}
    standing = [r for r in answer.results if r.standing]
    assert len(standing) == 9  # the one restored again re-failed: a new failure, admitted
    # Each answered as its deferral said when it was decided: the same reason and code.
    decided = {line["eventId"]: line for line in h.lines("restore deferred")}
    for result in standing:
        assert result.reason == decided[result.event_id]["reason"]
        assert result.error_code == decided[result.event_id]["errorCode"]
    assert {r.error_code for r in standing} <= {"BreakerOpen", "BreakerWatch"}
    (line,) = h.lines("restores still deferred")
    assert line["count"] == 9 and line["graphName"] == GRAPH
    assert sum(line["errorCodes"].values()) == 9
    # Nothing written for the nine: their memories (due times included) and ledgers stand.
    now_remembered = dict(store.waiting_deferred(100))
    assert all(now_remembered[key] == failure for key, failure in remembered)
    refailed = {r.execution_name for r in answer.results if not r.standing}
    assert all(store.ledger(GRAPH, n) == ledgers[n] for n in names if n not in refailed)

    fixed_at = clock()
    emu.fix_downstream()
    for _ in range(10):  # bounded: the canary after the fix, its judgement, the release
        clock.advance(60)
        h.sweep()
        if all(emu.state(GRAPH, name) != emu.FAILED for name in names):
            break
    after_fix = [execution for at, _, execution in emu.accepted if at >= fixed_at]
    assert sorted(after_fix) == names  # every held failure restored, each once
    assert len(h.lines("breaker closed")) == 1


def test_a_paused_graph_s_deferred_failures_stand_until_it_is_resumed(emu, store, clock):
    """A paused graph's failures are deferred once by admission; the next sweeps answer
    them from the store while the same pause holds, and the first sweep after ``resume``
    restores each, once."""
    names = seed(emu, 4)
    h = Harness(emu, store, clock, RESTORE_RATE_LIMIT="off")
    pause(store, GRAPH, by="operator", reason="database maintenance", clock=clock)
    assert h.sweep()["outcomes"] == {"deferred": 4}
    assert h.lines("restores still deferred") == []
    clock.advance(60)

    answer, summary = h.runtime.sweep(SweepRequest(max_restores=50), Invocation(id="paused"))

    assert summary.document()["outcomes"] == {"deferred": 4}
    assert all(r.standing and "paused by operator" in r.reason for r in answer.results)
    assert emu.accepted == []
    resume(store, GRAPH)
    clock.advance(60)
    assert h.sweep()["outcomes"] == {"restored": 4}
    assert sorted(execution for _, _, execution in emu.accepted) == names


def test_once_the_rate_is_full_failures_it_deferred_before_are_answered_with_its_new_refusal(
    emu, store, clock
):
    """The shared rate refuses one item of a sweep: until its next slot, the failures it had
    deferred before are answered ``deferred`` with that refusal's reason, without being
    admitted again; each is still restored, once, as slots free."""
    names = seed(emu, 6)
    h = Harness(emu, store, clock, RESTORE_RATE_LIMIT="2/s", RESTORE_BREAKER_THRESHOLD="0")
    assert h.sweep()["outcomes"] == {"restored": 2, "deferred": 4}  # each admitted
    clock.advance(1.5)

    answer, summary = h.runtime.sweep(SweepRequest(max_restores=50), Invocation(id="rated"))

    assert summary.document()["outcomes"] == {"restored": 2, "deferred": 2}
    (refused,) = [r for r in answer.results if r.outcome.value == "deferred" and not r.standing]
    (standing,) = [r for r in answer.results if r.standing]
    assert refused.error_code == standing.error_code == "RateLimited"
    assert standing.reason == refused.reason  # the refusal of this sweep, its next slot
    for _ in range(5):  # bounded: two a second
        clock.advance(1.5)
        h.sweep()
    assert sorted(execution for _, _, execution in emu.accepted) == names  # all, once each


def test_a_pause_longer_than_the_retention_keeps_every_held_failure_remembered(emu, store, clock):
    """A deferral that stands is not written again, so its memory would expire one
    retention after it was decided: past half of it, the failure is admitted again (and
    remembered anew). A pause longer than the retention keeps every memory - what restores
    a failure no listing shows any more - and still ends with each restored."""
    names = seed(emu, 3, minutes_ago=0)
    env = {"RESTORE_DEDUPE_RETENTION": "2m", "RESTORE_SWEEP_LOOKBACK": "1m"}
    env["RESTORE_SWEEP_QUIET_INTERVAL"] = "0"  # every graph listed by every sweep
    h = Harness(emu, store, clock, RESTORE_RATE_LIMIT="off", **env)
    pause(store, GRAPH, by="operator", seconds=3600, clock=clock)
    for _ in range(12):  # six minutes, a sweep every 30 s: three retentions
        assert h.sweep()["outcomes"] == {"deferred": 3}
        clock.advance(30)
    # Three retentions after the first deferral, every memory is still there.
    keys = [key for key, _ in store.waiting_deferred(10)]
    assert len(store.deferred_among(keys)) == 3
    standing = h.lines("restores still deferred")
    assert 0 < len(standing) < 12  # answered standing, and admitted again before expiring
    resume(store, GRAPH)
    h.sweep()
    assert sorted(execution for _, _, execution in emu.accepted) == names
