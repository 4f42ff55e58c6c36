"""Where the official DWR SDK and our DwrClient differ, measured on the wire (the README's table).

Each test drives the official ``huaweicloudsdkdwr`` client and ours against the same loopback
answer and asserts what each did, so the README's "official DWR SDK" column stays true.
"""

from __future__ import annotations

import re

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ServerResponseException

from handler.client import DwrClient, RetrySchedule
from handler.names import InvalidNameError
from tests.conftest import AK, SK

PROJECT = "0123456789abcdef0123456789abcdef"
ANY = re.compile(".*")


@pytest.fixture
def clients(httpserver):
    """(official SDK client, our client) against the loopback server."""
    from huaweicloudsdkdwr.v3 import DwrClient as SdkDwrClient

    server = httpserver.url_for("").rstrip("/")
    sdk = (
        SdkDwrClient.new_builder()
        .with_credentials(BasicCredentials(AK, SK, PROJECT))
        .with_endpoints([server])
        .build()
    )
    ours = DwrClient(
        AK, SK, PROJECT, server, retry=RetrySchedule(max_attempts=3), sleep=lambda _: None
    )
    yield sdk, ours
    ours.close()


def sdk_query(sdk, execution="e"):
    from huaweicloudsdkdwr.v3 import ShowWorkflowInstanceRequest

    return sdk.show_workflow_instance(
        ShowWorkflowInstanceRequest(graph_name="g", execution_name=execution)
    )


def test_names_the_sdk_sends_escaped_are_refused_by_ours_before_sending(httpserver, clients):
    sdk, ours = clients
    httpserver.expect_request(ANY).respond_with_json({"status": "fail"})
    sdk_query(sdk, "a/../b")
    ((request, _),) = httpserver.log
    assert request.path.endswith("/workflowexecution/a/../b")  # sent, as a%2F..%2Fb
    with pytest.raises(InvalidNameError):
        ours.getWorkflowExecution("a/../b", "g")
    assert len(httpserver.log) == 1


def test_a_503_is_raised_by_the_sdk_at_once_and_retried_by_ours(httpserver, clients):
    sdk, ours = clients
    httpserver.expect_request(ANY).respond_with_json(
        {"error_code": "X", "error_msg": "busy"}, status=503
    )
    with pytest.raises(ServerResponseException):
        sdk_query(sdk)
    assert len(httpserver.log) == 1
    result = ours.getWorkflowExecution("e", "g")
    assert (result.status, result.attempts, result.errorCode) == (503, 3, "X")


def test_an_html_answer_is_silently_empty_in_the_sdk_and_explained_by_ours(httpserver, clients):
    sdk, ours = clients
    httpserver.expect_request(ANY).respond_with_data("<html>ok</html>", content_type="text/html")
    assert sdk_query(sdk).status is None  # no error, no data
    result = ours.getWorkflowExecution("e", "g")
    assert result.body is None and "not a JSON object" in result.errorMessage


def test_a_redirect_is_an_empty_answer_in_the_sdk_and_a_clear_result_in_ours(httpserver, clients):
    sdk, ours = clients
    httpserver.expect_request(ANY).respond_with_data("", status=302, headers={"Location": "/x"})
    assert sdk_query(sdk).status is None
    result = ours.getWorkflowExecution("e", "g")
    assert (result.status, result.errorCode) == (302, "Redirect")
    assert len(httpserver.log) == 2  # neither followed it
