"""The pipeline: each item down the stages, once, and back up only to return.

    admit     admission.py    the door (allowlist, dedupe claim, sweep grace), then the rules,
                              spacing and budget, from facts gathered before deciding
    act       restorer.py     the client: query, restore, the query that checks an answer
    classify  classify.py     the API's answers -> an outcome and a settlement (one place)
    settle    settlement.py   the budget unit kept or given back, the outcome recorded or the
                              marker released
    report    restorer.py     the frozen Result to the reporter, then to every observer

:class:`~handler.pipeline.restorer.Restorer` runs one item through them;
:class:`~handler.pipeline.sweeper.Sweeper` runs a sweep beside it (the lease, the deferred
failures due, the listings) and hands it each failure found. Around them: ``clients`` (the
shared API client), ``lease`` (one sweep at a time), ``deferred`` (failures a rule's spacing
deferred) and ``unanswered`` (when a restore that got no answer was sent). The runtime
(:mod:`handler.runtime`) wires them from the settings; nothing here imports an entry point,
and no module here calls back into one above it (the import contracts in ``pyproject.toml``
say so).
"""
