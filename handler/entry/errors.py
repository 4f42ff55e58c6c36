"""The exceptions an entry point raises to answer what a return value cannot."""

from __future__ import annotations

from typing import Any


class RetryableDeliveryError(RuntimeError):
    """Raised to make the platform deliver again: some item ended ``retryable_error``.

    ``document`` is the delivery's result document, answered with 503 where we can answer.
    """

    def __init__(self, message: str, document: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.document = document or {}


class RefusedDeliveryError(RuntimeError):
    """Raised by the CloudEvent target to answer a 4xx: the framework answers a CloudEvent
    function's return with 200, so any other answer has to leave as an exception.

    ``document`` is the delivery's result document (with its ``error``), ``status`` the 4xx.
    """

    def __init__(self, document: dict[str, Any], status: int) -> None:
        super().__init__(f"delivery refused with {status}")
        self.document = document
        self.status = status
