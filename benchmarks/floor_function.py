"""The floor: the least any function built on ``requests`` can do for one restore.

It is the naive function with the SDK swapped for what the design card keeps: ``requests``
(one kept-alive ``Session``, as ours) and an OBS V2 signature computed inline. No
authentication, no deduplication, no budget, no log line, no validation. Whatever this costs
beyond the SDK is paid by every ``requests``-based function before it does any of the work
that makes a restore safe, so ``floor ÷ baseline`` bounds what our function's ratio can reach:
the benchmarks report it beside ours (``benchmarks/bench_cold.py``, ``bench_http.py``).

Served exactly like ours and the naive one::

    functions-framework --source benchmarks/floor_function.py --target restore

``FLOOR_EVENT`` is the same floor as a script for a fresh interpreter: the cold-start
benchmark runs it as it runs the event entry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from email.utils import formatdate

import requests

JSON_HEADERS = {"Content-Type": "application/json"}
SESSION = requests.Session()


def put_restore(graph: str, execution: str) -> requests.Response:
    """``PUT /v2/workflowexecutions/<execution>?x-workflow-graph-name=<graph>``, OBS V2 signed."""
    resource = f"/v2/workflowexecutions/{execution}?x-workflow-graph-name={graph}"
    date = formatdate(usegmt=True)
    text = f"PUT\n\n\n{date}\n{resource}"
    key = os.environ["OBS_SECRET_ACCESS_KEY"].encode()
    signature = base64.b64encode(hmac.new(key, text.encode(), hashlib.sha1).digest()).decode()
    headers = {"Date": date, "Authorization": f"OBS {os.environ['OBS_ACCESS_KEY_ID']}:{signature}"}
    return SESSION.put(
        os.environ["OBS_ENDPOINT"] + resource,
        headers=headers,
        verify=os.environ.get("OBS_CA_BUNDLE") or False,
        timeout=10,
    )


def restore(request):
    event = request.get_json(force=True, silent=True) or {}
    response = put_restore(event.get("graphName"), event.get("executionName"))
    document = {"status": response.status_code}
    return json.dumps(document), 200 if response.status_code < 300 else 502, JSON_HEADERS


FLOOR_EVENT = """
import json, os, sys, time
began = time.perf_counter()
sys.path.insert(0, os.path.join(os.getcwd(), "benchmarks"))
from floor_function import put_restore
response = put_restore(os.environ["BENCH_GRAPH"], os.environ["BENCH_EXECUTION"])
ok = response.status_code == 200
inside = time.perf_counter() - began
print("BENCH-RESULT " + json.dumps({"ok": ok, "detail": response.status_code, "inside_s": inside}),
      flush=True)
"""
