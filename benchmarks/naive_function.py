"""The baseline: the function a user would write with the official SDK and nothing else.

For every request it reads ``{"graphName", "executionName"}``, builds the SDK's
``WorkflowClient`` from the environment, restores, and answers the SDK's status as JSON. No
authentication, no deduplication, no budget, no log line: it is the cheapest correct-looking
function, which is what ours has to keep up with. Served exactly like ours::

    functions-framework --source benchmarks/naive_function.py --target restore
"""

from __future__ import annotations

import json
import os

from obs import WorkflowClient

JSON_HEADERS = {"Content-Type": "application/json"}


def restore(request):
    if request.method != "POST":
        return json.dumps({"error": "use POST"}), 405, JSON_HEADERS
    event = request.get_json(force=True, silent=True) or {}
    client = WorkflowClient(
        access_key_id=os.environ["OBS_ACCESS_KEY_ID"],
        secret_access_key=os.environ["OBS_SECRET_ACCESS_KEY"],
        server=os.environ["OBS_ENDPOINT"],
        ssl_verify=os.environ.get("OBS_CA_BUNDLE") or False,  # over TLS: verified, as ours is
    )
    response = client.restoreFailedWorkflowExecution(
        event.get("executionName"), event.get("graphName")
    )
    document = {
        "status": response.status,
        "requestId": response.requestId,
        "errorCode": response.errorCode,
        "errorMessage": response.errorMessage,
    }
    return json.dumps(document), 200 if response.status < 300 else 502, JSON_HEADERS
