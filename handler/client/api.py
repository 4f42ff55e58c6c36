"""What both API clients are to the rest of the function: one protocol, one shared base.

:class:`WorkflowApi` is everything the pipeline asks of a workflow API - restore, query, the
failures listed since a time, the graph names, and whether the API says why an execution
failed. :class:`~handler.client.obs.WorkflowClient` (OBS) and
:class:`~handler.client.dwr.DwrClient` (DWR) both meet it, so nothing outside
:mod:`handler.client` asks which API is in use: each API's differences - paths, signatures,
paging, error text - live in its own client. Restore and query keep the official SDK's names
and result fields (``restoreFailedWorkflowExecution(executionName, graphName)``; ``status``,
``reason``, ``errorCode``, ``errorMessage``, ``requestId``, ``body``), one name per operation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Protocol, TypeVar

from handler.client.listing import FailureListing, graph_names
from handler.client.results import ExecutionPage, WorkflowResult
from handler.client.transport import Transport

DEFAULT_MAX_PAGES = 100


class WorkflowApi(Protocol):
    """The calls the pipeline makes; see the module docstring."""

    gives_error_text: bool  # the query says why an execution failed (DWR) or not (OBS)

    def restoreFailedWorkflowExecution(
        self, executionName: str, graphName: str, *, deadline: float | None = None
    ) -> WorkflowResult: ...

    def getWorkflowExecution(
        self, executionName: str, graphName: str, *, deadline: float | None = None
    ) -> WorkflowResult: ...

    def listFailedWorkflowExecutions(
        self,
        graphName: str,
        since: datetime,
        *,
        deadline: float | None = None,
        max_pages: int = DEFAULT_MAX_PAGES,
    ) -> FailureListing: ...

    def listWorkflowNames(
        self, *, deadline: float | None = None, max_pages: int = DEFAULT_MAX_PAGES
    ) -> Iterator[tuple[str, ...]]: ...

    def close(self) -> None: ...


_Client = TypeVar("_Client", bound="ApiClient")


class ApiClient:
    """What every API client shares: its transport's lifetime (``close``, ``with``) and the
    listings built on its one-page calls. A client supplies ``listWorkflow`` and its own
    paging of failures, :meth:`_failure_pages`."""

    _transport: Transport
    gives_error_text = False
    listWorkflow: Callable[..., WorkflowResult]  # one page of graph names, each client's own

    def __enter__(self: _Client) -> _Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the keep-alive connections; the client is not used afterwards."""
        self._transport.close()

    def listFailedWorkflowExecutions(
        self,
        graphName: str,
        since: datetime,
        *,
        deadline: float | None = None,
        max_pages: int = DEFAULT_MAX_PAGES,
        now: datetime | None = None,
    ) -> FailureListing:
        """The failures of ``graphName`` that stopped (or started) at or after ``since``,
        one tuple per page as it is iterated (see
        :class:`~handler.client.listing.FailureListing`); ``now`` is for tests."""
        return FailureListing(
            graphName,
            since,
            self._failure_pages,
            deadline=deadline,
            max_pages=max_pages,
            now=now or datetime.now(timezone.utc),
        )

    def listWorkflowNames(
        self, *, deadline: float | None = None, max_pages: int = DEFAULT_MAX_PAGES
    ) -> Iterator[tuple[str, ...]]:
        """Every graph name, one tuple per page (see
        :func:`~handler.client.listing.graph_names`)."""
        return graph_names(self.listWorkflow, deadline=deadline, max_pages=max_pages)

    def _failure_pages(self, listing: FailureListing) -> Iterator[ExecutionPage]:
        """The pages holding ``listing``'s failures, each read with ``listing.read`` once
        ``listing.take_page()`` allows it."""
        raise NotImplementedError
