"""`make test` says in one line which tests it could not run and why (tests/skip_summary.py)."""

from __future__ import annotations

pytest_plugins = ["pytester"]

NEEDS_REDIS = """
from tests.redis_server import require_redis_server

def test_redis_store():
    require_redis_server()

def test_concurrency_across_processes():
    require_redis_server()

def test_without_redis():
    pass
"""


def test_a_run_without_redis_server_says_so_in_one_line(pytester, monkeypatch):
    pytester.makepyfile(test_needs_redis=NEEDS_REDIS)
    monkeypatch.setenv("PATH", str(pytester.path))  # no redis-server on it
    monkeypatch.delenv("CI", raising=False)
    result = pytester.runpytest_inprocess("-p", "tests.skip_summary", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=2)
    lines = [line for line in result.outlines if line.startswith("NOT TESTED:")]
    assert lines == [
        "NOT TESTED: 2 Redis and concurrency tests were skipped: redis-server is not installed "
        "(apt-get install redis-server) (CI=true makes this a failure)"
    ]


def test_a_complete_run_says_nothing_more(pytester):
    pytester.makepyfile(test_plain="def test_one():\n    pass\n")
    result = pytester.runpytest_inprocess("-p", "tests.skip_summary", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert not [line for line in result.outlines if "NOT TESTED" in line]
