"""The emulator's SMN publish and Cloud Eye metric-data routes, beside the DWR API: they check
the signature and the project, keep what they received, and fail on demand."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from handler.client import DwrClient
from handler.client.ces import CesClient, MetricDatum
from handler.client.dwr_signing import DwrSigner, sdk_date
from handler.client.sending import SendOutcome
from handler.client.smn import SmnClient
from handler.credentials import Credentials
from handler.devtools.emulator import DwrEmulator

AK = "AK-notify-emulator-test"
SK = "SK-notify-emulator-test-secret-0123456789"
TOKEN = "TOKEN-notify-temporary-0123456789"
PROJECT = "0123456789abcdef0123456789abcdef"
TOPIC = f"urn:smn:cn-north-4:{PROJECT}:restore-alerts"
GRAPH, EXECUTION = "graph-1", "exec-1"
REPO = Path(__file__).resolve().parents[2]


def no_sleep(_seconds: float) -> None:
    return None


@pytest.fixture
def emu():
    emulator = DwrEmulator({AK: SK}, project_id=PROJECT, topics=["restore-alerts"])
    emulator.seed(GRAPH, EXECUTION, "fail")
    with emulator:
        yield emulator


def smn(emu, sk: str = SK) -> SmnClient:
    return SmnClient(AK, sk, TOPIC, emu.url, sleep=no_sleep)


def ces(emu, project=PROJECT, sk=SK, token=None) -> CesClient:
    return CesClient(AK, sk, project, emu.url, token, sleep=no_sleep)


def now_ms() -> int:
    return int(time.time() * 1000)


def count(name: str, value: float, graph: str = GRAPH) -> MetricDatum:
    return MetricDatum(name, value, {"graph": graph}, now_ms(), unit="count")


def signed_post(emu, path: str, body: bytes, *, project: str = PROJECT) -> requests.Response:
    """A request signed as a client would, carrying any body (what no client would send)."""
    host = emu.url.split("://", 1)[1]
    signed = {
        "Content-Type": "application/json",
        "Host": host,
        "X-Project-Id": project,
        "X-Sdk-Date": sdk_date(),
    }
    headers = {**signed, **DwrSigner(Credentials(AK, SK)).sign("POST", path, {}, signed, body)}
    return requests.post(emu.url + path, data=body, headers=headers, timeout=5)


PUBLISH_PATH = f"/v2/{PROJECT}/notifications/topics/{TOPIC}/publish"
METRIC_PATH = f"/V1.0/{PROJECT}/metric-data"


# --- SMN ----------------------------------------------------------------------------------------


def test_a_publish_is_kept_with_its_text_for_each_protocol(emu):
    with smn(emu) as client:
        result = client.publish("Gave up: graph-1/exec-1", "story", email="long story", sms="sms")
    assert result.accepted
    (kept,) = emu.publishes(TOPIC)
    assert (kept.message_id, kept.subject, kept.topic_urn) == (
        result.message_id,
        "Gave up: graph-1/exec-1",
        TOPIC,
    )
    assert (kept.text(), kept.text("email"), kept.text("sms"), kept.text("http")) == (
        "story",
        "long story",
        "sms",
        "story",  # a protocol without its own text reads the default
    )


def test_a_publish_to_a_topic_that_does_not_exist_is_a_404(emu):
    other = f"urn:smn:cn-north-4:{PROJECT}:nobody-listens"
    with SmnClient(AK, SK, other, emu.url) as client:
        result = client.publish("s", "d")
    assert (result.outcome, result.status, result.error_code) == (
        SendOutcome.PERMANENT,
        404,
        "SMN.0006",
    )
    assert emu.publishes() == []


def test_a_topic_created_later_takes_messages(emu):
    urn = emu.create_topic("later")
    assert urn == f"urn:smn:cn-north-4:{PROJECT}:later"
    with SmnClient(AK, SK, urn, emu.url) as client:
        assert client.publish("s", "d").accepted
    assert [p.topic_urn for p in emu.publishes()] == [urn]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"not json", "not JSON"),
        (b"[]", "JSON object"),
        (b'{"subject": "s"}', "message_structure or message"),
        (b'{"message_structure": "{\\"email\\": \\"no default\\"}"}', "default"),
        (b'{"message_structure": "not json"}', "not JSON"),
        (json.dumps({"subject": "é" * 257, "message": "m"}).encode(), "512 bytes"),
        (json.dumps({"message": "m" * (256 * 1024 + 1)}).encode(), "256 KB"),
        (b'{"message": "m", "time_to_live": 3600}', "time_to_live"),
    ],
)
def test_a_publish_body_smn_would_refuse_is_a_400_and_nothing_is_kept(emu, body, why):
    answer = signed_post(emu, PUBLISH_PATH, body)
    assert answer.status_code == 400
    document = answer.json()
    assert (set(document), document["code"]) == ({"request_id", "code", "message"}, "SMN.00010008")
    assert why in document["message"]
    assert emu.publishes() == []


def test_a_plain_message_publish_is_kept_too(emu):
    answer = signed_post(emu, PUBLISH_PATH, b'{"message": "plain", "time_to_live": "60"}')
    assert answer.status_code == 200 and answer.json()["message_id"]
    (kept,) = emu.publishes()
    assert (kept.text(), kept.text("sms"), kept.time_to_live) == ("plain", "plain", "60")


# --- Cloud Eye ----------------------------------------------------------------------------------


def test_metric_data_is_kept_and_summed_by_name_and_dimension(emu):
    with ces(emu) as client:
        first = client.put_metric_data([count("restored", 2), count("gave_up", 1)])
        second = client.put_metric_data(
            [count("restored", 3), count("restored", 5, graph="graph-2")]
        )
    assert first.accepted and second.accepted and first.status == 201
    assert emu.metric_sum("restored", graph=GRAPH) == 5
    assert emu.metric_sum("restored") == 10
    assert emu.metric_sum("gave_up", graph="graph-2") == 0
    (record,) = emu.metric_data("gave_up")
    assert (record.namespace, record.dimensions, record.unit, record.type) == (
        "WORKFLOW.restore",
        (("graph", GRAPH),),
        "count",
        "int",
    )


def item(**changes):
    metric = {"namespace": "WORKFLOW.restore", "metric_name": "restored"}
    metric["dimensions"] = [{"name": "graph", "value": GRAPH}]
    document = {"metric": metric, "ttl": 60, "collect_time": now_ms(), "value": 1}
    for key, value in changes.items():
        (metric if key in ("namespace", "metric_name", "dimensions") else document)[key] = value
    return document


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (item(namespace="SYS.ECS"), "namespace"),
        (item(namespace="restore"), "namespace"),
        (item(metric_name="1x"), "metric_name"),
        (item(dimensions=[]), "dimensions"),
        (item(dimensions=[{"name": f"d{i}", "value": "v"} for i in range(5)]), "dimensions"),
        (item(dimensions=[{"name": "g", "value": "a"}, {"name": "g", "value": "b"}]), "unique"),
        (item(ttl=0), "ttl"),
        (item(collect_time=now_ms() - 4 * 86_400_000), "collect_time"),
        (item(collect_time=now_ms() + 3_600_000), "collect_time"),
        (item(value="1"), "value"),
        (item(type="double"), "type"),
    ],
)
def test_one_bad_item_refuses_the_whole_batch_in_cloud_eye_s_error_shape(emu, bad, why):
    answer = signed_post(emu, METRIC_PATH, json.dumps([item(), bad]).encode())
    assert answer.status_code == 400
    details = answer.json()["details"]
    assert details["code"] == "ces.0014" and details["details"].startswith("item 1: ")
    assert why in details["details"]
    assert emu.metric_data() == []


@pytest.mark.parametrize("body", [b"[]", b"{}", b"nope"])
def test_a_batch_that_is_not_a_non_empty_array_is_refused(emu, body):
    answer = signed_post(emu, METRIC_PATH, body)
    assert (answer.status_code, answer.json()["details"]["code"]) == (400, "ces.0014")


def test_a_batch_larger_than_the_workflow_routes_take_but_within_512_kb_is_taken(emu):
    batch = [count("restored", 1, graph=f"graph-{n:05d}") for n in range(2000)]
    with ces(emu) as client:
        assert client.put_metric_data(batch).accepted  # about 390 KB: more than 64 KiB
    assert emu.metric_sum("restored") == 2000


def test_a_body_over_512_kb_is_refused(emu):
    answer = signed_post(emu, METRIC_PATH, json.dumps([item()] * 4000).encode())
    assert answer.status_code == 400 and "512" in answer.json()["details"]["details"]


def test_a_body_over_1_mib_is_refused_unread(emu):
    answer = signed_post(emu, METRIC_PATH, json.dumps([item()] * 10_001).encode())
    assert answer.status_code == 413
    assert emu.metric_data() == []


# --- authentication and project, as on the DWR routes ----------------------------------------


def test_a_wrong_signature_is_refused_by_the_gateway(emu):
    with smn(emu, sk="wrong") as client:
        refused = client.publish("s", "d")
    with ces(emu, sk="wrong") as client:
        refused_metrics = client.put_metric_data([count("restored", 1)])
    for result in (refused, refused_metrics):
        assert (result.status, result.error_code, result.credentials_refused) == (
            401,
            "APIGW.0301",
            True,
        )
    for path in (PUBLISH_PATH, METRIC_PATH):
        unsigned = requests.post(emu.url + path, data=b"{}", timeout=5)
        assert unsigned.status_code == 401 and unsigned.json()["error_code"] == "APIGW.0301"
    assert emu.publishes() == [] and emu.metric_data() == []


def test_a_required_security_token_must_be_sent_to_both():
    with DwrEmulator({AK: SK}, TOKEN, project_id=PROJECT, topics=["restore-alerts"]) as emu:
        tokened = SmnClient(AK, SK, TOPIC, emu.url, TOKEN)
        with smn(emu) as bare, tokened, ces(emu) as bare_ces, ces(emu, token=TOKEN) as ces_token:
            without = bare.publish("s", "d")
            with_token = tokened.publish("s", "d")
            metrics_without = bare_ces.put_metric_data([count("restored", 1)])
            metrics_with = ces_token.put_metric_data([count("restored", 1)])
        assert (without.status, metrics_without.status) == (401, 401)
        assert with_token.accepted and metrics_with.accepted
        assert len(emu.publishes()) == 1 and emu.metric_sum("restored") == 1


def test_another_project_is_refused(emu):
    with ces(emu, project="another-project") as client:
        result = client.put_metric_data([count("restored", 1)])
    assert (result.status, result.error_code) == (403, "CES.ProjectMismatch")
    header_only = signed_post(emu, PUBLISH_PATH, b'{"message": "m"}', project="another")
    assert (header_only.status_code, header_only.json()["code"]) == (403, "SMN.ProjectMismatch")
    other_urn = "urn:smn:cn-north-4:another:restore-alerts"
    with SmnClient(AK, SK, other_urn, emu.url) as client:
        assert client.publish("s", "d").status == 403
    assert emu.publishes() == [] and emu.metric_data() == []


@pytest.mark.parametrize("path", [PUBLISH_PATH, METRIC_PATH])
def test_only_post_is_served(emu, path):
    answer = requests.get(emu.url + path, timeout=5)
    assert (answer.status_code, answer.headers["Allow"]) == (405, "POST")


# --- faults: SMN down while the workflow API answers -----------------------------------------


def test_smn_down_at_the_give_up_and_published_later(emu):
    emu.faults_for(operation="publish").fail_next(2, 503)
    with DwrClient(AK, SK, PROJECT, emu.url) as workflows, smn(emu) as client:
        down = client.publish("Gave up: graph-1/exec-1", "story")
        restored = workflows.restoreFailedWorkflowExecution(EXECUTION, GRAPH)
        assert (down.outcome, down.attempts) == (SendOutcome.TRANSIENT, 2)
        assert restored.status == 200  # the workflow API was not touched by SMN's fault
        assert emu.publishes() == []
        later = client.publish("Gave up: graph-1/exec-1", "story")
    assert later.accepted
    assert [p.message_id for p in emu.publishes()] == [later.message_id]


def test_a_reset_of_a_metric_send_keeps_what_arrived_once(emu):
    emu.faults_for(operation="metric_data").reset_next(1, applied=True)
    with ces(emu) as client:
        lost = client.put_metric_data([count("restored", 1)])
    assert (lost.outcome, lost.maybe_sent) == (SendOutcome.TRANSIENT, True)
    assert emu.metric_sum("restored") == 1


def test_an_html_502_from_the_gateway_is_kept_for_later(emu):
    emu.faults_for(operation="publish").garbage_next(2)
    with smn(emu) as client:
        result = client.publish("s", "d")
    assert (result.outcome, result.status) == (SendOutcome.TRANSIENT, 502)


def test_clear_notifications_forgets_what_was_received_but_keeps_topics(emu):
    with smn(emu) as client:
        client.publish("s", "d")
    emu.clear_notifications()
    assert emu.publishes() == []
    with smn(emu) as client:
        assert client.publish("s", "d").accepted


# --- seeds and the command line -----------------------------------------------------------------


def test_a_seed_names_its_topics():
    seed = {"credentials": {AK: SK}, "project_id": PROJECT, "topics": ["restore-alerts"]}
    with DwrEmulator.from_seed(seed) as emu, smn(emu) as client:
        assert client.publish("s", "d").accepted
    with pytest.raises(ValueError, match="topic"):
        DwrEmulator.from_seed({**seed, "topics": ["bad/name"]})


def test_the_command_line_creates_topics_for_the_dwr_emulator():
    command = [sys.executable, "-m", "handler.devtools.emulator", "--api", "dwr", "--port", "0"]
    command += ["--access-key", AK, "--project-id", PROJECT, "--topic", "restore-alerts"]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env={**os.environ, "EMULATOR_SECRET_ACCESS_KEY": SK},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        line = [""]
        reader = threading.Thread(target=lambda: line.__setitem__(0, process.stdout.readline()))
        reader.start()
        reader.join(timeout=30)
        with SmnClient(AK, SK, TOPIC, line[0].strip()) as client:
            assert client.publish("s", "d").accepted
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0


def test_the_command_line_refuses_topics_for_the_obs_emulator():
    command = [sys.executable, "-m", "handler.devtools.emulator", "--port", "0"]
    command += ["--access-key", AK, "--topic", "restore-alerts"]
    done = subprocess.run(
        command,
        cwd=REPO,
        env={**os.environ, "EMULATOR_SECRET_ACCESS_KEY": SK},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "--topic needs --api dwr" in done.stderr
