"""The sweep on a bad day: odd list answers, odd overrides, and the timer never raising.

Whatever one graph's list answers - a name against the rule, a marker the client refuses or
that repeats, a stop time no date can hold, a row that cannot be restored - that graph (or
row) is named in the summary's ``errors`` and the other graphs are swept. Overrides have
upper bounds and the depth limits of every body; a bad one is a 400 (and, from a timer, an
ERROR line), plain text in a timer's ``user_event`` runs the default sweep with a WARNING.

The service is tests/test_sweep.py's stand-in on pytest-httpserver, with the list answers
each test needs; the function runs through its real entry points.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from handler import cli
from handler.settings import SettingsError, load_settings
from tests.cli.conftest import one_line_error
from tests.conftest import AUTH_TOKEN, log_lines
from tests.test_entry_events import FunctionGraphContext
from tests.test_sweep import NOW, WorkflowService, _json, iso
from tests.test_sweep import sweeper as sweeper  # the fixture, shared

# A stand-in answers at most this many graph-list calls truncated: even a sweep that
# followed a looping list for ever ends, so a regression fails here instead of hanging.
GRAPH_LIST_CALLS_BEFORE_THE_END = 40


class OddListService(WorkflowService):
    """The stand-in, with a graph list and execution pages each test shapes.

    ``graph_list(start)`` answers the graph list (``start`` as the caller sent it);
    ``odd_pages[graph](args)`` answers that graph's execution list, when set.
    """

    def __init__(self) -> None:
        super().__init__()
        self.graph_list = None
        self.graph_list_calls = 0
        self.odd_pages: dict = {}

    def _answer(self, request):
        path, args = request.path, request.args
        if path == "/v2/workflows/" and self.graph_list is not None:
            self.graph_list_calls += 1
            document = self.graph_list(args.get("x-workflow-start"))
            if self.graph_list_calls >= GRAPH_LIST_CALLS_BEFORE_THE_END:
                document = {**document, "is_truncated": False}
            return _json(document)
        graph = args.get("x-workflow-graph-name")
        if path == "/v2/workflowexecutions" and graph in self.odd_pages:
            self.list_queries.append(args.to_dict())
            return _json(self.odd_pages[graph](args))
        return super()._answer(request)


@pytest.fixture
def service(httpserver):
    fake = OddListService()
    httpserver.expect_request(re.compile(".*")).respond_with_handler(fake)
    return fake


def failed_row(graph: str, name: str, stopped: str | None = None) -> dict:
    return {
        "graph_urn": f"urn:fgs:r:p:graph:{graph}",
        "execution_urn": f"urn:fgs:r:p:execution:{graph}:{name}:d",
        "execution_name": name,
        "execution_type": "APICALL",
        "execution_state": "FAILED",
        "started_at": iso(NOW - timedelta(minutes=10)),
        "stopped_at": stopped or iso(NOW - timedelta(minutes=5)),
    }


def graph_page(*names: str, next_start=None) -> dict:
    truncated = next_start is not None
    page = {"count": len(names), "is_truncated": truncated, "graphs": [{"name": n} for n in names]}
    return {**page, "next_start": next_start} if truncated else page


def errors_by_code(document: dict) -> dict:
    return {error["errorCode"]: error for error in document["sweep"]["errors"]}


# --- 19.5: one odd value stays local ------------------------------------------------------


def test_a_graph_named_against_the_rule_is_reported_and_the_other_graphs_swept(service, sweeper):
    for graph in ("graph-1", "graph-2"):
        service.add(graph, "run-1", "FAILED", NOW - timedelta(minutes=5))
    service.graph_list = lambda start: graph_page("graph-1", "my.graph", "graph-2")
    document = sweeper()()
    assert document["statusCode"] == 200
    assert sorted(service.restores) == [("graph-1", "run-1"), ("graph-2", "run-1")]
    (error,) = document["sweep"]["errors"]
    assert (error["graph"], error["errorCode"]) == ("my.graph", "InvalidGraphName")
    assert "must start with a letter or digit" in error["message"]
    assert document["sweep"]["graphsScanned"] == 2
    assert not any(q.get("x-workflow-graph-name") == "my.graph" for q in service.list_queries)


def test_a_next_marker_the_client_refuses_ends_that_graph_and_the_others_are_swept(
    service, sweeper
):
    service.add("graph-2", "run-1", "FAILED", NOW - timedelta(minutes=5))
    service.graph_list = lambda start: graph_page("graph-1", "graph-2")
    service.odd_pages["graph-1"] = lambda args: {
        "count": 1,
        "is_truncated": True,
        "next_marker": "APICALL run-1/../../x",  # not a marker this API hands out
        "executions": [failed_row("graph-1", "run-1")],
    }
    service.executions[("graph-1", "run-1")] = failed_row("graph-1", "run-1")  # to restore
    document = sweeper()()
    assert document["statusCode"] == 200
    assert sorted(service.restores) == [("graph-1", "run-1"), ("graph-2", "run-1")]
    error = errors_by_code(document)["BadListMarker"]
    assert error["graph"] == "graph-1" and "nextMarker" in error["message"]
    assert "status" not in error  # every call was answered; its answer could not be followed


def test_a_stop_time_no_date_can_hold_and_an_unrestorable_row_do_not_stop_the_sweep(
    service, sweeper
):
    service.add("graph-2", "run-1", "FAILED", NOW - timedelta(minutes=5))
    service.graph_list = lambda start: graph_page("graph-1", "graph-2")
    odd = failed_row("graph-1", "run-odd", stopped="99999999999999999")  # epoch ms, year 3e6
    service.executions[("graph-1", "run-odd")] = odd
    service.odd_pages["graph-1"] = lambda args: {
        "count": 2,
        "is_truncated": False,
        "executions": [odd, failed_row("graph-1", "a.b"), failed_row("graph-1", "x" * 80)],
    }
    document = sweeper()()
    assert document["statusCode"] == 200
    # A time that cannot be read is undated: kept (the query confirms it is failed).
    assert sorted(service.restores) == [("graph-1", "run-odd"), ("graph-2", "run-1")]
    assert {r["eventId"] for r in document["results"]} >= {
        "sweep:graph-1:run-odd:99999999999999999"
    }
    rows = [e for e in document["sweep"]["errors"] if e["errorCode"] == "InvalidExecutionName"]
    assert [(e["graph"], e["execution"]) for e in rows] == [
        ("graph-1", "a.b"),
        ("graph-1", "x" * 64),
    ]


@pytest.mark.parametrize("lookback", ["800000d", "31d", "9" * 400, 10**500])
def test_a_lookback_past_its_upper_bound_is_a_400_from_a_timer_and_from_post_sweep(
    service, sweeper, http_function, lookback
):
    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(minutes=5))
    overrides = json.dumps({"lookback": lookback})
    document = sweeper()(overrides)
    assert (document["statusCode"], document["error"]["code"]) == (400, "BadSweepRequest")
    assert document["error"]["message"] == "lookback: must be at most 30d"
    response = http_function().post(
        "/sweep",
        data=overrides,
        headers={"Authorization": f"Bearer {AUTH_TOKEN}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["message"] == "lookback: must be at most 30d"
    assert service.restores == []


def test_the_longest_lookback_is_30_days_and_sweeps(service, sweeper):
    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(days=29))
    document = sweeper()(json.dumps({"lookback": "30d"}))
    assert document["sweep"]["outcomes"] == {"restored": 1}


def test_a_lookback_setting_past_its_upper_bound_stops_the_start_up(function_env):
    environment = {**function_env, "RESTORE_SWEEP_LOOKBACK": "800000d"}
    with pytest.raises(SettingsError, match="RESTORE_SWEEP_LOOKBACK: must be at most 30d"):
        load_settings(environment)


def test_a_lookback_flag_past_its_upper_bound_is_one_line_and_exit_2(service, function_env, capsys):
    function_env.apply()
    assert cli.main(["sweep", "--lookback", "800000d"]) == 2
    assert one_line_error(capsys) == "error: --lookback: must be at most 30d"
    assert service.restores == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"graphs": [f"graph-{i}" for i in range(1001)]}, "at most 1000 are allowed"),
        ({"graphs": []}, "graphs must name at least one graph"),
        ({"lookback": True}, "lookback must be a duration"),
        ({"lookback": {"hours": 6}}, "lookback must be a duration"),
    ],
)
def test_overrides_out_of_bounds_are_a_400(service, sweeper, overrides, message):
    document = sweeper()(json.dumps(overrides))
    assert document["statusCode"] == 400
    assert message in document["error"]["message"]


def test_a_graph_named_twice_in_the_overrides_is_swept_once(service, sweeper):
    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(minutes=5))
    document = sweeper()(json.dumps({"graphs": ["graph-1", "graph-1"]}))
    assert document["sweep"]["graphsScanned"] == 1
    assert len(service.list_queries) == 1


def nested(depth: int) -> str:
    return '{"graphs": ' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize("depth", [16, 100_000])
def test_a_deeply_nested_sweep_body_is_a_400_too_deep(service, http_function, depth):
    response = http_function().post(
        "/sweep",
        data=nested(depth),
        headers={"Authorization": f"Bearer {AUTH_TOKEN}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "TooDeep"
    assert service.restores == [] and service.list_queries == []


@pytest.mark.parametrize("depth", [16, 100_000])
def test_a_deeply_nested_user_event_is_refused_at_error_level(service, sweeper, capsys, depth):
    document = sweeper()(nested(depth))
    assert (document["statusCode"], document["error"]["code"]) == (400, "TooDeep")
    (line,) = [e for e in log_lines(capsys.readouterr().out) if e["message"] == "sweep refused"]
    assert (line["level"], line["errorCode"]) == ("ERROR", "TooDeep")
    assert service.list_queries == []


def test_the_timer_never_raises_whatever_the_platform_says_of_the_time_left(service, sweeper):
    """A remaining time that is not a number of milliseconds (here infinite) is no deadline:
    the sweep runs (it used to raise from the lease's TTL)."""
    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(minutes=5))
    context = FunctionGraphContext(remaining_ms=float("inf"), agency=None)
    document = sweeper()(context=context)
    assert document["statusCode"] == 200
    assert document["sweep"]["outcomes"] == {"restored": 1}


