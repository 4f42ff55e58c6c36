"""The pipeline every entry point shares: intake items → policy → client → report.

The only place that calls more than one stage:

- ``restorer``: :class:`Restorer` - each item through policy, client and report, one outcome
  each; :func:`build_restorer` makes the one a process needs;
- ``sweeping``: a sweep's lease, graphs and cap, each failure through the restorer;
- ``answers``: the service's answers turned into result fields and records;
- ``delivery``: :class:`Invocation` (one entry-point call) and :class:`Delivery` (its answer);
- ``unanswered``: when a restore that got no answer was sent, for its redelivery.
"""

from handler.pipeline.delivery import Delivery, Forced, Invocation
from handler.pipeline.restorer import Restorer, build_restorer, make_client

__all__ = ["Delivery", "Forced", "Invocation", "Restorer", "build_restorer", "make_client"]
