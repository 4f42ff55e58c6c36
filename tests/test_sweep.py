"""The sweep: failures found by listing are restored once, through the normal pipeline.

The service is a small stateful stand-in on pytest-httpserver that serves both APIs' list,
query and restore calls (paging as each API pages); the function runs through its real
entry points (FunctionGraph timer event, ``POST /sweep``).
"""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime, timedelta, timezone

import pytest
from werkzeug import Response

from tests.conftest import AUTH_TOKEN, log_lines
from tests.test_entry_events import FunctionGraphContext

PROJECT = "0123456789abcdef0123456789abcdef"
NOW = datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class WorkflowService:
    """Executions by graph, served in the OBS (marker) or DWR (offset) list shape."""

    def __init__(self) -> None:
        self.executions: dict[tuple[str, str], dict] = {}
        self.restores: list[tuple[str, str]] = []
        self.restore_calls = 0  # every restore request, accepted or refused
        self.lagging: set[tuple[str, str]] = set()  # restored, but still reads as failed
        self.fail_list: dict[str, int] = {}  # graph -> status its list calls answer
        self.stale: set[tuple[str, str]] = set()  # listed as failed, really running
        self.sink_events: list[dict] = []  # what the function published to /sink
        self.list_queries: list[dict] = []  # the query of every list call
        self.lock = threading.Lock()

    def add(self, graph: str, name: str, state: str, stopped: datetime | None, kind="APICALL"):
        self.executions[(graph, name)] = {
            "graph_urn": f"urn:fgs:r:p:graph:{graph}",
            "execution_urn": f"urn:fgs:r:p:execution:{graph}:{name}:d",
            "execution_name": name,
            "execution_type": kind,
            "execution_state": state,
            "started_at": iso((stopped or NOW) - timedelta(minutes=5)),
            "stopped_at": iso(stopped) if stopped else None,
        }

    def graphs(self) -> list[str]:
        return sorted({graph for graph, _ in self.executions})

    def listed(self, graph: str) -> list[dict]:
        rows = []
        for (g, name), row in sorted(self.executions.items()):
            if g == graph:
                state = "FAILED" if (g, name) in self.stale else row["execution_state"]
                rows.append({**row, "execution_state": state})
        return sorted(rows, key=lambda r: r["execution_type"] + r["execution_name"])

    def __call__(self, request) -> Response:
        with self.lock:
            return self._answer(request)

    def _answer(self, request) -> Response:
        path, args = request.path, request.args
        if path == "/sink":
            self.sink_events.append(json.loads(request.get_data()))
            return Response("", status=202)
        if path == "/v2/workflows/" or path == f"/v3/{PROJECT}/workflows":
            return _json(
                {"count": 1, "is_truncated": False, "graphs": [{"name": g} for g in self.graphs()]}
            )
        if path in ("/v2/workflowexecutions", f"/v3/{PROJECT}/workflowexecutions"):
            graph = args.get("x-workflow-graph-name") or args.get("graph_name")
            if graph in self.fail_list:
                return _json({"code": "WF.500", "message": "list failed"}, self.fail_list[graph])
            return self._page(graph, args, dwr=path.startswith("/v3"))
        match = re.fullmatch(r"/v2/workflowexecutions/([\w-]+)", path) or re.fullmatch(
            rf"/v3/{PROJECT}/workflows/[\w-]+/workflowexecution/([\w-]+)(/retry)?", path
        )
        graph = args.get("x-workflow-graph-name") or path.split("/")[4]
        key = (graph, match.group(1))
        row = self.executions[key]
        if request.method == "GET":
            state = row["execution_state"]
            if path.startswith("/v3"):
                status = {"FAILED": "fail", "RUNNING": "running"}.get(state, state.lower())
                nodes = [{"status": "success", "error_message": ""}]
                if state == "FAILED":
                    nodes.append({"status": "fail", "error_message": f"{key[1]}: disk full"})
                return _json({"status": status, "node_execution_details": nodes})
            return _json({"execution_info": {"execution_state": state}})
        self.restore_calls += 1
        if row["execution_state"] != "FAILED":
            return _json({"code": "WF.409", "message": "not failed"}, 409)
        if key not in self.lagging:
            row["execution_state"] = "RUNNING"
        self.restores.append(key)
        return _json({"execution_urn": row["execution_urn"], "execution_name": key[1]})

    def _page(self, graph: str, args, *, dwr: bool) -> Response:
        self.list_queries.append(args.to_dict())
        rows = self.listed(graph)
        if dwr:
            rows = [r for r in rows if r["execution_state"] == "FAILED"]
            limit, offset = int(args.get("limit", 10)), int(args.get("offset", 1))
            page = rows[offset - 1 : offset - 1 + limit]
            more = offset - 1 + limit < len(rows)
            extra = {"next_offset": offset + limit} if more else {}
        else:
            limit, marker = (
                int(args.get("x-workflow-limit", 10)),
                args.get("x-workflow-next-marker"),
            )
            if marker:
                rows = [r for r in rows if r["execution_type"] + r["execution_name"] > marker]
            page, more = rows[:limit], len(rows) > limit
            last = page[-1] if page else None
            extra = {"next_marker": last["execution_type"] + last["execution_name"]} if more else {}
        return _json({"count": len(page), "is_truncated": more, "executions": page, **extra})


