"""obs-workflow-restore: restore failed Huawei Cloud workflow executions (OBS or DWR API).

One pipeline, one room per stage; data flows one way:

- entry points: ``main`` (HTTP URL, CloudEvent target, FunctionGraph handler), ``cli``,
  ``framework`` (functions-framework hooks);
- intake: ``intake/`` (any event shape → items) and ``sweep`` (listing → items);
- policy: ``policy`` (allowlist, dedupe, budget) over ``store/``;
- client: ``client/`` (either API, signed, retried);
- report: ``report`` (log lines, sink CloudEvents);
- ``pipeline/`` is the only package that calls more than one stage; ``settings`` is the only one
  that reads the environment; ``devtools/`` is never deployed.

The package is deliberately import-light: importing ``handler`` pulls in nothing but the
standard library, so the FunctionGraph event path starts fast.
"""

__version__ = "0.1.0"
