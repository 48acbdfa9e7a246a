"""HTTP-level faults from one STS address, against a running `sts-agent serve`.

The TLS session is fine; what comes back is wrong: a proxy's 5xx page, STS's
own error XML, a body too large to buffer, or one that is not XML at all.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent.simulate.demo import ENI_ADDRESSES, REGIONAL
from tests.support import faults
from tests.support.faults import REQ_FAILURES, SUCCESS, LiveAgent

ENI = ENI_ADDRESSES[0]
RSS_BOUND = 200 * 1024 * 1024


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveAgent]:
    with faults.live_agent(tmp_path_factory.mktemp("http")) as la:
        la.wait_healthy("a healthy start")
        yield la


def _inject(live: LiveAgent, fault: str, reason: str) -> faults.Scrape:
    """Switch `fault` on at one ENI and wait until the metrics blame exactly `reason`."""
    live.wait_healthy("a healthy baseline")
    before = live.scrape()
    count = before.total(REQ_FAILURES, endpoint=REGIONAL, address=ENI, reason=reason)
    live.vpc.sts[ENI].fault = fault
    s = live.wait(
        lambda s: (
            s.total(REQ_FAILURES, endpoint=REGIONAL, address=ENI, reason=reason) > count
            and s.value(SUCCESS, endpoint=REGIONAL, address=ENI) == 0
        ),
        f"{reason} at {ENI}",
    )
    assert faults.grown(before, s, REQ_FAILURES, besides=reason, address=ENI) == set()
    assert s.finding("STS_CALL_FAILED") >= 1
    live.wait(
        lambda s: (
            s.value(SUCCESS, endpoint=REGIONAL, address=ENI_ADDRESSES[1]) == 1
            and s.value(SUCCESS, endpoint=REGIONAL, address=ENI) == 0
            and s.path(REGIONAL) == {"vpce"}
        ),
        "the other ENI answering",
    )
    # An answer did arrive, so the first byte was timed in the failing round.
    assert (s.value(faults.PHASE, endpoint=REGIONAL, address=ENI, phase="ttfb") or 0) > 0
    return s


def _recover(live: LiveAgent) -> None:
    live.vpc.sts[ENI].fault = None
    s = live.wait_healthy()
    assert s.finding("STS_CALL_FAILED") == 0
    live.assert_alive()


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("http_500", "http_5xx"),
        ("http_503", "http_5xx"),
        ("error:Throttling", "throttled"),
        ("error:ExpiredToken", "expired_token"),
        ("error:InvalidClientTokenId", "invalid_token"),
        ("error:AccessDenied", "access_denied"),
        ("malformed", "bad_response"),
    ],
)
def test_http_fault_is_named_survived_and_recovered(
    live: LiveAgent, fault: str, reason: str
) -> None:
    try:
        _inject(live, fault, reason)
    finally:
        _recover(live)


def test_huge_body_is_cut_off_and_memory_stays_bounded(live: LiveAgent) -> None:
    try:
        _inject(live, "huge_body", "bad_response")
        live.wait_rounds(3)  # several 50 MB answers in a row
        assert live.peak_rss_bytes() < RSS_BOUND
    finally:
        _recover(live)
    assert live.peak_rss_bytes() < RSS_BOUND
