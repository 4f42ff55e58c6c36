"""The operator's command line, ``obs-workflow-restore`` (see :mod:`.commands` for its usage).

An entry point like :mod:`handler.main`: it runs the pipeline through :mod:`handler.pipeline`,
and a command that acts on one stage alone (one restore, the state store, the restore rules)
calls that stage directly. It also starts the development tools (:mod:`handler.devtools`), so
no deploy package holds it (scripts/build_package.py) and no function module imports it.
"""

from handler.cli.commands import main, serve_command

__all__ = ["main", "serve_command"]
