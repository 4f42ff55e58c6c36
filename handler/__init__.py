"""obs-workflow-restore: restore failed Huawei Cloud workflow executions (OBS or DWR API).

One item goes down the stages and back up only to return (the map: README, "How it works"):

- entry points: ``main`` (the three targets), ``entry/`` (HTTP URL, CloudEvent target,
  FunctionGraph handler; auth, probes, the JSON documents, functions-framework hooks),
  ``cli/``; ``runtime`` builds everything they run from the settings;
- intake: ``intake/`` (any event shape -> items) and ``sweep`` (a sweep's request, its
  failures as items, its summary);
- ``pipeline/``: admit (``admission``, over ``store/`` and the rule set in ``rules``) ->
  act (the client) -> classify -> settle -> report; the sweeper beside the restorer;
- client: ``client/`` (either API behind one protocol, signed, retried, paged);
- report: ``report`` (log lines, sink CloudEvents) of ``outcomes`` (Outcome, Result, Answer);
- ``settings`` is the only module that reads the environment; ``devtools/`` is never deployed.

The import rules are contracts in ``pyproject.toml`` (``make lint``). The package is
deliberately import-light: importing ``handler`` pulls in nothing but the standard library,
so the FunctionGraph event path starts fast. For the same reason the immutable records are
``typing.NamedTuple`` classes, not frozen dataclasses: a dataclass compiles six methods as its
module is imported (≈1.4 ms a class against ≈0.3 ms, measured in benchmarks/PROFILE.md), and
a cold start imports dozens. Records that carry a secret or a URL that may hold one (the
settings records in ``settings`` and ``Credentials``) stay dataclasses: ``json.dumps`` writes
a tuple's fields out, and refuses a dataclass. So do the few that are filled in place.
"""

__version__ = "0.1.0"
