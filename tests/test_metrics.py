"""Cloud Eye metrics, end to end on the DWR emulator: each invocation sends one batch at its
end, and the sums Cloud Eye received equal the outcomes of the invocations that sent them."""

from __future__ import annotations

import logging
import time
from collections import Counter

from handler.devtools.emulator import DwrEmulator
from handler.intake import Item
from handler.invocation import Invocation
from handler.report import Reporter
from handler.runtime import Runtime
from handler.settings import MetricsSettings, Settings
from handler.store.memory import MemoryStore
from tests.conftest import AK, SK

PROJECT = "0123456789abcdef0123456789abcdef"
GRAPHS = ("nightly-etl", "thumbnails")
GAVE_UP = {"failed", "budget_exhausted"}


def test_metric_sums_equal_the_outcomes_of_the_invocations_that_sent_them():
    emu = DwrEmulator({AK: SK}, project_id=PROJECT)
    for graph in GRAPHS:
        for n in range(4):
            emu.seed(graph, f"run-{n}", "fail", error_message="node x: input object not found")
    with emu:
        settings = Settings(
            endpoint=emu.url, workflow_api="dwr", project_id=PROJECT, access_key_id=AK,
            secret_access_key=SK, max_attempts=1,
            metrics=MetricsSettings(endpoint=emu.url, project_id=PROJECT),
        )  # fmt: skip
        runtime = Runtime(settings, MemoryStore(), Reporter(logging.getLogger("metrics")))
        expected: dict[str, Counter] = {graph: Counter() for graph in GRAPHS}
        try:
            stopped = time.time() - 120  # the events say when the executions stopped
            deliveries = [
                [
                    Item("restore", f"evt-{g}-{n}", "cloudevent", g, f"run-{n}", failed_at=stopped)
                    for n in (0, 1)
                ]
                for g in GRAPHS
            ]
            deliveries.append(deliveries[0])  # a redelivery: duplicates, counted as nothing
            for number, items in enumerate(deliveries):
                if number == 1:  # the second delivery's first restore is refused: a give-up
                    emu.faults_for(operation="restore").fail_next(1, status=400)
                answer = runtime.run(items, Invocation())
                runtime.flush_events(5.0)  # the end of the invocation, as entry points do
                for result in answer.results:
                    outcome = result.outcome.value
                    if outcome == "duplicate":
                        continue
                    counted = expected[result.graph_name]
                    counted["failures_found"] += 1
                    counted[{"retryable_error": "retryable"}.get(outcome, outcome)] += 1
                    counted["gave_up"] += outcome in GAVE_UP
        finally:
            runtime.close()
    assert expected["thumbnails"]["failed"] == 1 and expected["nightly-etl"]["restored"] == 2
    for graph in GRAPHS:
        for name in ("restored", "failed", "gave_up", "deferred", "retryable", "failures_found"):
            assert emu.metric_sum(name, graph=graph) == expected[graph][name], (graph, name)
        # One time_to_restore point per accepted restore: from the stop time to the restore.
        points = emu.metric_data("time_to_restore", graph=graph)
        assert len(points) == expected[graph]["restored"]
        assert all(point.value >= 120 for point in points)
        # No breaker opened: each batch that counted the graph says 0 for it.
        assert {p.value for p in emu.metric_data("breaker_open", graph=graph)} == {0}
    # One batch per invocation that had something to say (the redelivery had nothing new).
    received_at = {record.received_at for record in emu.metric_data()}
    assert len(received_at) == 2


def test_metrics_cloud_eye_did_not_take_are_sent_by_the_next_flush_and_counted_once():
    emu = DwrEmulator({AK: SK}, project_id=PROJECT)
    emu.seed("nightly-etl", "run-0", "fail")
    with emu:
        settings = Settings(
            endpoint=emu.url, workflow_api="dwr", project_id=PROJECT, access_key_id=AK,
            secret_access_key=SK, max_attempts=1,
            metrics=MetricsSettings(endpoint=emu.url, project_id=PROJECT),
        )  # fmt: skip
        store = MemoryStore()
        runtime = Runtime(settings, store, Reporter(logging.getLogger("metrics-down")))
        try:
            emu.faults_for(operation="metric_data").fail_next(10, status=503)
            item = Item("restore", "evt-1", "cloudevent", "nightly-etl", "run-0")
            (result,) = runtime.run([item], Invocation()).results
            assert result.outcome.value == "restored"  # Cloud Eye down costs the outcome nothing
            runtime.flush_events(5.0)
            assert emu.metric_data() == []
            emu.clear_faults()
            store.record_refailure(
                "nightly-etl", "run-0", time.time(), window=600, threshold=1, cooldown=300
            )
            runtime.flush_events(5.0)
            runtime.flush_events(5.0)
        finally:
            runtime.close()
    assert emu.metric_sum("restored", graph="nightly-etl") == 1
    assert emu.metric_sum("failures_found", graph="nightly-etl") == 1
    # The breaker opened before the batch went: it says so (1 while open or half-open).
    assert [p.value for p in emu.metric_data("breaker_open", graph="nightly-etl")] == [1]