def _json(document: dict, status: int = 200) -> Response:
    return Response(json.dumps(document), status=status, content_type="application/json")


@pytest.fixture
def service(httpserver):
    fake = WorkflowService()
    httpserver.expect_request(re.compile(".*")).respond_with_handler(fake)
    return fake


@pytest.fixture
def sweeper(load_function, function_env, httpserver):
    """Load the function for the chosen API; returns ``sweep(user_event) -> document``."""

    def factory(api: str = "obs", **env):
        if api == "dwr":
            del function_env["OBS_ENDPOINT"]
            function_env.update(
                WORKFLOW_API="dwr",
                DWR_ENDPOINT=httpserver.url_for("").rstrip("/"),
                DWR_PROJECT_ID=PROJECT,
            )
        function_env.update(env)
        main = load_function()

        def sweep(user_event: str = "", context=None) -> dict:
            event = {"version": "v1.0", "time": iso(NOW), "trigger_type": "TIMER",
                     "trigger_name": "sweep", "user_event": user_event}  # fmt: skip
            return main.handler(event, context or FunctionGraphContext(agency=None))

        sweep.main = main  # the loaded function, for tests that also deliver events
        return sweep

    return factory


def seed_many(service: WorkflowService, graphs=3, per_graph=45) -> set[tuple[str, str]]:
    """Mixed states over several pages; returns the failures inside the 24h window."""
    expected = set()
    for g in range(graphs):
        graph = f"graph-{g}"
        for i in range(per_graph):
            name, kind = f"run-{i:03d}", ("APICALL", "TRIGGERCAL")[i % 2]
            if i % 5 == 0:
                service.add(graph, name, "FAILED", NOW - timedelta(hours=1), kind)
                expected.add((graph, name))
            elif i % 7 == 0:
                service.add(graph, name, "FAILED", NOW - timedelta(hours=30), kind)  # too old
            else:
                service.add(graph, name, ("SUCCESS", "RUNNING")[i % 2], NOW, kind)
    return expected


@pytest.mark.parametrize("api", ["obs", "dwr"])
def test_a_timer_restores_each_failure_in_the_window_once_and_a_second_sweep_nothing(
    service, sweeper, api
):
    expected = seed_many(service)
    sweep = sweeper(api, RESTORE_SWEEP_MAX_RESTORES="1000")
    document = sweep()
    assert set(service.restores) == expected and len(service.restores) == len(expected)
    summary = document["sweep"]
    assert summary["failuresFound"] == len(expected)
    assert summary["outcomes"] == {"restored": len(expected)}
    assert summary["graphsScanned"] == 3 and summary["errors"] == []

    again = sweep()
    assert len(service.restores) == len(expected)  # nothing restored twice
    assert again["sweep"]["failuresFound"] == 0  # they are running now


def test_obs_listing_reads_every_page_by_marker(service, sweeper, httpserver, monkeypatch):
    from handler.client import obs as obs_client

    monkeypatch.setattr(obs_client, "FAILURE_PAGE_SIZE", 7)
    expected = seed_many(service, graphs=1, per_graph=45)
    document = sweeper("obs", RESTORE_SWEEP_GRAPHS="graph-0", RESTORE_SWEEP_MAX_RESTORES="100")()
    assert document["sweep"]["pages"] == 7  # 45 executions, 7 a page
    assert document["sweep"]["executionsListed"] == 45
    assert set(service.restores) == expected


