"""The SMN publisher: the official SDK's request on the wire, SMN's limits applied so a message
is never refused for its size, and every answer - odd ones included - a clear, bounded verdict."""

from __future__ import annotations

import json
import re
import time

import pytest

from handler.client.sending import SendOutcome
from handler.client.smn import (
    CUT_NOTE,
    MAX_MESSAGE_BYTES,
    MAX_SMS_CHARACTERS,
    MAX_SUBJECT_BYTES,
    SmnClient,
    fit_subject,
    message_structure,
    publish_body,
)
from handler.client.transport import RetrySchedule
from handler.devtools.emulator import DwrEmulator
from tests.client.sdk_wire import AK, DATE_EPOCH, PROJECT, SK, TOKEN, assert_same_request, build_sdk

TOPIC = f"urn:smn:cn-north-4:{PROJECT}:restore-alerts"
ENCODED_PATH = (
    f"/v2/{PROJECT}/notifications/topics/urn%3Asmn%3Acn-north-4%3A{PROJECT}%3Arestore-alerts"
    "/publish"
)
ACCEPTED = {"request_id": "6a63a18b8bab40ffb71ebd9cb80d0085", "message_id": "msg-1"}
ANY = re.compile(".*")


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def client(httpserver):
    sleeps = Sleeps()
    smn = SmnClient(
        AK, SK, TOPIC, httpserver.url_for("").rstrip("/"), timeout=(1.0, 2.0), sleep=sleeps
    )
    smn.sleeps = sleeps
    yield smn
    smn.close()


# --- conformance with the official SDK --------------------------------------------------------

MESSAGES = {
    "plain": ("Gave up: etl/run-1", "etl/run-1 failed 3 times.", None, None, None),
    "unicode, quotes, controls, ttl": (
        'Échec : "etl" / run-1 — 放弃',
        'Line 1\n\t"quoted" \\ back\u007f end ✓ 𝄞',
        "Email: every restore tried\n- 10:00 rule default: failed",
        "etl/run-1 gave up [3 restores] 【x】",
        1800,
    ),
}


@pytest.mark.parametrize("token", [None, TOKEN], ids=["permanent", "temporary"])
@pytest.mark.parametrize("case", sorted(MESSAGES))
def test_a_publish_is_the_official_sdk_request_byte_for_byte(httpserver, token, case):
    from huaweicloudsdksmn.v2 import PublishMessageRequest, PublishMessageRequestBody
    from huaweicloudsdksmn.v2 import SmnClient as SdkSmnClient

    subject, default, email, sms, ttl = MESSAGES[case]
    httpserver.expect_request(ANY, method="POST").respond_with_json(ACCEPTED)
    server = httpserver.url_for("").rstrip("/")

    sdk = build_sdk(SdkSmnClient, server, token)
    body = PublishMessageRequestBody(
        subject=fit_subject(subject),
        message_structure=message_structure(default, email=email, sms=sms or subject),
        time_to_live=None if ttl is None else str(ttl),
    )
    sdk_answer = sdk.publish_message(PublishMessageRequest(topic_urn=TOPIC, body=body))
    assert sdk_answer.message_id == "msg-1"
    with SmnClient(AK, SK, TOPIC, server, token, clock=lambda: DATE_EPOCH) as ours:
        result = ours.publish(subject, default, email=email, sms=sms, time_to_live=ttl)
    assert (result.outcome, result.message_id) == (SendOutcome.ACCEPTED, "msg-1")

    (theirs, _), (mine, _) = httpserver.log
    assert mine.environ["RAW_URI"] == ENCODED_PATH  # the URN's colons are encoded, as the SDK's
    assert mine.headers["Content-Type"] == "application/json;charset=utf-8"
    assert_same_request(theirs, mine, token)
    assert ("X-Security-Token" in mine.headers) == bool(token)


def test_the_message_structure_has_a_text_per_protocol(httpserver, client):
    httpserver.expect_request(ENCODED_PATH.replace("%3A", ":")).respond_with_json(ACCEPTED)
    client.publish("Gave up: etl/run-1", "the long story", email="the email", sms="short [x]")
    ((request, _),) = httpserver.log
    sent = json.loads(request.get_data())
    assert set(sent) == {"subject", "message_structure"}
    assert json.loads(sent["message_structure"]) == {
        "default": "the long story",
        "email": "the email",
        "sms": "short (x)",
    }


def test_email_defaults_to_the_default_text_and_sms_to_the_subject():
    structure = json.loads(json.loads(publish_body("Gave up", "story"))["message_structure"])
    assert structure == {"default": "story", "email": "story", "sms": "Gave up"}


# --- SMN's limits ------------------------------------------------------------------------------


