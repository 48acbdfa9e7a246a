"""Label cardinality stays bounded however many addresses DNS hands out.

Three properties, each on a real `serve` process scraped over HTTP:
- ENI addresses rotating through a large pool (a misbehaving resolver) never
  grow the per-address series beyond max_addresses_per_endpoint;
- public addresses rotating through a pool (as the global name's do) start no
  series at all: they share address="public", so the distinct series over a
  window stay within 1.2 x the series of one scrape;
- three ENIs and one global address fit the documented series budget
  (at most 160, the README's formula exactly) and pass `promtool check metrics`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from agent.simulate.demo import ENI_ADDRESSES, GLOBAL, REGIONAL, SimulatedVpc
from testbed.require import require_binary
from tests.support.faults import (
    REQ_FAILURES,
    REQUESTS,
    SUCCESS,
    LiveAgent,
    Scrape,
    live_agent,
    restart_sts,
)
from tests.support.faults import (
    ROUNDS as ROUNDS_TOTAL,
)

CAP = 4
# Inside the simulated VPC with nothing listening, so each probe is refused at once.
POOL = [f"127.10.77.{i}" for i in range(1, 201)]
# "Public" (outside every private range and the VPC), nothing listening: refused at once.
PUBLIC_POOL = [f"127.20.1.{i}" for i in range(1, 41)]
PHASE_GAUGE = "sts_agent_request_phase_seconds"
PER_ADDRESS = (REQUESTS, SUCCESS, REQ_FAILURES, PHASE_GAUGE, "sts_agent_endpoint_address_info")
ROUNDS = 15
THIRD_ENI = "127.10.140.7"
BUDGET = 160
SIX_PHASES = 6  # connect, tls, sign, ttfb, transfer, total


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


def _series(s: Scrape) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {(x.name, tuple(sorted(x.labels.items()))) for x in s.samples}


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
            # the histogram has no address label: its series do not move with the answer
            buckets = s.find("sts_agent_request_duration_seconds_bucket", endpoint=REGIONAL)
            assert {b.labels["phase"] for b in buckets} == {"total"} and len(buckets) <= 12
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


def test_rotating_public_addresses_start_no_new_series(live: LiveAgent) -> None:
    """One address of a 40-address pool per answer, every round: no series churn."""
    live.vpc.dns.ttl = 30  # clients would still hold past addresses (the agent does not)
    live.vpc.dns.rotate(GLOBAL, PUBLIC_POOL, per_answer=1)
    try:
        live.wait_rounds(3)  # the rotation's failures and hashes are in place
        scrapes = [live.wait_rounds(1) for _ in range(ROUNDS)]
    finally:
        live.vpc.dns.ttl = 1
        live.vpc.dns.set_records(GLOBAL, ("127.20.0.10",))
    distinct = set().union(*(_series(s) for s in scrapes))
    at_once = min(len(_series(s)) for s in scrapes)
    ratio = len(distinct) / at_once
    print(f"public rotation: {len(distinct)} distinct, {at_once} at one moment: {ratio:.2f}x")
    assert ratio <= 1.2, sorted(distinct - _series(scrapes[-1]))[:40]
    # the rotation reached the agent: several addresses probed, the hash moved
    hashes = {s.value("sts_agent_endpoint_public_address_hash", endpoint=GLOBAL) for s in scrapes}
    assert len(hashes) >= ROUNDS // 2, hashes
    assert max(s.total(REQUESTS, endpoint=GLOBAL) for s in scrapes) > ROUNDS
    for s in scrapes:
        for metric in PER_ADDRESS:
            assert s.label_values(metric, "address", endpoint=GLOBAL) <= {"public"}
        assert not set(PUBLIC_POOL) & {v for x in s.samples for v in x.labels.values()}


def budget(resolvers: int, endpoints: int, addresses: int, phases: int) -> int:
    """The README's formula, without findings, connection counts and failure reasons."""
    # build, rounds, skipped, last run, round duration, IMDS, SDK (3), host info, and the
    # listener's own: connections open, dropped (4 causes), auth refused, /probe refused (4)
    fixed = 20
    per_resolver = 1  # resolver_info
    per_resolver_endpoint = 5 + 9 + 1  # path state set, DNS histogram (6 buckets), lookups
    per_endpoint = 14 + 3  # request histogram (11 buckets, total only), met, dropped, hash
    per_address = 4 + phases  # info, success, requests, cert expiry, one gauge per phase
    return (
        fixed
        + resolvers * per_resolver
        + resolvers * endpoints * per_resolver_endpoint
        + endpoints * per_endpoint
        + addresses * per_address
    )


