"""Comparing one of our requests with the official SDK's, as the loopback server received them.

Both requests are signed at the same fixed ``X-Sdk-Date`` (the SDK takes a preset header, our
clients a clock), so every header that matters, the body and the signature can be compared
byte for byte. The SDK also signs its ``User-Agent``; the gateway checks whichever set
``SignedHeaders`` names, so our set is the SDK's minus that one, and each side's signature is
recomputed by the other side's signer over its own request.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer as SdkSigner

from handler.client.dwr_signing import DwrSigner
from handler.credentials import Credentials

AK = "AKEXAMPLE"
SK = "SKEXAMPLE-secret-key-0123456789"
TOKEN = "TOKEN-temporary-0123456789"
PROJECT = "0123456789abcdef0123456789abcdef"
DATE = "20261127T184128Z"
DATE_EPOCH = 1795804888.0  # DATE in seconds since the epoch
AUTHORIZATION = re.compile(
    r"SDK-HMAC-SHA256 Access=(?P<ak>[^,]+), SignedHeaders=(?P<signed>[^,]+), "
    r"Signature=(?P<signature>[0-9a-f]{64})"
)


def sdk_credentials(token: str | None) -> BasicCredentials:
    credentials = BasicCredentials(AK, SK, PROJECT)
    return credentials.with_security_token(token) if token else credentials


def build_sdk(client_class, server: str, token: str | None):
    """An official SDK client for the loopback server, offline (explicit project id, http://
    endpoint) and signing at DATE."""
    sdk = (
        client_class.new_builder()
        .with_credentials(sdk_credentials(token))
        .with_endpoints([server])
        .build()
    )
    sdk.preset_headers = {"X-Sdk-Date": DATE}  # the SDK signs with a date it is given
    return sdk


def signed_names(request) -> list[str]:
    match = AUTHORIZATION.fullmatch(request.headers["Authorization"])
    assert match, request.headers["Authorization"]
    return match["signed"].split(";")


def raw_target(request) -> str:
    """The request target exactly as it came on the wire (path still percent-encoded)."""
    return request.environ.get("RAW_URI") or request.environ["REQUEST_URI"]


def sdk_authorization(request, names) -> str:
    """What huaweicloudsdkcore's signer computes for ``request`` over header set ``names``."""
    sdk_request = SdkRequest(
        method=request.method,
        schema="http",
        host=request.headers["Host"],
        resource_path=raw_target(request).split("?")[0],
        query_params=parse_qsl(request.query_string.decode(), keep_blank_values=True),
        header_params={name: request.headers[name] for name in names},
        body=request.get_data() or None,
    )
    return SdkSigner(BasicCredentials(AK, SK)).sign(sdk_request).header_params["Authorization"]


def assert_same_request(theirs, ours, token: str | None) -> None:
    """The guarantees every conformance test states, in one place."""
    their_names = signed_names(theirs)
    assert {"content-type", "host", "x-project-id", "x-sdk-date"} <= set(their_names)
    assert ("x-security-token" in their_names) == bool(token)

    # The same request on the wire: method, target (path encoding included), body bytes.
    assert (ours.method, raw_target(ours), ours.get_data()) == (
        theirs.method,
        raw_target(theirs),
        theirs.get_data(),
    )
    assert ours.headers["Content-Length"] == theirs.headers["Content-Length"]
    our_names = signed_names(ours)
    assert set(our_names) == set(their_names) - {"user-agent"}
    for name in our_names:
        assert ours.headers[name] == theirs.headers[name], name
    assert ours.headers["X-Sdk-Date"] == DATE

    # Our signer signs the SDK's request as the SDK did ...
    ours_over_theirs = DwrSigner(Credentials(AK, SK, token)).authorization(
        theirs.method,
        theirs.path,
        dict(parse_qsl(theirs.query_string.decode(), keep_blank_values=True)),
        {name: theirs.headers[name] for name in their_names},
        theirs.get_data(),
    )
    assert ours_over_theirs == theirs.headers["Authorization"]
    # ... and the SDK's signer, given our request, computes our Authorization: it verifies.
    assert ours.headers["Authorization"] == sdk_authorization(ours, our_names)