@pytest.mark.parametrize("character", ["a", "é", "放", "𝄞"])
def test_a_long_subject_is_cut_at_512_bytes_never_inside_a_character(character):
    subject = fit_subject("x" + character * 600)
    raw = subject.encode()
    assert len(raw) <= MAX_SUBJECT_BYTES
    assert len(raw) > MAX_SUBJECT_BYTES - len(character.encode())  # cut as late as possible
    assert set(subject[1:]) == {character}  # nothing garbled, only whole characters


def test_a_subject_is_one_line_and_a_lone_surrogate_does_not_break_encoding():
    assert fit_subject("Gave up:\r\n etl\x00run\ud800") == "Gave up:  etl run?"


def test_sms_text_loses_the_brackets_sms_refuses_and_stops_at_490_characters():
    structure = json.loads(message_structure("d", sms="[a] 【b】 " + "z" * 1000))
    assert structure["sms"].startswith("(a) (b) ")
    assert len(structure["sms"]) == MAX_SMS_CHARACTERS
    assert not set("[]【】") & set(structure["sms"])


def test_texts_longer_than_256_kb_are_cut_with_a_note_never_refused():
    long_email = '"é"\n' * 200_000  # escapes make it longer in JSON than in text
    structure = message_structure("short default", email=long_email)
    assert len(structure.encode()) <= MAX_MESSAGE_BYTES
    email = json.loads(structure)["email"]
    assert email.endswith(CUT_NOTE) and email.startswith('"é"\n')
    assert json.loads(structure)["default"] == "short default"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"subject": "", "default": "d"},
        {"subject": " \n ", "default": "d"},
        {"subject": "s", "default": ""},
        {"subject": "s", "default": 3},
        {"subject": "s", "default": "d", "time_to_live": 0},
        {"subject": "s", "default": "d", "time_to_live": 86401},
        {"subject": "s", "default": "d", "time_to_live": True},
    ],
)
def test_a_message_that_cannot_be_published_is_refused_before_sending(httpserver, client, kwargs):
    with pytest.raises(ValueError):
        client.publish(**kwargs)
    assert httpserver.log == []


# --- the topic URN ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "urn",
    [
        "restore-alerts",
        "urn:smn:cn-north-4:restore-alerts",
        "urn:sns:cn-north-4:p:t",
        "urn:smn:north:p:t",
        f"urn:smn:cn-north-4:{PROJECT}:",
        f"urn:smn:cn-north-4:{PROJECT}:bad/name",
        "urn:smn:cn-north-4:../x:t",
        f"urn:smn:cn-north-4:{PROJECT}:t:extra",
    ],
)
def test_a_malformed_topic_urn_is_refused_at_construction(urn):
    with pytest.raises(ValueError, match="topic URN"):
        SmnClient(AK, SK, urn)


def test_the_endpoint_defaults_to_the_urn_region_and_the_project_comes_from_the_urn():
    with SmnClient(AK, SK, f"urn:smn:ap-southeast-1:{PROJECT}:t") as client:
        assert client.server == "https://smn.ap-southeast-1.myhuaweicloud.com"
        assert client.project_id == PROJECT


def test_secrets_stay_out_of_the_repr_and_of_results(httpserver):
    httpserver.expect_request(ANY).respond_with_json({"code": "SMN.0001", "message": "no"}, 400)
    server = httpserver.url_for("").rstrip("/")
    with SmnClient(AK, "very-secret-key", TOPIC, server, "very-secret-token") as client:
        result = client.publish("s", "d")
        assert "very-secret" not in repr(client) + repr(result)


# --- answers, odd ones included ----------------------------------------------------------------


def test_an_accepted_publish_carries_smn_s_message_id_and_request_id(httpserver, client):
    httpserver.expect_request(ANY).respond_with_json(ACCEPTED)
    result = client.publish("s", "d")
    assert result.accepted and not result.maybe_sent
    assert (result.message_id, result.request_id, result.attempts) == (
        "msg-1",
        ACCEPTED["request_id"],
        1,
    )


def test_a_5xx_is_tried_once_more_then_kept_for_later(httpserver, client):
    httpserver.expect_request(ANY).respond_with_json(
        {"request_id": "r", "code": "SMN.0500", "message": "internal"}, status=500
    )
    result = client.publish("s", "d")
    assert (result.outcome, result.status, result.attempts) == (SendOutcome.TRANSIENT, 500, 2)
    assert (result.error_code, result.error_message) == ("SMN.0500", "internal")
    assert len(client.sleeps) == 1 and client.sleeps[0] <= 0.5


def test_a_retry_after_longer_than_a_second_ends_the_call_instead_of_being_slept(
    httpserver, client
):
    httpserver.expect_request(ANY).respond_with_json(
        {"code": "SMN.0429", "message": "slow down"}, status=429, headers={"Retry-After": "30"}
    )
    result = client.publish("s", "d")
    assert (result.outcome, result.attempts, result.retry_after) == (SendOutcome.TRANSIENT, 1, 30)
    assert client.sleeps == []


