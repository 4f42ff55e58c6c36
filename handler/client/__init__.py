"""The one shared client package: either workflow API, signed, retried, with typed results.

* :mod:`~handler.client.results` - what every call answers with (both APIs alike);
* :mod:`~handler.client.transport` - the session, retries and answer parsing both share;
* :mod:`~handler.client.obs` + :mod:`~handler.client.obs_signing` - the OBS workflow API (V2);
* :mod:`~handler.client.dwr` + :mod:`~handler.client.dwr_signing` - the DWR v3 API
  (``SDK-HMAC-SHA256``);
* :mod:`~handler.client.smn` and :mod:`~handler.client.ces` - SMN publish and Cloud Eye metric
  data, signed the DWR way, bounded in time (:mod:`~handler.client.sending`).

This is the client stage of the pipeline: it imports :mod:`handler.credentials`,
:mod:`handler.names` and :mod:`handler.endpoint`, never another stage.

The names below are loaded on first use (PEP 562): ``from handler.client import DwrClient``
reads only the DWR modules and the shared core, not the OBS client and its signer, and a
process that uses one API never imports the other's.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> the module that defines it
_EXPORTS = {
    "DEADLINE_EXCEEDED": "handler.client.transport",
    "DwrClient": "handler.client.dwr",
    "ExecutionInfo": "handler.client.results",
    "ExecutionPage": "handler.client.results",
    "ExecutionSummary": "handler.client.results",
    "GraphPage": "handler.client.results",
    "InvalidNameError": "handler.names",
    "RestoreBody": "handler.client.results",
    "RetryPolicy": "handler.client.transport",
    "WorkflowClient": "handler.client.obs",
    "WorkflowResult": "handler.client.results",
    "normalise_state": "handler.client.results",
    "SmnClient": "handler.client.smn",
    "CesClient": "handler.client.ces",
    "MetricDatum": "handler.client.ces",
    "SendOutcome": "handler.client.sending",
    "SendResult": "handler.client.sending",
}

__all__ = [
    "DEADLINE_EXCEEDED",
    "CesClient",
    "DwrClient",
    "ExecutionInfo",
    "ExecutionPage",
    "ExecutionSummary",
    "GraphPage",
    "InvalidNameError",
    "MetricDatum",
    "RestoreBody",
    "RetryPolicy",
    "SendOutcome",
    "SendResult",
    "SmnClient",
    "WorkflowClient",
    "WorkflowResult",
    "normalise_state",
]

if TYPE_CHECKING:
    from handler.client.ces import CesClient, MetricDatum
    from handler.client.dwr import DwrClient
    from handler.client.obs import WorkflowClient
    from handler.client.results import (
        ExecutionInfo,
        ExecutionPage,
        ExecutionSummary,
        GraphPage,
        RestoreBody,
        WorkflowResult,
        normalise_state,
    )
    from handler.client.sending import SendOutcome, SendResult
    from handler.client.smn import SmnClient
    from handler.client.transport import DEADLINE_EXCEEDED, RetryPolicy
    from handler.names import InvalidNameError


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is an ordinary module attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
