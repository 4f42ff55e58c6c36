"""The transport's adapter: the per-call shortcuts change nothing on the wire.

``EndpointAdapter`` remembers the connection pool, the CA check and the path prefix of its one
endpoint; these tests pin that the requests still go to the right place, over one kept-alive
connection, and that anything it does not know (another host, a proxy) takes requests' path.
"""

from __future__ import annotations

import requests

from handler.client import WorkflowClient
from handler.client.transport import EndpointAdapter
from handler.devtools.emulator import Emulator
from tests.conftest import AK, SK


def test_calls_reuse_one_connection_and_reach_the_path_that_was_signed():
    with Emulator({AK: SK}) as emu:
        for name in ("e1", "e2", "e3"):
            emu.seed("g", name, "FAILED")
        with WorkflowClient(AK, SK, server=emu.url) as client:
            results = [client.restoreFailedWorkflowExecution(n, "g") for n in ("e1", "e2", "e3")]
            again = client.getWorkflowExecution("e1", "g")
        assert [r.status for r in results] == [200, 200, 200] and again.ok
        assert emu.connections_opened == 1
        assert [emu.state("g", n) for n in ("e1", "e2", "e3")] == ["RUNNING"] * 3


def test_a_closed_client_makes_a_new_pool_rather_than_using_a_closed_one():
    with Emulator({AK: SK}) as emu:
        emu.seed("g", "e1", "FAILED")
        emu.seed("g", "e2", "FAILED")
        client = WorkflowClient(AK, SK, server=emu.url)
        assert client.restoreFailedWorkflowExecution("e1", "g").ok
        client.close()
        assert client.restoreFailedWorkflowExecution("e2", "g").ok
        client.close()
        assert emu.connections_opened == 2


def prepared(url: str) -> requests.PreparedRequest:
    request = requests.PreparedRequest()
    request.prepare(method="GET", url=url)
    return request


def test_urls_of_another_host_or_through_a_proxy_take_requests_own_path():
    adapter = EndpointAdapter("http://127.0.0.1:9", direct=True)
    assert adapter.request_url(prepared("http://127.0.0.1:9/v2/x?a=b"), {}) == "/v2/x?a=b"
    # A host that merely starts with the endpoint's text is another host.
    lookalike = prepared("http://127.0.0.1:90/v2/x")
    assert adapter.request_url(lookalike, {}) == "/v2/x"  # requests' own answer
    assert adapter.get_connection_with_tls_context(lookalike, True).port == 90
    proxied = EndpointAdapter("http://127.0.0.1:9", direct=False)
    proxies = {"http": "http://proxy.invalid:3128"}
    assert proxied.request_url(prepared("http://127.0.0.1:9/v2/x"), proxies) == (
        "http://127.0.0.1:9/v2/x"
    )
