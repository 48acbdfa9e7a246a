"""Label cardinality stays bounded however many addresses DNS hands out.

A name whose answer rotates through a large pool (as a misbehaving resolver or
a load balancer's DNS would) must never grow the per-address series beyond
max_addresses_per_endpoint, and an answer larger than the cap is reported.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent.simulate.demo import REGIONAL, SimulatedVpc
from tests.support.faults import REQ_FAILURES, REQUESTS, SUCCESS, LiveAgent, Scrape, live_agent

CAP = 4
# Inside the simulated VPC with nothing listening, so each probe is refused at once.
POOL = [f"127.10.77.{i}" for i in range(1, 201)]
PER_ADDRESS = (
    "sts_agent_request_duration_seconds_bucket",
    REQUESTS,
    SUCCESS,
    REQ_FAILURES,
    "sts_agent_endpoint_address_info",
)
ROUNDS = 15


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveAgent]:
    def short_ttl(vpc: SimulatedVpc) -> None:
        vpc.dns.ttl = 1  # rotated-out addresses leave the agent's address book quickly

    with live_agent(
        tmp_path_factory.mktemp("cardinality"),
        before_start=short_ttl,
        max_addresses_per_endpoint=CAP,
    ) as la:
        la.wait_healthy("a healthy start")
        yield la


def _addresses(s: Scrape, metric: str) -> dict[str, set[str]]:
    """Distinct address label values per endpoint."""
    out: dict[str, set[str]] = {}
    for x in s.find(metric):
        out.setdefault(x.labels["endpoint"], set()).add(x.labels["address"])
    return out


def test_rotating_answers_never_grow_series_beyond_the_cap(live: LiveAgent) -> None:
    seen: set[str] = set()
    batches = iter([POOL[i : i + 3] for i in range(0, len(POOL), 3)])
    try:
        for _ in range(ROUNDS):
            live.vpc.dns.set_records(REGIONAL, next(batches))
            s = live.wait_rounds(1)
            for metric in PER_ADDRESS:
                for endpoint, addrs in _addresses(s, metric).items():
                    assert len(addrs) <= CAP, f"{metric} has {len(addrs)} addresses for {endpoint}"
            buckets = s.find("sts_agent_request_duration_seconds_bucket", endpoint=REGIONAL)
            assert len(buckets) <= CAP * 4 * 15  # addresses x phases x buckets (with +Inf)
            seen |= _addresses(s, SUCCESS).get(REGIONAL, set())
    finally:
        live.vpc.private_dns(True)
    # The rotation really reached the metrics, and old addresses were pruned, not kept.
    assert len(seen & set(POOL)) > 3 * CAP, sorted(seen)
    s = live.wait_healthy()
    assert not _addresses(s, REQUESTS)[REGIONAL] & set(POOL)
    live.assert_alive()


def test_an_answer_larger_than_the_cap_is_reported_as_dropped(live: LiveAgent) -> None:
    live.wait_healthy("a healthy baseline")
    big = POOL[-7:]
    live.vpc.dns.set_records(REGIONAL, big)
    try:
        dropped = f"sts_agent_endpoint_addresses_dropped{{endpoint={REGIONAL!r}}}"
        s = live.wait(
            lambda s: (
                s.value("sts_agent_endpoint_addresses_dropped", endpoint=REGIONAL) == 3
                and _addresses(s, SUCCESS).get(REGIONAL, set()) <= set(big)
            ),
            f"{dropped} == 3 once the old answer has aged out",
        )
        assert len(_addresses(s, SUCCESS)[REGIONAL]) == CAP
        assert s.finding("ADDRESSES_DROPPED") == 1
    finally:
        live.vpc.private_dns(True)
    s = live.wait_healthy()
    assert s.value("sts_agent_endpoint_addresses_dropped", endpoint=REGIONAL) == 0
    assert s.finding("ADDRESSES_DROPPED") == 0
