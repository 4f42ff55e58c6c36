"""The README stays true: every setting is in its table, every promised test exists."""

from __future__ import annotations

import re
from pathlib import Path

from handler.settings import SETTINGS_DOC

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def test_every_setting_is_in_the_settings_table():
    table = section("Settings")
    for name, (default, _meaning) in SETTINGS_DOC.items():
        assert f"| `{name}` | {default} |" in table, name


def test_every_test_the_delivery_guarantees_cite_exists():
    cited = set(re.findall(r"`(?:tests/[\w/]+\.py::)?(test_\w+)`", section("Delivery guarantees")))
    assert len(cited) >= 10
    defined = {
        name
        for path in (ROOT / "tests").rglob("test_*.py")
        for name in re.findall(r"^def (test_\w+)", path.read_text(), re.MULTILINE)
    }
    assert cited <= defined, cited - defined
    for path, name in re.findall(r"`(tests/[\w/]+\.py)::(test_\w+)`", README):
        assert f"def {name}(" in (ROOT / path).read_text(), f"{path}::{name}"


def test_the_documented_commands_exist():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("test", "demo", "bench", "package"):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), target
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "functions-framework --source handler/main.py --target restore" in README
