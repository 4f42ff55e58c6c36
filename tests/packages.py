"""Helpers for the tests of the FunctionGraph packages (fixtures: ``tests.package_fixtures``)."""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def target_version() -> str:
    """The runtime version the Makefile builds for by default."""
    match = re.search(r"^PYTHON_VERSION \?= *(\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert match, "the Makefile must state PYTHON_VERSION ?= <version>"
    return match.group(1)


def unpack(package: Path, destination: Path) -> Path:
    """Extract like the platform: every file with the unix mode the zip records."""
    with zipfile.ZipFile(package) as archive:
        for info in archive.infolist():
            archive.extract(info, destination)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(destination / info.filename, mode)
    return destination


def names(package: Path) -> list[str]:
    with zipfile.ZipFile(package) as archive:
        return archive.namelist()
