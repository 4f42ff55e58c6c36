"""How the HTTP function is served on a machine: the documented functions-framework command.

The command line's ``serve`` and the demo start the function with :func:`serve_command`, so
what runs there is exactly what FunctionGraph's bootstrap runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

MAIN_SOURCE = Path(__file__).resolve().parent.parent / "main.py"


def serve_command(host: str, port: int) -> list[str]:
    """The documented way to serve the HTTP function, with this interpreter's framework."""
    executable = Path(sys.executable).parent / "functions-framework"
    return [str(executable), "--source", str(MAIN_SOURCE), "--target", "restore",
            "--host", host, "--port", str(port)]  # fmt: skip
