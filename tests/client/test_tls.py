"""TLS: verification is on by default and a CA bundle is settable (a loopback HTTPS server)."""

from __future__ import annotations

import shutil
import ssl
import subprocess

import pytest
from pytest_httpserver import HTTPServer

from handler.client import RetrySchedule, WorkflowClient
from tests.conftest import AK, SK

RESTORED = {
    "execution_urn": "urn:fgs:r:p:execution:g:e:d",
    "restored_at": "now",
    "execution_name": "e",
}


@pytest.fixture
def https_server(tmp_path):
    """An HTTPS OBS stand-in on 127.0.0.1 with a fresh self-signed certificate."""
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to make a test certificate"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=context)
    server.start()
    server.expect_request("/v2/workflowexecutions/e").respond_with_json(RESTORED)
    yield server, str(cert)
    server.clear()
    server.stop()


def client_for(server, **options) -> WorkflowClient:
    return WorkflowClient(
        AK,
        SK,
        server=f"https://127.0.0.1:{server.port}",
        retry=RetrySchedule(max_attempts=1),
        **options,
    )


def test_an_unknown_certificate_is_refused_by_default(https_server):
    server, _ = https_server
    with client_for(server) as client:
        result = client.restoreFailedWorkflowExecution("e", "g")
    assert result.status == 0 and "SSL" in result.errorMessage
    assert server.log == []


def test_a_ca_bundle_makes_it_trusted(https_server):
    server, ca_bundle = https_server
    with client_for(server, verify=ca_bundle) as client:
        result = client.restoreFailedWorkflowExecution("e", "g")
    assert result.ok and result.body.executionUrn == RESTORED["execution_urn"]
