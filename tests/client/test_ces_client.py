"""The Cloud Eye metric sender: the official SDK's request on the wire, every rule Cloud Eye
documents checked before sending, and every answer - odd ones included - a clear verdict."""

from __future__ import annotations

import itertools
import json
import math
import re
import time

import pytest

from handler.client.ces import (
    MAX_BATCH_BYTES,
    CesClient,
    InvalidMetricError,
    MetricDatum,
    metric_batches,
    metric_data_body,
)
from handler.client.sending import SendOutcome
from handler.devtools.emulator import DwrEmulator
from tests.client.sdk_wire import AK, DATE_EPOCH, PROJECT, SK, TOKEN, assert_same_request, build_sdk

NOW_MS = int(DATE_EPOCH * 1000)
PATH = f"/V1.0/{PROJECT}/metric-data"
ANY = re.compile(".*")


def datum(name="restored", value=1, **overrides) -> MetricDatum:
    fields = {"dimensions": {"graph": "etl"}, "collect_time": NOW_MS, "unit": "count"}
    fields.update(overrides)
    return MetricDatum(name, value, **fields)


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def client(httpserver):
    sleeps = Sleeps()
    server = httpserver.url_for("").rstrip("/")
    ces = CesClient(
        AK, SK, PROJECT, server, timeout=(1.0, 2.0), sleep=sleeps, clock=lambda: DATE_EPOCH
    )
    ces.sleeps = sleeps
    yield ces
    ces.close()


# --- conformance with the official SDK --------------------------------------------------------

BATCHES = {
    "one count": [datum()],
    "a batch of every kind": [
        datum("restored", 3),
        datum("time_to_restore", 12.5, unit="s"),
        datum("breaker_open", 0, dimensions=(("graph", "etl"), ("rule", "default"))),
        datum("gave_up", 2, unit=None, ttl=3600),
        datum(
            "deferred",
            1.0,
            type="int",
            dimensions={"graph": "ünï-cödé", "b": "x", "c": "y", "d": "z"},
        ),
    ],
}


def sdk_request(batch):
    from huaweicloudsdkces.v1 import (
        CreateMetricDataRequest,
        CreateMetricDataRequestBody,
        MetricInfo,
        MetricsDimension,
    )

    items = [json.loads(metric_data_body("WORKFLOW.restore", [d]))[0] for d in batch]
    body = [
        CreateMetricDataRequestBody(
            metric=MetricInfo(
                namespace="WORKFLOW.restore",
                metric_name=item["metric"]["metric_name"],
                dimensions=[MetricsDimension(**d) for d in item["metric"]["dimensions"]],
            ),
            ttl=item["ttl"],
            collect_time=item["collect_time"],
            value=item["value"],
            unit=item.get("unit"),
            type=item["type"],
        )
        for item in items
    ]
    return CreateMetricDataRequest(body=body)


@pytest.mark.parametrize("token", [None, TOKEN], ids=["permanent", "temporary"])
@pytest.mark.parametrize("case", sorted(BATCHES))
def test_a_metric_batch_is_the_official_sdk_request_byte_for_byte(httpserver, token, case):
    from huaweicloudsdkces.v1 import CesClient as SdkCesClient

    httpserver.expect_request(PATH, method="POST").respond_with_data("", status=201)
    server = httpserver.url_for("").rstrip("/")
    sdk = build_sdk(SdkCesClient, server, token)
    assert sdk.create_metric_data(sdk_request(BATCHES[case])).status_code == 201
    with CesClient(AK, SK, PROJECT, server, token, clock=lambda: DATE_EPOCH) as ours:
        assert ours.put_metric_data(BATCHES[case]).accepted

    (theirs, _), (mine, _) = httpserver.log
    assert mine.headers["Content-Type"] == "application/json"
    assert_same_request(theirs, mine, token)


def test_the_body_is_the_documented_array_in_the_sdk_s_field_order():
    (item,) = json.loads(metric_data_body("WORKFLOW.restore", [datum("restored", 3)]))
    assert list(item) == ["metric", "ttl", "collect_time", "value", "unit", "type"]
    assert item == {
        "metric": {
            "namespace": "WORKFLOW.restore",
            "metric_name": "restored",
            "dimensions": [{"name": "graph", "value": "etl"}],
        },
        "ttl": 604800,
        "collect_time": NOW_MS,
        "value": 3,
        "unit": "count",
        "type": "int",
    }


# --- Cloud Eye's rules, checked before anything is sent ----------------------------------------


@pytest.mark.parametrize(
    "namespace",
    ["WORKFLOWrestore", "WO", "1WORKFLOW.restore", "WORKFLOW.1restore", "W-F.restore",
     "SYS.restore", "agt.restore", "A." + "b" * 31, "WORKFLOW.restore.extra"],
)  # fmt: skip
def test_a_namespace_cloud_eye_refuses_is_refused_at_construction(namespace):
    with pytest.raises(ValueError, match="namespace"):
        CesClient(AK, SK, PROJECT, "https://ces.cn-north-4.myhuaweicloud.com", namespace=namespace)


