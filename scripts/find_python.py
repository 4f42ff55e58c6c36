"""Find a CPython interpreter of one version on this machine (the packages' target runtime).

    python scripts/find_python.py 3.10     # prints its path; exit status 1 if there is none

The tests run the built packages under the FunctionGraph runtime's version, and CI must fail
rather than skip when that interpreter is missing, so ``.ci/run`` and ``tests/test_package.py``
both ask here. Candidates are pyenv's versions (``$PYENV_ROOT`` or ``~/.pyenv``),
``python3.X`` on PATH and the usual system locations; each is run once to confirm it really is
CPython of that version (a pyenv shim for an inactive version exists but fails).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PROBE = "import sys; print(sys.implementation.name, '%d.%d' % sys.version_info[:2], sys.executable)"


def candidates(version: str) -> list[str]:
    """Places a CPython ``version`` may live, most specific first."""
    found = []
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    for prefix in sorted((pyenv_root / "versions").glob(f"{version}.*"), reverse=True):
        found.append(str(prefix / "bin" / f"python{version}"))
    on_path = shutil.which(f"python{version}")
    if on_path:
        found.append(on_path)
    found += [f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    return found


def find_python(version: str) -> str | None:
    """The real executable of a working CPython ``version``, or None."""
    for candidate in candidates(version):
        if not os.access(candidate, os.X_OK):
            continue
        try:
            # S603: the candidate paths are this machine's interpreters, probed with a constant.
            result = subprocess.run(  # noqa: S603
                [candidate, "-c", PROBE], capture_output=True, text=True, timeout=20, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        words = result.stdout.split(maxsplit=2)
        if result.returncode == 0 and words[:2] == ["cpython", version]:
            return words[2].strip()
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: find_python.py VERSION   (e.g. 3.10)", file=sys.stderr)
        return 2
    path = find_python(args[0])
    if path is None:
        print(f"no CPython {args[0]} found (looked in: {', '.join(candidates(args[0]))})")
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
