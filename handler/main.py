"""The function's three targets, as the platforms load them.

* ``restore(request)`` - functions-framework HTTP target (the function URL)::

      functions-framework --source handler/main.py --target restore

* ``restore_cloudevent(cloud_event)`` - ``--signature-type cloudevent``;
* ``handler(event, context)`` - FunctionGraph event functions (``index.handler``).

Settings are read and validated here, once, at import: a misconfigured function fails at
start-up with the variable's name. Everything else is :class:`handler.entry.Function`'s, which
builds the runtime (and with it ``requests``) on the first call; nothing here imports Flask or
functions-framework, so the FunctionGraph path starts fast.
"""

from __future__ import annotations

import os
import sys

if __name__ != "handler.main":  # loaded by path: functions-framework --source handler/main.py
    _ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if _ROOT not in sys.path:
        sys.path.insert(0, _ROOT)

from typing import Any

from handler.entry import Function
from handler.settings import load_settings

FUNCTION = Function(load_settings())


# Plain functions, not FUNCTION's bound methods: functions-framework accepts only functions.
def restore(request: Any) -> tuple[str, int, dict[str, str]]:
    """The HTTP target: see :meth:`handler.entry.Function.restore`."""
    return FUNCTION.restore(request)


def restore_cloudevent(cloud_event: Any) -> None:
    """The CloudEvent target: see :meth:`handler.entry.Function.restore_cloudevent`."""
    FUNCTION.restore_cloudevent(cloud_event)


def handler(event: Any, context: Any) -> dict[str, Any]:
    """The FunctionGraph event target: see :meth:`handler.entry.Function.handler`."""
    return FUNCTION.handler(event, context)


FUNCTION.install_framework_hooks()