def test_the_restore_cap_leaves_the_rest_for_the_next_sweep(service, sweeper):
    expected = seed_many(service, graphs=1, per_graph=45)  # 9 failures in the window
    sweep = sweeper("obs", RESTORE_SWEEP_MAX_RESTORES="4")
    first = sweep()["sweep"]
    assert (len(service.restores), first["waitingForNextSweep"]) == (4, 5)
    second = sweep()["sweep"]
    assert (len(service.restores), second["waitingForNextSweep"]) == (8, 1)
    sweep()
    assert set(service.restores) == expected


def test_a_stale_list_answer_does_not_restore_an_execution_restored_meanwhile(service, sweeper):
    service.add("graph-1", "run-1", "RUNNING", NOW - timedelta(minutes=5))
    service.stale.add(("graph-1", "run-1"))  # still listed as failed
    document = sweeper()()
    assert service.restore_calls == 0  # asked first, not refused by the service
    (result,) = document["results"]
    assert result["outcome"] == "skipped" and "stale" in result["reason"]


def test_an_execution_restored_within_the_grace_period_is_left_alone(service, sweeper):
    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(minutes=5))
    service.lagging.add(("graph-1", "run-1"))  # list and query still say failed after restore
    sweep = sweeper()
    event = {"graphName": "graph-1", "executionName": "run-1"}
    assert sweep.main.handler(event, FunctionGraphContext(agency=None))["summary"] == {
        "restored": 1
    }
    document = sweep()
    assert service.restores == [("graph-1", "run-1")]  # not a second time
    (result,) = document["results"]
    assert result["outcome"] == "skipped" and "RESTORE_SWEEP_GRACE" in result["reason"]


def test_a_failure_restored_by_an_event_is_not_restored_again_by_the_sweep(
    service, sweeper, httpserver
):
    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(minutes=5))
    sweep = sweeper()
    event = {"graphName": "graph-1", "executionName": "run-1"}
    assert sweep.main.handler(event, FunctionGraphContext(agency=None))["summary"] == {
        "restored": 1
    }
    service.stale.add(("graph-1", "run-1"))  # the list has not caught up yet
    assert sweep()["sweep"]["outcomes"] == {"skipped": 1}
    assert service.restores == [("graph-1", "run-1")]


def test_a_graph_that_cannot_be_listed_is_reported_and_the_others_are_swept(service, sweeper):
    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(minutes=5))
    service.add("graph-2", "run-1", "FAILED", NOW - timedelta(minutes=5))
    service.fail_list["graph-1"] = 403
    document = sweeper(OBS_MAX_ATTEMPTS="1")()
    assert service.restores == [("graph-2", "run-1")]
    (error,) = document["sweep"]["errors"]
    assert (error["graph"], error["status"]) == ("graph-1", 403)


def test_the_lookback_window_edges(service, sweeper):
    service.add("graph-1", "inside", "FAILED", NOW - timedelta(hours=5, minutes=50))
    service.add("graph-1", "outside", "FAILED", NOW - timedelta(hours=6, minutes=10))
    service.add("graph-1", "undated", "FAILED", None)  # started 5 min ago: kept
    document = sweeper(RESTORE_SWEEP_LOOKBACK="6h")()
    assert sorted(name for _, name in service.restores) == ["inside", "undated"]
    assert document["sweep"]["failuresFound"] == 2


def test_user_event_overrides_graphs_lookback_and_dry_run(service, sweeper):
    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(hours=2))
    service.add("graph-2", "run-1", "FAILED", NOW - timedelta(hours=2))
    sweep = sweeper()
    dry = sweep(json.dumps({"graphs": ["graph-1"], "dryRun": True}))
    assert dry["sweep"]["outcomes"] == {"dry_run": 1} and service.restores == []
    narrow = sweep(json.dumps({"lookback": "1h"}))
    assert narrow["sweep"]["failuresFound"] == 0
    sweep(json.dumps({"graphs": ["graph-2"]}))
    assert service.restores == [("graph-2", "run-1")]