@pytest.mark.parametrize("namespace", ["A.b", "WORKFLOW.restore", "a" * 16 + "." + "b" * 15])
def test_namespaces_of_3_to_32_characters_are_taken(namespace):
    with CesClient(AK, SK, PROJECT, "ces.example", namespace=namespace) as client:
        assert client.namespace == namespace


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (datum(dimensions={}), "dimensions"),
        (datum(dimensions={f"d{i}": "v" for i in range(5)}), "dimensions"),
        (datum(dimensions=(("graph", "a"), ("graph", "b"))), "dimension name"),
        (datum(dimensions={"1graph": "etl"}), "dimension name"),
        (datum(dimensions={"graph": ""}), "dimension 'graph' value"),
        (datum(dimensions={"graph": "x" * 257}), "dimension 'graph' value"),
        (datum(dimensions={"graph": "a\nb"}), "dimension 'graph' value"),
        (datum("1restored"), "metric_name"),
        (datum("r" * 97), "metric_name"),
        (datum(value=math.nan), "value"),
        (datum(value=math.inf), "value"),
        (datum(value=True), "value"),
        (datum(value="3"), "value"),
        (datum(value=1.5, type="int"), "type"),
        (datum(type="double"), "type"),
        (datum(ttl=0), "ttl"),
        (datum(ttl=604801), "ttl"),
        (datum(collect_time=NOW_MS - 3 * 86_400_000), "collect_time"),
        (datum(collect_time=NOW_MS + 600_000), "collect_time"),
        (datum(collect_time=1.5), "collect_time"),
        (datum(unit="u" * 33), "unit"),
    ],
)
def test_a_datum_cloud_eye_would_refuse_stops_the_batch_before_sending(
    httpserver, client, bad, field
):
    with pytest.raises(InvalidMetricError) as caught:
        client.put_metric_data([datum(), bad])
    assert (caught.value.item, caught.value.field) == (1, field)
    assert httpserver.log == []


def test_collect_times_at_the_edges_of_cloud_eye_s_window_are_taken(httpserver, client):
    httpserver.expect_request(PATH).respond_with_data("", status=201)
    oldest = datum(collect_time=NOW_MS - 3 * 86_400_000 + 10_000)
    newest = datum(collect_time=NOW_MS + 600_000 - 10_000)
    assert client.put_metric_data([oldest, newest]).accepted


@pytest.mark.parametrize("size", [0, 10_001])
def test_a_batch_holds_1_to_10000_items(client, size):
    with pytest.raises(InvalidMetricError, match="1 to 10000 items"):
        client.put_metric_data([datum()] * size)