# --- 19.8: the graph list is bounded --------------------------------------------------------


def test_a_graph_list_that_repeats_its_next_start_ends_with_an_error(service, sweeper):
    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(minutes=5))
    service.graph_list = lambda start: graph_page("graph-1", next_start=2)  # for ever page 2
    document = sweeper()(context=FunctionGraphContext(remaining_ms=20_000, agency=None))
    assert service.graph_list_calls == 2
    assert service.restores == [("graph-1", "run-1")]
    assert len(document["results"]) == 1  # the one failure, once: not once a page
    error = errors_by_code(document)["RepeatedListMarker"]
    assert error["graph"] is None and "graph list" in error["message"]


def test_a_graph_list_without_end_stops_at_the_page_limit_with_an_error(service, sweeper):
    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(minutes=5))
    service.graph_list = lambda start: graph_page("graph-1", next_start=int(start or 1) + 1)
    document = sweeper(RESTORE_SWEEP_MAX_PAGES="5")()
    assert service.graph_list_calls == 5
    assert errors_by_code(document)["PageLimitReached"]["graph"] is None
    assert service.restores == [("graph-1", "run-1")]


def test_a_truncated_graph_list_page_without_a_next_start_is_an_error(service, sweeper):
    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(minutes=5))
    service.graph_list = lambda start: {**graph_page("graph-1"), "is_truncated": True}
    document = sweeper()()
    assert errors_by_code(document)["NoNextMarker"]["graph"] is None
    assert service.restores == [("graph-1", "run-1")]


