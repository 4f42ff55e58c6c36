"""The one shared client package: either workflow API, signed, retried, with typed results.

* :mod:`~handler.client.results` - what every call answers with (both APIs alike);
* :mod:`~handler.client.transport` - the session, retries and answer parsing both share;
* :mod:`~handler.client.obs` + :mod:`~handler.client.obs_signing` - the OBS workflow API (V2);
* :mod:`~handler.client.dwr` + :mod:`~handler.client.dwr_signing` - the DWR v3 API
  (``SDK-HMAC-SHA256``).

This is the client stage of the pipeline: it imports :mod:`handler.credentials`,
:mod:`handler.names` and :mod:`handler.endpoint`, never another stage.
"""

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
from handler.client.transport import DEADLINE_EXCEEDED, RetryPolicy
from handler.names import InvalidNameError

__all__ = [
    "DEADLINE_EXCEEDED",
    "DwrClient",
    "ExecutionInfo",
    "ExecutionPage",
    "ExecutionSummary",
    "GraphPage",
    "InvalidNameError",
    "RestoreBody",
    "RetryPolicy",
    "WorkflowClient",
    "WorkflowResult",
    "normalise_state",
]
