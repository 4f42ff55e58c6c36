"""The one shared client package: either workflow API, signed, retried, with typed results.

* :mod:`~handler.client.api` - :class:`WorkflowApi`, what both clients are to the pipeline
  (restore, query, the failures listed since a time, the graph names, whether the API says
  why an execution failed), and the base they share;
* :mod:`~handler.client.results` - what every call answers with (both APIs alike);
* :mod:`~handler.client.listing` - listings of more than one page, and :class:`ListingError`;
* :mod:`~handler.client.transport` - the session, the retry schedule and answer parsing;
* :mod:`~handler.client.obs` + :mod:`~handler.client.obs_signing` - the OBS workflow API (V2),
  paged by marker;
* :mod:`~handler.client.dwr` + :mod:`~handler.client.dwr_signing` - the DWR v3 API
  (``SDK-HMAC-SHA256``), paged by offset, windows split by time where offsets end.
* :mod:`~handler.client.smn` and :mod:`~handler.client.ces` - SMN publish and Cloud Eye metric
  data, signed the DWR way, bounded in time (:mod:`~handler.client.sending`); imported by
  their module, so a process that sends neither never loads them.

Each API's differences stay inside its client: nothing outside this package asks which API
is in use. This is the client stage of the pipeline: it imports :mod:`handler.credentials`,
:mod:`handler.names` and :mod:`handler.endpoint`, never another stage (the import contracts
in ``pyproject.toml`` hold it to that).
"""

from handler.client.api import WorkflowApi
from handler.client.dwr import DwrClient
from handler.client.listing import FailureListing, ListingError
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
from handler.client.transport import DEADLINE_EXCEEDED, RetrySchedule
from handler.names import InvalidNameError

__all__ = [
    "DEADLINE_EXCEEDED",
    "CesClient",
    "DwrClient",
    "ExecutionInfo",
    "ExecutionPage",
    "ExecutionSummary",
    "FailureListing",
    "GraphPage",
    "InvalidNameError",
    "ListingError",
    "RestoreBody",
    "RetrySchedule",
    "WorkflowApi",
    "WorkflowClient",
    "WorkflowResult",
    "normalise_state",
]