@pytest.mark.parametrize(
    "user_event",
    ['{"graphs": ', '{"graphs": "graph-1"}', '{"graphs": ["a/b"]}', '{"lookback": "soon"}',
     '{"dryRun": "yes"}', '{"restoreEverything": true}', '{"graphs": []}'],
)  # fmt: skip
def test_bad_timer_overrides_are_a_400_not_a_crash(service, sweeper, user_event, capsys):
    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(minutes=5))
    document = sweeper()(user_event)
    assert document["statusCode"] == 400
    assert document["error"]["code"] == "BadSweepRequest"
    assert service.restores == []
    (line,) = [e for e in log_lines(capsys.readouterr().out) if e["message"] == "sweep refused"]
    assert line["level"] == "ERROR" and line["errorCode"] == "BadSweepRequest"


def test_a_second_sweep_while_one_holds_the_lease_ends_at_once(service, sweeper, function_env):
    from handler.store import open_store

    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(minutes=5))
    sweep = sweeper()
    with open_store(function_env["RESTORE_STATE_URL"]) as store:
        held = store.claim("sweep:lease", 60)
        document = sweep()
        assert document["sweep"]["stopped"] == "sweep in progress"
        assert service.restores == []
        store.release("sweep:lease", held.token)
    assert sweep()["sweep"]["outcomes"] == {"restored": 1}


def test_the_deadline_stops_a_sweep_cleanly_and_the_next_one_goes_on(service, sweeper):
    seed_many(service, graphs=2, per_graph=10)
    sweep = sweeper()
    short = sweep(context=FunctionGraphContext(remaining_ms=2_500, agency=None))["sweep"]
    assert short["stopped"] == "deadline" and service.restores == []
    assert sweep()["sweep"]["outcomes"] == {"restored": 4}


def test_the_summary_line_and_failure_events(service, sweeper, httpserver, capsys):
    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(minutes=5))
    sink_events = service.sink_events
    sweeper(RESTORE_EVENT_SINK=httpserver.url_for("/sink"))()
    (summary,) = [
        line for line in log_lines(capsys.readouterr().out) if line["message"] == "sweep finished"
    ]
    assert summary["sweep"]["failuresFound"] == 1
    types = sorted(event["type"] for event in sink_events)
    assert types == [
        "com.huaweicloud.obs.workflow.execution.failed",
        "com.huaweicloud.obs.workflow.execution.restored",
    ]
    failed = next(e for e in sink_events if e["type"].endswith(".failed"))
    assert failed["data"]["executionName"] == "run-1" and failed["data"]["stoppedAt"]


def test_an_authenticated_post_to_sweep_runs_one_from_the_http_function(service, http_function):
    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(minutes=5))
    client = http_function()
    assert client.post("/sweep").status_code == 401
    response = client.post(
        "/sweep",
        data=json.dumps({"graphs": ["graph-1"]}),
        headers={"Authorization": f"Bearer {AUTH_TOKEN}", "Content-Type": "application/json"},
    )
    assert response.status_code == 200
    assert response.get_json()["sweep"]["outcomes"] == {"restored": 1}


def test_a_dwr_failure_carries_the_failed_node_s_error_message(service, sweeper, capsys):
    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(minutes=5))
    document = sweeper("dwr")()
    (result,) = document["results"]
    assert (result["outcome"], result["executionError"]) == ("restored", "run-1: disk full")
    (line,) = [line for line in log_lines(capsys.readouterr().out) if line.get("eventId")]
    assert line["executionError"] == "run-1: disk full"


def test_the_dwr_window_reaches_back_past_the_lookback_and_past_now(service, sweeper):
    """The service's window may filter on start time in whole seconds: a run that started
    before the lookback but failed inside it, or one from this very second, must be listed."""
    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(minutes=5))
    sweeper("dwr", RESTORE_SWEEP_LOOKBACK="6h")()
    (query,) = service.list_queries
    start = datetime.strptime(query["start_time"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=timezone.utc
    )
    end = datetime.strptime(query["end_time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert start <= NOW - timedelta(hours=6 + 23)
    assert end > datetime.now(timezone.utc)
