"""Outage mode in the policy: a rule's ``breaker:`` field, validated like the others, and
``policy explain`` showing the graph's breaker and the shared rate as the store holds them."""

from __future__ import annotations

import json
import time

import pytest

from handler import cli
from handler.outage import Outage
from handler.rules import PolicyError, build_policy
from handler.settings import load_outage_settings
from handler.store import open_store


def rules(*entries: dict):
    return build_policy({"rules": list(entries)}, source="test", max_restores=3, window=86400)


@pytest.mark.parametrize(("written", "threshold"), [(None, None), (2, 2), ("off", 0), (False, 0)])
def test_a_rule_sets_its_own_breaker_threshold_or_turns_it_off(written, threshold):
    entry = {"name": "r"} if written is None else {"name": "r", "breaker": written}
    (rule,) = rules(entry).rules
    assert rule.breaker == threshold


@pytest.mark.parametrize("bad", [0, -1, 1001, "soon", 2.5, True, [3]])
def test_a_bad_breaker_field_is_a_policy_error_naming_the_field(bad):
    with pytest.raises(PolicyError) as raised:
        rules({"name": "r", "breaker": bad})
    assert "rule 1 (r).breaker: must be a whole number 1-1000 or off" in str(raised.value)


def test_a_policy_without_breaker_fields_keeps_its_digest():
    assert "breaker" not in rules({"name": "r"}).rules[0].describe()
    assert rules({"name": "r", "breaker": "off"}).rules[0].describe()["breaker"] == "off"


def test_policy_explain_shows_the_graph_s_breaker_and_the_rate(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("RESTORE_STATE_URL", url)
    monkeypatch.setenv("RESTORE_RATE_LIMIT", "5/s")
    monkeypatch.setenv("RESTORE_BREAKER_THRESHOLD", "2")
    store = open_store(url)
    guard = Outage(load_outage_settings(), store)
    now = time.time()
    for name in ("run-1", "run-2"):  # restored a minute ago, failed again now: it opens
        guard.failure_seen("etl", name, stopped_at=now, last_restore_at=now - 60)
    store.close()

    assert cli.main(["policy", "explain", "--graph", "etl", "--json"]) == 0
    outage = json.loads(capsys.readouterr().out)["outage"]
    assert outage["breaker"]["state"] == "open" and outage["breaker"]["refailures"] == 2
    assert outage["rate"] == {"limit": "5/s", "used": 0}

    assert cli.main(["policy", "explain", "--graph", "etl"]) == 0
    out = capsys.readouterr().out
    assert "breaker: open, 2 re-failure(s) of 2, open since" in out and "next canary at" in out
    assert "rate: 0 used of 5/s" in out


def test_policy_explain_without_a_configured_store_says_the_state_is_unknown(monkeypatch, capsys):
    monkeypatch.delenv("RESTORE_STATE_URL", raising=False)
    assert cli.main(["policy", "explain", "--graph", "etl"]) == 0
    assert "breaker: state unknown (RESTORE_STATE_URL is not set" in capsys.readouterr().out
