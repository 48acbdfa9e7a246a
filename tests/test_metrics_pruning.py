"""Counter and histogram series leave /metrics with the resolver, endpoint or ENI they count.

The real Metrics class is fed hand-built Reports (tests.support.minimal_rounds), one
fact changed per round, and its exposition is parsed back with prometheus-client.
Without pruning, a resolver dropped from the configuration or rediscovered away, or an
endpoint no longer watched, repeats its last counts until the agent restarts.
"""

from __future__ import annotations

from agent.results import DnsReason, Report, Resolver
from agent.surfaces.metrics import Metrics
from tests.support.faults import Scrape
from tests.support.minimal_rounds import (
    AMAZON_DNS,
    GLOBAL,
    OTHER_DNS,
    REGIONAL,
    endpoint,
    lookup,
    probe,
    report,
)

ENI = "127.10.138.148"
PUBLIC = "127.20.0.10"
LOOKUPS = "sts_agent_dns_lookups_total"
DNS_FAILURES = "sts_agent_dns_lookup_failures_total"
DNS_COUNT = "sts_agent_dns_lookup_duration_seconds_count"


def _scrape(metrics: Metrics, *rounds: Report) -> Scrape:
    for r in rounds:
        metrics.observe(r)
    return Scrape.parse(metrics.registry.exposition().decode())


def _with(*resolvers: tuple[Resolver, DnsReason | None]) -> Report:
    """One round of the regional name, looked up at each resolver (failing for a reason)."""
    lookups = tuple(
        lookup(r, REGIONAL, reason=why) if why else lookup(r, REGIONAL, ENI) for r, why in resolvers
    )
    return report(endpoint(lookups=lookups, probes=(probe(ENI),)))


def _carrying(s: Scrape, label: str, value: str) -> set[str]:
    """Names of every sample, of any family, with this label value."""
    return {x.name for x in s.samples if x.labels.get(label) == value}


def test_a_resolver_that_leaves_takes_its_series_and_the_others_count_on() -> None:
    metrics = Metrics()
    both = _with((AMAZON_DNS, "servfail"), (OTHER_DNS, "timeout"))
    before = _scrape(metrics, both)
    assert {LOOKUPS, DNS_FAILURES, DNS_COUNT} <= _carrying(before, "resolver", OTHER_DNS.label)

    after = _scrape(metrics, _with((AMAZON_DNS, None)))
    assert _carrying(after, "resolver", OTHER_DNS.label) == set()
    # the resolver still in use keeps counting, its earlier failure reason included
    amazon = AMAZON_DNS.label
    assert after.value(LOOKUPS, endpoint=REGIONAL, resolver=amazon) == 2
    assert after.value(DNS_COUNT, endpoint=REGIONAL, resolver=amazon) == 2
    assert after.value(DNS_FAILURES, endpoint=REGIONAL, resolver=amazon, reason="servfail") == 1


def test_a_resolver_that_returns_counts_from_zero() -> None:
    """Prometheus reads the restart as a counter reset, which rate() handles."""
    metrics = Metrics()
    both = _with((AMAZON_DNS, None), (OTHER_DNS, None))
    s = _scrape(metrics, both, _with((AMAZON_DNS, None)), both)
    assert s.value(LOOKUPS, endpoint=REGIONAL, resolver=OTHER_DNS.label) == 1
    assert s.value(LOOKUPS, endpoint=REGIONAL, resolver=AMAZON_DNS.label) == 3


def test_an_endpoint_no_longer_watched_takes_every_series_along() -> None:
    metrics = Metrics()
    glob = endpoint(GLOBAL, "global", "public", lookups=(lookup(AMAZON_DNS, GLOBAL, PUBLIC),))
    before = _scrape(metrics, report(endpoint(), glob))
    assert {LOOKUPS, DNS_COUNT, "sts_agent_requests_total"} <= _carrying(before, "endpoint", GLOBAL)

    after = _scrape(metrics, report(endpoint()))
    assert _carrying(after, "endpoint", GLOBAL) == set()
    assert after.value(LOOKUPS, endpoint=REGIONAL, resolver=AMAZON_DNS.label) == 2
    assert after.value("sts_agent_requests_total", endpoint=REGIONAL, address=ENI) == 2
