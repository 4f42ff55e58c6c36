"""The operator's command line, ``obs-workflow-restore`` (its usage: :mod:`.commands`).

* :mod:`.commands` - ``main`` and the parser: every command, the exit codes, one-line errors;
* :mod:`.restore` - ``restore`` (one execution, admitted as an event) and ``replay`` (a saved
  delivery);
* :mod:`.sweep` - ``sweep``, one sweep as the timer runs it;
* :mod:`.serve` - ``serve``, the HTTP function under functions-framework;
* :mod:`.state` - ``state``, ``state forget``, ``state reset-budget``;
* :mod:`.policy` - ``policy check`` and ``policy explain``;
* :mod:`.output` - the field list and the results table those commands print.

An entry point like :mod:`handler.entry`: it runs the pipeline through :mod:`handler.runtime`
(``restore``, ``replay``, ``sweep``), and a command that acts on one stage alone (the state
store, the restore rules) calls that stage directly. It also starts the development tools
(:mod:`handler.devtools`), so no deploy package holds it (scripts/build_package.py) and no
function module imports it.
"""

from handler.cli.commands import main

__all__ = ["main"]
