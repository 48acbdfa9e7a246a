"""The daemon's change log: one line per change between rounds, none for no news."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from agent.config import Settings
from agent.results import EndpointReport, Report
from agent.transitions import TransitionLog
from agent.verdicts.findings import evaluate
from tests.support.minimal_rounds import AMAZON_DNS, REGIONAL, endpoint, lookup, report


def rounds(*eps: EndpointReport) -> Report:
    r = report(*eps)
    return replace(r, findings=evaluate(r, Settings()))


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    out = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "agent.changes"]
    caplog.clear()
    return out


def test_first_round_then_only_changes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent.changes")
    changes = TransitionLog()
    healthy = rounds(endpoint())
    changes.observe(healthy)
    assert lines(caplog) == [(logging.INFO, f"{REGIONAL}: path vpce (127.10.138.148)")]
    changes.observe(healthy)
    assert lines(caplog) == []  # no news, no line

    public = rounds(endpoint(lookups=(lookup(AMAZON_DNS, REGIONAL, "127.20.0.20"),)))
    changes.observe(public)
    got = lines(caplog)
    assert (logging.WARNING, f"{REGIONAL}: path vpce -> public (127.20.0.20)") in got
    (raised,) = [m for lvl, m in got if m.startswith("finding PRIVATE_DNS_NOT_RESOLVING")]
    assert "(critical)" in raised

    # A public name rotating its addresses is not a change; a finding still active is not news.
    rotated = rounds(endpoint(lookups=(lookup(AMAZON_DNS, REGIONAL, "127.20.0.21"),)))
    changes.observe(rotated)
    assert lines(caplog) == []

    changes.observe(healthy)
    got = lines(caplog)
    assert (logging.WARNING, f"{REGIONAL}: path public -> vpce (127.10.138.148)") in got
    assert (logging.INFO, f"finding PRIVATE_DNS_NOT_RESOLVING cleared for {REGIONAL}") in got


def test_a_new_eni_on_the_private_path_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent.changes")
    changes = TransitionLog()
    changes.observe(rounds(endpoint()))
    lines(caplog)
    two = lookup(AMAZON_DNS, REGIONAL, "127.10.138.148", "127.10.139.20")
    changes.observe(rounds(endpoint(lookups=(two,))))
    assert lines(caplog) == [
        (logging.INFO, f"{REGIONAL}: path vpce, addresses now (127.10.138.148, 127.10.139.20)")
    ]
