"""``serve``: the HTTP function on this machine, started the documented way.

It hands the process over to functions-framework rather than serving in-process, so what runs
here is exactly what FunctionGraph's bootstrap runs; :mod:`handler.devtools.demo` starts it
with the same :func:`handler.entry.serve.serve_command`.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from handler.entry.serve import serve_command
from handler.settings import load_settings


def add_commands(commands: Any) -> None:
    """Add ``serve`` to the command line's subparsers."""
    serve = commands.add_parser("serve", help="serve the HTTP function with functions-framework")
    serve.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    serve.add_argument("--port", type=int, default=8080, help="default: %(default)s")
    serve.set_defaults(run=_serve)


def _serve(args: argparse.Namespace) -> int:
    load_settings()  # fail here, with the variable's name, rather than inside the server
    command = serve_command(args.host, args.port)
    os.execv(command[0], command)  # noqa: S606 - replaces this process with the server
    return 0  # pragma: no cover
