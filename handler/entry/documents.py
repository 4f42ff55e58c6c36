"""How every entry point answers over HTTP: a JSON document, its status and headers.

The result document is :meth:`handler.outcomes.Answer.document`; a call refused before any
item was read answers :func:`handler.outcomes.error_document`. Both leave here as the same
``(body, status, headers)`` triple, for the HTTP target, the CloudEvent target, API Gateway
events and the functions-framework hooks alike.
"""

from __future__ import annotations

import json
from typing import Any

from handler.outcomes import Answer, error_document

HttpAnswer = tuple[str, int, dict[str, str]]
JSON_HEADERS = {"Content-Type": "application/json"}
# How long a platform should wait before delivering a 503'd delivery again.
RETRY_AFTER_SECONDS = 5


def json_answer(
    document: dict[str, Any], status: int, headers: dict[str, str] | None = None
) -> HttpAnswer:
    """``document`` as JSON with ``status``."""
    return json.dumps(document), status, {**JSON_HEADERS, **(headers or {})}


def delivery_answer(answer: Answer) -> HttpAnswer:
    """A delivery's answer; a 503 says when to deliver again."""
    retry = {"Retry-After": str(RETRY_AFTER_SECONDS)} if answer.status == 503 else {}
    return json_answer(answer.document(), answer.status, retry)


def error_answer(
    code: str, message: str, status: int, headers: dict[str, str] | None = None
) -> HttpAnswer:
    """A call refused before any item was read: the error document with ``status``."""
    return json_answer(error_document(code, message), status, headers)
