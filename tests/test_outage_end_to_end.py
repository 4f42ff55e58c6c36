"""Outage mode end to end: two worker processes of the real function sharing one state store
(SQLite and Redis), the OBS or DWR emulator with a broken downstream as the service, failures
reported by events and worked off by sweeps - on the real clock, with the shortest cooldown
the settings allow (10 s), so every wait here is bounded and a few seconds long.

The fake-clock tests of the same promises, run through many canaries, are in
tests/test_outage_pipeline.py.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from handler.devtools.emulator import DwrEmulator, Emulator
from tests.conftest import AK, AUTH_TOKEN, SK
from tests.function_server import function_server

pytest_plugins = ["tests.redis_server"]

HEADERS = {"Authorization": f"Bearer {AUTH_TOKEN}"}
GRAPH = "graph-1"
COOLDOWN = 10.0  # RESTORE_BREAKER_COOLDOWN's minimum


PROJECT = "0123456789abcdef0123456789abcdef"


class Recording:
    """An emulator that notes when (its clock) each restore it accepted was taken."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.accepted: list[tuple[float, str]] = []
        self._noted = threading.Lock()

    def _take_restore(self, graph, execution):
        taken, restored, now = super()._take_restore(graph, execution)  # type: ignore[misc]
        if restored:
            with self._noted:
                self.accepted.append((now, execution))
        return taken, restored, now


class RecordingEmulator(Recording, Emulator):
    """The OBS emulator, recording."""


class RecordingDwr(Recording, DwrEmulator):
    """The DWR emulator, recording."""


@pytest.fixture
def emulator():
    with RecordingEmulator(credentials={AK: SK}) as running:
        yield running


@pytest.fixture(params=["obs", "dwr"])
def service(request):
    """The OBS or the DWR emulator, with the settings that point the function at it: the
    same deliveries restore either (``WORKFLOW_API`` changes the client and nothing else)."""
    if request.param == "obs":
        with RecordingEmulator(credentials={AK: SK}) as running:
            yield running, {"OBS_ENDPOINT": running.url}
    else:
        with RecordingDwr({AK: SK}, project_id=PROJECT) as running:
            api = {"WORKFLOW_API": "dwr", "DWR_ENDPOINT": running.url, "DWR_PROJECT_ID": PROJECT}
            yield running, api


@pytest.fixture(params=["sqlite", "redis"])
def state_url(request, tmp_path):
    if request.param == "redis":
        return request.getfixturevalue("redis_url")
    return f"sqlite:///{tmp_path / 'shared-state.db'}"


def environment(emulator, state_url, **extra: str) -> dict[str, str]:
    api = {} if "WORKFLOW_API" in extra else {"OBS_ENDPOINT": emulator.url}
    return {
        **api,
        "OBS_ACCESS_KEY_ID": AK,
        "OBS_SECRET_ACCESS_KEY": SK,
        "RESTORE_AUTH_TOKEN": AUTH_TOKEN,
        "RESTORE_STATE_URL": state_url,
        "RESTORE_SWEEP_GRACE": "0",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


def event(event_id: str, execution: str) -> dict:
    return {
        "events": [
            {
                "specversion": "1.0",
                "id": event_id,
                "source": "HC.OBS",
                "type": "com.huaweicloud.obs.workflow.execution.failed",
                "data": {"graph_name": GRAPH, "execution_name": execution},
            }
        ]
    }


def deliver(url: str, bodies: list[dict]) -> list[str]:
    """Every body, two at a time (one per worker, as the platform spreads them)."""

    def one(body: dict) -> str:
        with requests.Session() as session:
            response = session.post(url, json=body, headers=HEADERS, timeout=60)
        return response.json()["results"][0]["outcome"]

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(one, bodies))


def sweep(url: str) -> dict:
    response = requests.post(f"{url}sweep", json={}, headers=HEADERS, timeout=60)
    return response.json()["sweep"]


def seed(emulator, count: int) -> list[str]:
    names = [f"exec-{n:02d}" for n in range(count)]
    for name in names:
        emulator.seed(GRAPH, name, emulator.FAILED)
    return names


def test_a_broken_downstream_is_held_by_the_breaker_and_every_failure_restored_after_the_fix(
    service, state_url
):
    emulator, api = service
    names = seed(emulator, 20)
    emulator.break_downstream(0)  # every restored run fails again before the answer
    env = environment(
        emulator,
        state_url,
        **api,
        RESTORE_RATE_LIMIT="off",
        RESTORE_BREAKER_THRESHOLD="3",
        RESTORE_BREAKER_COOLDOWN=f"{COOLDOWN:g}s",
        RESTORE_MAX_RESTORES="5",
    )
    with function_server(env, workers=2) as url:
        first = deliver(url, [event(f"first-{name}", name) for name in names])
        assert first == ["restored"] * 20  # the first wave: nothing has re-failed yet
        again = deliver(url, [event(f"again-{name}", name) for name in names])
        # The third re-failure opens the breaker (the second is watched); whatever was
        # counted after it is held.
        assert again.count("restored") <= 2 and again.count("deferred") >= 18
        assert len(emulator.accepted) <= 20 + 2  # nothing more while it is open

        fixed_at = time.time()
        emulator.fix_downstream()
        give_up = time.monotonic() + 6 * COOLDOWN
        while any(emulator.state(GRAPH, name) == emulator.FAILED for name in names):
            assert time.monotonic() < give_up, "not every failure was restored after the fix"
            time.sleep(1.0)
            sweep(url)  # the canary, then its judgement, then the held failures
    after_fix = sorted(execution for at, execution in emulator.accepted if at >= fixed_at)
    assert after_fix == names  # every one restored, each exactly once after the fix
    assert all(emulator.state(GRAPH, name) == emulator.RUNNING for name in names)


def test_a_shared_rate_of_5_per_second_holds_across_workers_and_every_failure_is_restored(
    emulator, state_url
):
    names = seed(emulator, 50)
    env = environment(emulator, state_url, RESTORE_RATE_LIMIT="5/s", RESTORE_BREAKER_THRESHOLD="0")
    with function_server(env, workers=2) as url:
        outcomes = deliver(url, [event(f"evt-{name}", name) for name in names])
        assert set(outcomes) <= {"restored", "deferred"} and "deferred" in outcomes
        give_up = time.monotonic() + 60
        while len(emulator.accepted) < 50:
            assert time.monotonic() < give_up, f"{len(emulator.accepted)} of 50 restored"
            time.sleep(0.5)
            sweep(url)  # the deferred ones, each when its slot frees
    assert sorted(execution for _, execution in emulator.accepted) == names  # once each
    times = sorted(at for at, _ in emulator.accepted)
    # A slot is taken just before its restore leaves; on loopback it arrives milliseconds
    # later, so a window a tenth of a second short of one second is what the emulator can
    # tell apart from the function's own.
    assert max(sum(1 for t in times if start <= t < start + 0.9) for start in times) <= 5