def test_an_html_answer_with_200_may_have_been_taken_so_it_is_kept_not_counted_done(
    httpserver, client
):
    httpserver.expect_request(ANY).respond_with_data("<html>ok</html>", content_type="text/html")
    result = client.publish("s", "d")
    assert (result.outcome, result.maybe_sent, result.error_code) == (
        SendOutcome.TRANSIENT,
        True,
        "UnreadableAnswer",
    )
    assert "not a JSON object" in result.error_message


def test_a_200_without_a_message_id_is_no_proof_of_acceptance(httpserver, client):
    httpserver.expect_request(ANY).respond_with_json({"request_id": "r"})
    result = client.publish("s", "d")
    assert result.transient and result.maybe_sent
    assert result.error_message == "the answer carried no message_id"


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_kept_for_after_the_operator_s_fix(httpserver, client, status):
    httpserver.expect_request(ANY).respond_with_json(
        {"error_code": "APIGW.0301", "error_msg": "Incorrect IAM authentication information"},
        status=status,
    )
    result = client.publish("s", "d")
    assert result.transient and result.credentials_refused
    assert (result.attempts, result.error_code) == (1, "APIGW.0301")


@pytest.mark.parametrize(("status", "code"), [(400, "SMN.00010008"), (404, "SMN.0006")])
def test_a_refusal_of_the_message_is_permanent(httpserver, client, status, code):
    httpserver.expect_request(ANY).respond_with_json(
        {"request_id": "r", "code": code, "message": "Topic not found."}, status=status
    )
    result = client.publish("s", "d")
    assert (result.outcome, result.error_code, result.attempts) == (
        SendOutcome.PERMANENT,
        code,
        1,
    )


def test_a_redirect_is_never_followed_and_is_permanent(httpserver, client):
    httpserver.expect_request(ANY).respond_with_data(
        "", status=302, headers={"Location": "http://127.0.0.1:9/elsewhere"}
    )
    result = client.publish("s", "d")
    assert (result.outcome, result.error_code) == (SendOutcome.PERMANENT, "Redirect")
    assert len(httpserver.log) == 1


def test_an_unreachable_smn_is_transient_and_nothing_was_sent():
    with SmnClient(AK, SK, TOPIC, "http://127.0.0.1:9", timeout=(0.5, 0.5), sleep=Sleeps()) as c:
        result = c.publish("s", "d")
    assert (result.outcome, result.status, result.maybe_sent) == (SendOutcome.TRANSIENT, 0, False)
    assert result.attempts == 2  # a connection never made is safe to try again at once


def test_a_past_deadline_sends_nothing(httpserver, client):
    result = client.publish("s", "d", deadline=time.monotonic() - 1)
    assert (result.outcome, result.error_code) == (SendOutcome.TRANSIENT, "DeadlineExceeded")
    assert httpserver.log == []


# --- lost answers, against the emulator (it can reset a connection and hold an answer) ---------


@pytest.fixture
def emulator():
    with DwrEmulator({AK: SK}, project_id=PROJECT, topics=["restore-alerts"]) as emu:
        yield emu


def test_a_reset_after_sending_is_never_resent_and_says_it_may_have_been_taken(emulator):
    emulator.reset_next(1, applied=True)
    with SmnClient(AK, SK, TOPIC, emulator.url, sleep=Sleeps()) as client:
        result = client.publish("s", "d")
    assert (result.outcome, result.maybe_sent, result.attempts) == (
        SendOutcome.TRANSIENT,
        True,
        1,
    )
    assert len(emulator.publishes()) == 1  # it was taken: the caller must know it may have been


def test_no_publish_outlives_max_seconds_whatever_its_read_timeout(emulator):
    hold = emulator.hold_next(operation="publish", timeout=10)
    client = SmnClient(AK, SK, TOPIC, emulator.url, timeout=(1.0, 30.0), max_seconds=0.3)
    with client:
        result = client.publish("s", "d")
    hold.release()
    assert hold.reached.is_set()
    assert (result.outcome, result.maybe_sent, result.attempts) == (
        SendOutcome.TRANSIENT,
        True,
        1,
    )


def test_a_short_retry_after_is_honoured_within_the_call(emulator):
    emulator.faults_for(operation="publish").fail_next(1, 503, retry_after=1)
    sleeps = Sleeps()
    retry = RetrySchedule(max_attempts=2, backoff_base=0.1, backoff_cap=0.5, max_retry_after=1.0)
    with SmnClient(AK, SK, TOPIC, emulator.url, retry=retry, sleep=sleeps) as client:
        result = client.publish("s", "d")
    assert (result.outcome, result.attempts, sleeps) == (SendOutcome.ACCEPTED, 2, [1.0])
