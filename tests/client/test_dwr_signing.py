"""The DWR SDK-HMAC-SHA256 signature: the reference vectors, and byte-for-byte agreement with the
official SDK (``huaweicloudsdkcore`` / ``huaweicloudsdkdwr``) - both its signer on its own and
what its DWR client puts on the wire."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer as SdkSigner

from handler.client import DwrClient
from handler.client.dwr_signing import (
    EMPTY_BODY_SHA256,
    DwrSigner,
    canonical_query,
    canonical_request,
    canonical_uri,
    sdk_date,
)
from handler.client.obs_signing import Credentials

HOST = "dwr.cn-south-1.myhuaweicloud.com"
DATE = "20261127T184128Z"
VECTOR_HEADERS = {
    "Content-Type": "application/json",
    "Host": HOST,
    "X-Project-Id": "proj-1",
    "X-Sdk-Date": DATE,
}
RESTORE_PATH = "/v3/proj-1/workflows/graph-1/workflowexecution/exec-1/retry"
LIST_PATH = "/v3/proj-1/workflowexecutions"
LIST_QUERY = {
    "graph_name": "graph-1",
    "status": "fail",
    "start_time": "2026-11-20T00:00:00Z",
    "limit": "50",
    "offset": "1",
}
AUTHORIZATION = re.compile(
    r"SDK-HMAC-SHA256 Access=(?P<ak>[^,]+), SignedHeaders=(?P<signed>[^,]+), "
    r"Signature=(?P<signature>[0-9a-f]{64})"
)


@pytest.mark.parametrize(
    ("method", "path", "query", "token", "signature"),
    [
        (
            "POST",
            RESTORE_PATH,
            {},
            None,
            "2d0c6ce326fd6e5228892f041a1b4622972f1b5b4e229fd642db5602be19a7b3",
        ),
        (
            "POST",
            RESTORE_PATH,
            {},
            "TOKEN",
            "3aad6070b91d072cd2277b186e93568c351e7b30d324afeee91baa222be8c5b6",
        ),
        (
            "GET",
            LIST_PATH,
            LIST_QUERY,
            None,
            "1c27effff54f944d4cb66463007b60485bcd077c492720f4e95813b4fda518b6",
        ),
    ],
)
def test_reference_vectors(method, path, query, token, signature):
    added = DwrSigner(Credentials("AKEXAMPLE", "SKEXAMPLE", token)).sign(
        method, path, query, VECTOR_HEADERS
    )
    signed = "content-type;host;x-project-id;x-sdk-date" + (";x-security-token" if token else "")
    assert added["Authorization"] == (
        f"SDK-HMAC-SHA256 Access=AKEXAMPLE, SignedHeaders={signed}, Signature={signature}"
    )
    assert added.get("X-Security-Token") == token


def test_canonical_request_layout():
    text = canonical_request("post", RESTORE_PATH, {}, {"X-Sdk-Date": DATE, "Host": f" {HOST} "})
    assert text == (
        f"POST\n{RESTORE_PATH}/\n\nhost:{HOST}\nx-sdk-date:{DATE}\n\nhost;x-sdk-date\n"
        f"{EMPTY_BODY_SHA256}"
    )


def test_canonical_uri_and_query_rules():
    assert canonical_uri("/v3/p/retry") == "/v3/p/retry/"
    assert canonical_uri("/") == "/"
    assert canonical_uri("/a b/%7Ex/~y") == "/a%20b/~x/~y/"
    assert canonical_query(LIST_QUERY) == (
        "graph_name=graph-1&limit=50&offset=1&start_time=2026-11-20T00%3A00%3A00Z&status=fail"
    )
    assert canonical_query({"k": "a/b c+d~é"}) == "k=a%2Fb%20c%2Bd~%C3%A9"


def test_sdk_date_is_utc_basic_format():
    assert sdk_date(0) == "19700101T000000Z"
    assert sdk_date(1795804888) == DATE


@pytest.mark.parametrize("missing", ["Host", "X-Sdk-Date"])
def test_host_and_date_must_be_signed(missing):
    headers = {k: v for k, v in VECTOR_HEADERS.items() if k != missing}
    with pytest.raises(ValueError, match=missing.lower()):
        DwrSigner(Credentials("AK", "SK")).sign("GET", "/", {}, headers)


def test_signer_repr_hides_secrets():
    signer = DwrSigner(Credentials("AKIDLONGACCESSKEY", "very-secret-key", "very-secret-token"))
    text = repr(signer) + str(signer)
    assert "very-secret" not in text and "AKIDLONGACCESSKEY" not in text
    assert "temporary" in text


# --- the official SDK's signer, request by request -------------------------------------------


def sdk_authorization(ak, sk, method, path, query, headers, body=b""):
    """What huaweicloudsdkcore's own signer puts in Authorization for the same request."""
    request = SdkRequest(
        method=method,
        schema="https",
        host=HOST,
        resource_path=path,
        query_params=list(query.items()),
        header_params=dict(headers),
        body=body or None,
    )
    return SdkSigner(BasicCredentials(ak, sk)).sign(request).header_params["Authorization"]


