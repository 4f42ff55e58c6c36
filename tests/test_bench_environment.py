"""The benchmarks measure what a deployment runs, whatever the developer's shell carries."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

COMMON = Path(__file__).resolve().parents[1] / "benchmarks" / "common.py"


def _bench_common() -> ModuleType:
    """benchmarks/common.py, loaded from its path (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_common", COMMON)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_processes_keep_bytecode_caches_when_the_shell_turns_them_off(monkeypatch):
    # A deployed package has its bytecode compiled: without caches every import would
    # measure the compiler, and the import and cold-start ratios would be wrong.
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    common = _bench_common()
    for env in (common.clean_environ(), common.function_env("http://127.0.0.1:1", "/tmp")):
        assert "PYTHONDONTWRITEBYTECODE" not in env


def test_benchmark_processes_talk_to_loopback_without_the_shells_proxy(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("RESTORE_AUTH_TOKEN", "from-the-shell")
    env = _bench_common().clean_environ()
    assert "HTTPS_PROXY" not in env and "RESTORE_AUTH_TOKEN" not in env
    assert env["NO_PROXY"] == "127.0.0.1,localhost"