def test_a_batch_over_512_kb_is_refused_before_sending(httpserver, client):
    wide = datum(dimensions={name: "v" * 256 for name in ("a", "b", "c", "d")})
    per_item = len(metric_data_body("WORKFLOW.restore", [wide]))
    batch = [wide] * (MAX_BATCH_BYTES // per_item + 1)
    with pytest.raises(InvalidMetricError, match="512"):
        client.put_metric_data(batch)
    assert httpserver.log == []


def test_the_largest_batch_within_512_kb_is_one_request(httpserver, client):
    httpserver.expect_request(PATH).respond_with_data("", status=201)
    small = datum("r", 1, dimensions={"g": "e"}, unit=None)
    item = len(metric_data_body("WORKFLOW.restore", [small]))  # with its brackets
    fits = (MAX_BATCH_BYTES - 2 + 2) // (item - 2 + 2)  # items and their ", " separators
    assert len(metric_data_body("WORKFLOW.restore", [small] * fits)) <= MAX_BATCH_BYTES
    assert client.put_metric_data([small] * fits).accepted
    ((request, _),) = httpserver.log
    assert len(json.loads(request.get_data())) == fits


def test_metrics_for_many_graphs_split_into_the_fewest_batches_that_each_fit(httpserver, client):
    httpserver.expect_request(PATH).respond_with_data("", status=201)
    names = ("restored", "failed", "gave_up", "deferred", "retryable", "failures_found")
    data = [
        datum(name, 1, dimensions={"graph": f"graph-{g:04d}"})
        for g in range(2000)
        for name in names
    ]
    batches = metric_batches("WORKFLOW.restore", data)
    assert [d for batch in batches for d in batch] == data  # all of them, in order, once
    for batch in batches:
        assert len(metric_data_body("WORKFLOW.restore", batch)) <= MAX_BATCH_BYTES
        assert client.put_metric_data(batch).accepted
    assert len(batches) > 1
    for batch, following in itertools.pairwise(batches):  # none could have taken one more
        with pytest.raises(InvalidMetricError, match="512 KB"):
            metric_data_body("WORKFLOW.restore", [*batch, following[0]])
    assert sum(len(json.loads(r.get_data())) for r, _ in httpserver.log) == len(data)


# --- answers, odd ones included ----------------------------------------------------------------


def test_201_with_an_empty_body_is_accepted(httpserver, client):
    httpserver.expect_request(PATH).respond_with_data("", status=201)
    result = client.put_metric_data([datum()])
    assert (result.outcome, result.status, result.attempts) == (SendOutcome.ACCEPTED, 201, 1)


def test_a_5xx_is_tried_once_more_then_kept_for_later(httpserver, client):
    httpserver.expect_request(PATH).respond_with_json(
        {
            "code": 500,
            "element": "Error",
            "message": "x",
            "details": {"details": "Internal service error.", "code": "ces.0007"},
        },
        status=500,
    )
    result = client.put_metric_data([datum()])
    assert (result.outcome, result.attempts) == (SendOutcome.TRANSIENT, 2)
    assert (result.error_code, result.error_message) == ("ces.0007", "Internal service error.")


def test_a_429_with_a_long_retry_after_is_not_slept(httpserver, client):
    httpserver.expect_request(PATH).respond_with_json(
        {"code": "429", "message": "too many"}, status=429, headers={"Retry-After": "60"}
    )
    result = client.put_metric_data([datum()])
    assert (result.outcome, result.attempts, result.retry_after) == (SendOutcome.TRANSIENT, 1, 60)
    assert client.sleeps == []


@pytest.mark.parametrize(
    ("document", "code", "message"),
    [
        (
            {"code": 400, "element": "Bad Request", "message": "The system received a request "
             "which cannot be recognized", "details": {"details": "Some content in message "
             "body is not correct", "code": "ces.0014"}},
            "ces.0014",
            "Some content in message body is not correct",
        ),
        (
            {"http_code": "400",
             "message": {"details": "The request is invalid.", "code": "ces.0011"}},
            "ces.0011",
            "The request is invalid.",
        ),
    ],
)  # fmt: skip
def test_both_documented_cloud_eye_error_shapes_are_read(
    httpserver, client, document, code, message
):
    httpserver.expect_request(PATH).respond_with_json(document, status=400)
    result = client.put_metric_data([datum()])
    assert (result.outcome, result.error_code, result.error_message) == (
        SendOutcome.PERMANENT,
        code,
        message,
    )


def test_the_v1_403_for_a_missing_permission_is_kept_for_after_the_fix(httpserver, client):
    httpserver.expect_request(PATH).respond_with_json(
        {
            "http_code": "403",
            "message": {
                "details": "Policy doesn't allow [ces:metricData:create] to be performed",
                "code": "403",
            },
        },
        status=403,
    )
    result = client.put_metric_data([datum()])
    assert result.transient and result.credentials_refused
    assert "ces:metricData:create" in result.error_message


def test_an_html_200_may_have_been_taken_so_it_is_kept_not_counted_done(httpserver, client):
    httpserver.expect_request(PATH).respond_with_data("<html>hi</html>", content_type="text/html")
    result = client.put_metric_data([datum()])
    assert (result.outcome, result.maybe_sent, result.error_code) == (
        SendOutcome.TRANSIENT,
        True,
        "UnreadableAnswer",
    )


def test_a_200_json_object_counts_as_accepted(httpserver, client):
    httpserver.expect_request(PATH).respond_with_json({})
    assert client.put_metric_data([datum()]).accepted


def test_a_redirect_is_never_followed(httpserver, client):
    httpserver.expect_request(PATH).respond_with_data("", status=307, headers={"Location": "/x"})
    result = client.put_metric_data([datum()])
    assert (result.outcome, result.error_code, len(httpserver.log)) == (
        SendOutcome.PERMANENT,
        "Redirect",
        1,
    )


def test_secrets_stay_out_of_the_repr_and_of_results(httpserver):
    httpserver.expect_request(PATH).respond_with_json({"code": "x", "message": "no"}, status=400)
    server = httpserver.url_for("").rstrip("/")
    with CesClient(
        AK, "very-secret-key", PROJECT, server, "very-secret-token", clock=lambda: DATE_EPOCH
    ) as c:
        result = c.put_metric_data([datum()])
        assert "very-secret" not in repr(c) + repr(result)


def test_a_reset_after_sending_is_never_resent_so_a_batch_never_counts_twice():
    with DwrEmulator({AK: SK}, project_id=PROJECT) as emulator:
        emulator.reset_next(1, applied=True)
        with CesClient(AK, SK, PROJECT, emulator.url, sleep=Sleeps()) as client:
            now_ms = int(time.time() * 1000)
            result = client.put_metric_data([datum(collect_time=now_ms)])
        assert (result.outcome, result.maybe_sent, result.attempts) == (
            SendOutcome.TRANSIENT,
            True,
            1,
        )
        assert emulator.metric_sum("restored", graph="etl") == 1  # once, not twice
