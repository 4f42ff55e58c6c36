"""The API client a process shares, for whichever credentials an invocation brings.

FunctionGraph hands each invocation its agency's temporary keys (or the settings' static
keys apply): one keep-alive client serves them all and is rebuilt only when they change.
The restorer and the sweeper take the same :class:`Clients`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from handler.client import WorkflowApi
from handler.credentials import Credentials


class Clients:
    """``connect(credentials)`` builds a client; ``default`` are the settings' credentials
    (None without static keys); ``gives_error_text`` is what the configured API's clients
    answer, known before any credentials are."""

    def __init__(
        self,
        connect: Callable[[Credentials], WorkflowApi],
        default: Credentials | None,
        *,
        gives_error_text: bool,
    ) -> None:
        self.gives_error_text = gives_error_text
        self._connect = connect
        self._default = default
        self._lock = threading.Lock()
        self._client: WorkflowApi | None = None
        self._credentials: Credentials | None = None

    def get(self, credentials: Credentials | None) -> WorkflowApi | None:
        """The shared client for ``credentials`` (the settings' when None), or None when
        there are none at all."""
        credentials = credentials or self._default
        if credentials is None:
            return None
        with self._lock:
            if self._client is None or credentials != self._credentials:
                if self._client is not None:
                    self._client.close()
                self._client = self._connect(credentials)
                self._credentials = credentials
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