def test_the_command_line_ends_a_looping_graph_list_too(service, function_env, capsys):
    """The command line has no deadline: only the list's own bounds end a looping list."""
    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(minutes=5))
    service.graph_list = lambda start: graph_page("graph-1", next_start=7)
    function_env.apply()
    assert cli.main(["sweep", "--json"]) == 1  # a listing error: exit 1
    document = json.loads(capsys.readouterr().out)
    assert service.graph_list_calls == 2
    assert list(errors_by_code(document)) == ["RepeatedListMarker"]
    assert service.restores == [("graph-1", "run-1")]


def test_an_execution_list_that_repeats_its_marker_ends_that_graph_with_an_error(service, sweeper):
    service.graph_list = lambda start: graph_page("graph-1")
    service.executions[("graph-1", "run-1")] = failed_row("graph-1", "run-1")
    service.odd_pages["graph-1"] = lambda args: {
        "count": 1,
        "is_truncated": True,
        "next_marker": "APICALLrun-1",
        "executions": [failed_row("graph-1", "run-1")],
    }
    document = sweeper()()
    assert len(service.list_queries) == 2
    assert errors_by_code(document)["RepeatedListMarker"]["graph"] == "graph-1"
    assert service.restores == [("graph-1", "run-1")] and len(document["results"]) == 1


def test_the_summary_names_at_most_50_errors_and_counts_the_rest(service, sweeper):
    names = [f"bad.{i}" for i in range(70)]
    service.graph_list = lambda start: graph_page(*names)
    summary = sweeper()()["sweep"]
    assert len(summary["errors"]) == 50 and summary["errorsLeftOff"] == 20


# --- 19.16: a timer's additional information -----------------------------------------------


@pytest.mark.parametrize("user_event", ["User Event", "[1]", "nightly sweep {please}", "[" * 10**5])
def test_plain_text_in_user_event_runs_the_default_sweep_with_a_warning(
    service, sweeper, capsys, user_event
):
    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(minutes=5))
    document = sweeper()(user_event)
    assert document["statusCode"] == 200
    assert document["sweep"]["outcomes"] == {"restored": 1}
    lines = log_lines(capsys.readouterr().out)
    (warning,) = [line for line in lines if line["message"] == "sweep overrides ignored"]
    assert warning["level"] == "WARNING"
    assert warning["reason"] == "user_event is not a JSON object: the default sweep runs"


@pytest.mark.parametrize(
    "user_event", ['{"graphs": ["graph-1"]', "{graphs: [graph-1]}", '  {"lookback": "6x"}']
)
def test_a_malformed_json_object_in_user_event_is_refused_at_error_level(
    service, sweeper, capsys, user_event
):
    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(minutes=5))
    document = sweeper()(user_event)
    assert (document["statusCode"], document["error"]["code"]) == (400, "BadSweepRequest")
    assert service.restores == [] and service.list_queries == []
    (line,) = [e for e in log_lines(capsys.readouterr().out) if e["message"] == "sweep refused"]
    assert line["level"] == "ERROR" and line["reason"] == document["error"]["message"]


def test_the_command_line_prints_each_error_with_its_code_and_message(
    service, function_env, capsys
):
    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(minutes=5))
    service.graph_list = lambda start: graph_page("graph-1", "my.graph")
    function_env.apply()
    assert cli.main(["sweep"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^listing errors +1$", out, re.M)
    assert "error: my.graph: InvalidGraphName invalid graph name: 'my.graph' must start" in out