# Vary with the host, not with the probes: one series per active finding code and per
# endpoint kind/path with live connections; failure reasons appear only when calls fail.
OUTSIDE_FORMULA = ("sts_agent_findings", "sts_agent_host_connections", REQ_FAILURES)


def test_three_enis_and_one_global_address_fit_the_budget(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    promtool = require_binary("promtool")

    def third_eni(vpc: SimulatedVpc) -> None:
        restart_sts(vpc, THIRD_ENI)
        vpc.dns.set_records(REGIONAL, (*ENI_ADDRESSES, THIRD_ENI))

    # Defaults but for the simulated VPC's addresses and a short interval.
    with live_agent(tmp_path_factory.mktemp("budget"), before_start=third_eni) as la:
        s = la.wait(
            lambda s: (
                {x.labels["address"] for x in s.find(SUCCESS, endpoint=REGIONAL) if x.value}
                == {*ENI_ADDRESSES, THIRD_ENI}
                and s.value(SUCCESS, endpoint=GLOBAL, address="public") == 1
            ),
            "three ENIs and the global address answering",
        )
        s = la.wait_rounds(2)
    series = _series(s)
    phases = len(s.label_values(PHASE_GAUGE, "phase", endpoint=REGIONAL))
    by_name: dict[str, int] = {}
    for name, _ in series:
        by_name[name] = by_name.get(name, 0) + 1
    print(f"3 ENIs + 1 global: {len(series)} series ({phases} phases)", sorted(by_name.items()))
    counted = sum(n for name, n in by_name.items() if name not in OUTSIDE_FORMULA)
    assert counted == budget(1, 2, 4, phases), sorted(by_name.items())
    assert len(series) <= BUDGET
    assert budget(1, 2, 4, SIX_PHASES) + 8 <= BUDGET  # room for findings and connections
    out = subprocess.run(
        [promtool, "check", "metrics"], input=s.text, capture_output=True, text=True
    )
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr


def test_rotating_public_answers_are_probed_as_answered_and_none_dropped(live: LiveAgent) -> None:
    """Three new public addresses an answer, a 30 s TTL and a cap of four.

    Before, the address book filled the cap with public addresses that had
    rotated out, so every round sent CAP signed calls for the name instead of
    three, and counted the remembered extras as dropped (a false finding).
    """
    per_answer = 3
    live.vpc.dns.ttl = 30
    live.vpc.dns.rotate(GLOBAL, PUBLIC_POOL, per_answer=per_answer)
    try:
        first = live.wait_rounds(3)
        last = live.wait_rounds(4)
    finally:
        live.vpc.dns.ttl = 1
        live.vpc.dns.set_records(GLOBAL, ("127.20.0.10",))
    for s in (first, last):
        assert s.value("sts_agent_endpoint_addresses_dropped", endpoint=GLOBAL) == 0
        assert s.finding("ADDRESSES_DROPPED") == 0
    rounds = last.total(ROUNDS_TOTAL) - first.total(ROUNDS_TOTAL)
    calls = last.total(REQUESTS, endpoint=GLOBAL) - first.total(REQUESTS, endpoint=GLOBAL)
    assert rounds >= 4 and calls == per_answer * rounds, (calls, rounds)
    live.assert_alive()