SIGNER_TABLE = [
    ("AKEXAMPLE", "SKEXAMPLE", "POST", RESTORE_PATH, {}, VECTOR_HEADERS, b""),
    ("AKEXAMPLE", "SKEXAMPLE", "GET", LIST_PATH, LIST_QUERY, VECTOR_HEADERS, b""),
    ("AK2", "sk/with+base64=chars", "GET", "/v3/p/workflows/g/workflowexecution/e", {}, {
        "host": HOST, "x-sdk-date": "20240229T235959Z"}, b""),
    ("AK", "секрет", "GET", "/v3/p/a b/~c/%41", {"z": "1", "a": "x y/é", "m~": "~"}, {
        **VECTOR_HEADERS, "User-Agent": "  padded value  ", "X-Security-Token": "t/+=" * 40},
     b""),
    ("AK", "SK", "POST", "/v3/p/x", {}, VECTOR_HEADERS, b'{"k": "v"}'),
    ("HST_AK", "S" * 40, "GET", "/v3/" + "p" * 64 + "/workflowexecutions",
     {"graph_name": "Z" * 64, "end_time": "2026-12-31T23:59:59Z"}, VECTOR_HEADERS, b""),
]  # fmt: skip


@pytest.mark.parametrize(("ak", "sk", "method", "path", "query", "headers", "body"), SIGNER_TABLE)
def test_authorization_equals_the_official_sdk_signer(ak, sk, method, path, query, headers, body):
    ours = DwrSigner(Credentials(ak, sk)).authorization(method, path, query, headers, body)
    assert ours == sdk_authorization(ak, sk, method, path, query, headers, body)


# --- the official SDK's DWR client on the wire -----------------------------------------------

AK = "AKEXAMPLE"
SK = "SKEXAMPLE-secret-key-0123456789"
TOKEN = "TOKEN-temporary-0123456789"
PROJECT = "0123456789abcdef0123456789abcdef"
EXECUTION_PATH = f"/v3/{PROJECT}/workflows/graph-1/workflowexecution/exec-1"
RESTORED = {"execution_urn": "urn:e", "restored_at": "2026-11-27T18:41:28Z", "execution_name": "e"}


def sdk_call(operation):
    """Run one operation through the official SDK's DWR client (imported lazily: it is big)."""
    from huaweicloudsdkdwr.v3 import (
        ListWorkflowInstanceRequest,
        RestoreWorkflowExecutionRequest,
        ShowWorkflowInstanceRequest,
    )

    return {
        "restore": lambda sdk: sdk.restore_workflow_execution(
            RestoreWorkflowExecutionRequest(execution_name="exec-1", graph_name="graph-1")
        ),
        "query": lambda sdk: sdk.show_workflow_instance(
            ShowWorkflowInstanceRequest(execution_name="exec-1", graph_name="graph-1")
        ),
        "list": lambda sdk: sdk.list_workflow_instance(
            ListWorkflowInstanceRequest(
                graph_name="graph-1",
                status="fail",
                start_time="2026-11-20T00:00:00Z",
                end_time="2026-11-27T18:00:00Z",
                limit=50,
                offset=3,
            )
        ),
    }[operation]


