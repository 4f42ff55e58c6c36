"""One sweep at a time, however long it runs: the lease outlives RESTORE_CLAIM_TTL.

A command-line sweep has no deadline, so its lease cannot be sized to one: it is renewed
while the sweep runs. The emulator holds the first sweep inside its list call (a hold, not a
timer), while the test waits past the TTL and starts a second sweep.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from handler import cli
from handler.devtools.emulator import Emulator
from handler.store import open_store
from tests.conftest import AK, SK

CLAIM_TTL = 2.0


@pytest.fixture
def emu():
    with Emulator({AK: SK}) as emulator:
        emulator.seed("graph-1", "run-1", "FAILED")
        yield emulator


@pytest.fixture
def sweep_env(emu, function_env):
    function_env.update(
        OBS_ENDPOINT=emu.url,
        RESTORE_CLAIM_TTL=f"{CLAIM_TTL:g}",
        OBS_READ_TIMEOUT="30",  # the held list call must not time out
        RESTORE_SWEEP_GRAPHS="graph-1",
        LOG_LEVEL="ERROR",
    )
    function_env.apply()
    return function_env


def start_sweep_in_background() -> tuple[threading.Thread, dict]:
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(code=cli.main(["sweep", "--json"])))
    thread.start()
    return thread, outcome


def wait_past(moment: float) -> None:
    """Let the wall clock (the state store's) pass ``moment``."""
    time.sleep(max(0.0, moment - time.time()))


def test_a_second_sweep_after_the_claim_ttl_is_refused_while_the_first_still_runs(
    emu, sweep_env, capsys
):
    hold = emu.hold_next(operation="list")
    started = time.time()
    first, outcome = start_sweep_in_background()
    try:
        assert hold.reached.wait(10)  # the first sweep holds the lease, inside its list call
        wait_past(started + CLAIM_TTL * 1.5)

        code = cli.main(["sweep", "--json"])
        second = json.loads(capsys.readouterr().out)
        assert first.is_alive()  # still held in its list call
    finally:
        hold.release()
        first.join(30)
    assert (code, second["sweep"]["stopped"]) == (1, "sweep in progress")
    assert second["results"] == []
    done = json.loads(capsys.readouterr().out)
    assert outcome["code"] == 0 and done["sweep"]["outcomes"] == {"restored": 1}
    assert emu.restores("graph-1", "run-1") == 1
    assert [call for call in emu.calls if call.method == "GET"][:1] == [
        ("GET", "graph-1", None, 200)
    ]  # one listing: the first sweep's


def test_a_sweep_whose_lease_was_taken_over_stops_before_restoring(emu, sweep_env, capsys):
    """An operator dropped the lease (``state forget sweep:lease``) and another sweep took
    it: the first one's next renewal is refused, and it stops rather than work beside it."""
    sweep_env.update(RESTORE_CLAIM_TTL="1")
    sweep_env.apply()
    hold = emu.hold_next(operation="list")
    first, outcome = start_sweep_in_background()
    with open_store(sweep_env["RESTORE_STATE_URL"]) as store:
        try:
            assert hold.reached.wait(10)
            assert store.forget("sweep:lease")
            other = store.claim("sweep:lease", 60)
            assert other.acquired
            time.sleep(2.0)  # several renewal rounds (one every third of the TTL)
        finally:
            hold.release()
            first.join(30)
        store.release("sweep:lease", other.token)
    document = json.loads(capsys.readouterr().out)
    assert outcome["code"] == 1
    assert document["sweep"]["stopped"] == "lease lost"
    assert [error["errorCode"] for error in document["sweep"]["errors"]] == ["LeaseLost"]
    assert emu.restores("graph-1", "run-1") == 0 and emu.state("graph-1", "run-1") == "FAILED"


def test_a_finished_sweep_leaves_the_lease_free(emu, sweep_env, capsys):
    assert cli.main(["sweep", "--json"]) == 0
    capsys.readouterr()
    with open_store(sweep_env["RESTORE_STATE_URL"]) as store:
        taken = store.claim("sweep:lease", 60)
        assert taken.acquired  # released at once, not left to expire
        store.release("sweep:lease", taken.token)
