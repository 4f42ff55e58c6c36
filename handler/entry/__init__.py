"""Entry points: how the platform, functions-framework and outside callers reach the function.

* :mod:`.function` - :class:`Function`, the three targets over one runtime: ``restore``
  (the HTTP URL; ``POST /sweep``), ``restore_cloudevent`` (a CloudEvent target) and
  ``handler`` (FunctionGraph events; ``TIMER`` runs a sweep). :mod:`handler.main` makes the
  deployed one from the environment's settings and exposes its targets;
* :mod:`.auth` - the bearer-token rule every outside caller meets, and the probe methods;
* :mod:`.documents` - the JSON answers, the error document included, for every target;
* :mod:`.functiongraph` - FunctionGraph's context (deadline, agency keys) and its own events;
* :mod:`.framework` - the caller check and JSON errors hooked into functions-framework's app
  (imported only under functions-framework: the event path never imports Flask);
* :mod:`.serve` - the documented command that serves the HTTP function;
* :mod:`.errors` - the exceptions a target raises to answer a retry or a refusal.

What it may import: settings, intake, the result types (:mod:`handler.outcomes`,
:mod:`handler.invocation`) and the sweep's request; the runtime (and with it the pipeline and
``requests``) only when the first call needs it.
"""

from handler.entry.errors import RefusedDeliveryError, RetryableDeliveryError
from handler.entry.function import Function

__all__ = ["Function", "RefusedDeliveryError", "RetryableDeliveryError"]