def our_call(operation):
    return {
        "restore": lambda client: client.restoreFailedWorkflowExecution("exec-1", "graph-1"),
        "query": lambda client: client.getWorkflowExecution("exec-1", "graph-1"),
        "list": lambda client: client.listWorkflowExecution(
            "graph-1",
            status="fail",
            start_time="2026-11-20T00:00:00Z",
            end_time="2026-11-27T18:00:00Z",
            limit=50,
            offset=3,
        ),
    }[operation]


ROUTES = {
    "restore": (EXECUTION_PATH + "/retry", "POST", RESTORED),
    "query": (EXECUTION_PATH, "GET", {"status": "fail", "node_execution_details": []}),
    "list": (f"/v3/{PROJECT}/workflowexecutions", "GET", {"count": 0, "executions": []}),
}


def run_official_sdk(server, operation, token):
    from huaweicloudsdkdwr.v3 import DwrClient as SdkDwrClient

    credentials = BasicCredentials(AK, SK, PROJECT)
    if token:
        credentials = credentials.with_security_token(token)
    # An http:// endpoint and an explicit project id keep the SDK offline: it would otherwise
    # ask IAM for the project id.
    sdk = SdkDwrClient.new_builder().with_credentials(credentials).with_endpoints([server]).build()
    try:
        sdk_call(operation)(sdk)
    finally:
        sdk.close()


def signed_names(request):
    match = AUTHORIZATION.fullmatch(request.headers["Authorization"])
    assert match, request.headers["Authorization"]
    return match["signed"].split(";")


@pytest.mark.parametrize("token", [None, TOKEN], ids=["permanent", "temporary"])
@pytest.mark.parametrize("operation", ["restore", "query", "list"])
def test_wire_conformance_with_the_official_sdk(httpserver, operation, token):
    path, method, answer = ROUTES[operation]
    httpserver.expect_request(path, method=method).respond_with_json(answer)
    server = httpserver.url_for("").rstrip("/")

    run_official_sdk(server, operation, token)
    with DwrClient(AK, SK, PROJECT, server, token, timeout=(1.0, 2.0)) as client:
        assert our_call(operation)(client).ok
    (theirs, _), (ours, _) = httpserver.log

    # 1. Our signer, given the SDK's request (its date, its signed header set), signs alike.
    their_names = signed_names(theirs)
    assert {"host", "x-sdk-date", "x-project-id", "content-type"} <= set(their_names)
    assert ("x-security-token" in their_names) == bool(token)
    our_authorization_for_theirs = DwrSigner(Credentials(AK, SK, token)).authorization(
        theirs.method,
        theirs.path,
        dict(parse_qsl(theirs.query_string.decode(), keep_blank_values=True)),
        {name: theirs.headers[name] for name in their_names},
        theirs.get_data(),
    )
    assert our_authorization_for_theirs == theirs.headers["Authorization"]

    # 2. Our client sends the same request: method, path, query, body, signed header values.
    assert (ours.method, ours.path, ours.query_string, ours.get_data()) == (
        theirs.method,
        theirs.path,
        theirs.query_string,
        theirs.get_data(),
    )
    assert ours.headers.get("Content-Length") == theirs.headers.get("Content-Length")
    our_names = signed_names(ours)
    # The SDK also signs its User-Agent; the service checks whichever set is named.
    assert set(our_names) == set(their_names) - {"user-agent"}
    for name in our_names:
        if name != "x-sdk-date":
            assert ours.headers[name] == theirs.headers[name], name
    assert re.fullmatch(r"\d{8}T\d{6}Z", ours.headers["X-Sdk-Date"])

    # 3. The SDK's signer, given our request, computes our Authorization: it verifies.
    assert ours.headers["Authorization"] == sdk_authorization(
        AK,
        SK,
        ours.method,
        ours.path,
        dict(parse_qsl(ours.query_string.decode(), keep_blank_values=True)),
        {name: ours.headers[name] for name in our_names},
        ours.get_data(),
    )
