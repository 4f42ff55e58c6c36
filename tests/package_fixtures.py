"""The built FunctionGraph packages and the target CPython, loaded with ``pytest_plugins``.

Building needs pip and the package index, and takes several seconds, so it happens once per
session (into a temporary directory: the user's ``build/`` is left alone). The target version
is the Makefile's ``PYTHON_VERSION``, the one place it is stated.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.find_python import find_python
from tests.packages import ROOT, target_version

BUILD_TIMEOUT = 300.0


@pytest.fixture(scope="session")
def built_packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"event": restore-event.zip, "http": restore-http.zip}`` built as `make package` does
    (which compiles the bytecode with the target CPython: skipped without it, as below)."""
    _target_python()
    out = tmp_path_factory.mktemp("build")
    command = [sys.executable, "scripts/build_package.py", "--python-version", target_version()]
    result = subprocess.run(
        [*command, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"build failed:\n{result.stdout}\n{result.stderr}"
    packages = {"event": out / "restore-event.zip", "http": out / "restore-http.zip"}
    for path in packages.values():
        assert str(path) in result.stdout, f"no size reported for {path.name}: {result.stdout}"
    return packages


@pytest.fixture(scope="session")
def runtime_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``bin`` directory whose ``python3`` is the target CPython with nothing installed.

    A venv without pip: the package must bring every module it imports, as on FunctionGraph,
    and nothing of the interpreter's own site-packages can hide a missing one. Skipped when
    the interpreter is absent - except under CI (``CI=true``), where that is a failure.
    """
    python = _target_python()
    venv = tmp_path_factory.mktemp("runtime") / "python"
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    return venv / "bin"


def _target_python() -> str:
    """The target CPython's path; skips the test without it - except under CI (``CI=true``),
    where that is a failure."""
    version = target_version()
    python = find_python(version)
    if python is None:
        message = f"no CPython {version} on this machine (pyenv install {version})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI=true, so the package tests must run", pytrace=False)
        pytest.skip(message)
    return python
