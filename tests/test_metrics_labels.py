"""What each probed address exports under, from real rounds against the simulated VPC.

In-process rounds (real DNS server, real TLS, unsigned calls) feed the real
Metrics registry; the exposition is parsed back with prometheus-client.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator

import pytest

from agent.config import Settings
from agent.discovery import discover
from agent.results import DnsAnswer, DnsLookup, DnsQuery, Resolver
from agent.runner import Prober, run_round
from agent.simulate.demo import (
    ENI_ADDRESSES,
    GLOBAL,
    PUBLIC_GLOBAL,
    REGIONAL,
    SimulatedVpc,
    simulated_vpc,
)
from agent.surfaces.metrics import Metrics
from agent.targets import AddressBook
from tests.support.faults import Scrape

ENV = {"AWS_DEFAULT_REGION": "us-east-2", "AWS_CONFIG_FILE": "/dev/null"}
DEAD_PUBLIC = "127.20.0.99"  # public, nothing listens: refused at once
MUTE_PUBLIC = "127.20.0.98"  # public, accepts TCP and never answers


@pytest.fixture(scope="module")
def vpc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatedVpc]:
    with simulated_vpc(tmp_path_factory.mktemp("labels")) as v:
        yield v


@pytest.fixture
def settings(vpc: SimulatedVpc) -> Settings:
    s = vpc.settings(interval=5, listen="127.0.0.1:0")
    return dataclasses.replace(s, credentials="none", vpce_dns_names=())


def _observe(metrics: Metrics, settings: Settings, prober: Prober | None = None) -> Scrape:
    metrics.observe(run_round(settings, discover(settings, ENV), prober or Prober(settings)))
    return Scrape.parse(metrics.registry.exposition().decode())


def test_public_addresses_share_one_label_and_enis_keep_theirs(
    vpc: SimulatedVpc, settings: Settings
) -> None:
    vpc.dns.set_records(GLOBAL, (PUBLIC_GLOBAL, DEAD_PUBLIC))
    try:
        s = _observe(Metrics(), settings)
    finally:
        vpc.dns.set_records(GLOBAL, (PUBLIC_GLOBAL,))
    assert s.label_values("sts_agent_probe_success", "address", endpoint=REGIONAL) == set(
        ENI_ADDRESSES
    )
    assert s.label_values("sts_agent_probe_success", "address", endpoint=GLOBAL) == {"public"}
    # one of the two public addresses fails, so the aggregate does
    assert s.value("sts_agent_probe_success", endpoint=GLOBAL, address="public") == 0
    assert s.value("sts_agent_requests_total", endpoint=GLOBAL, address="public") == 2
    failed = s.find("sts_agent_request_failures_total", endpoint=GLOBAL, address="public")
    assert [(x.labels["reason"], x.value) for x in failed] == [("connect_refused", 1.0)]
    # the slowest public address's phases: the live one got through TLS
    assert s.value(
        "sts_agent_request_phase_seconds", endpoint=GLOBAL, address="public", phase="tls"
    )
    assert s.value("sts_agent_endpoint_public_address_hash", endpoint=REGIONAL) == 0
    both = s.value("sts_agent_endpoint_public_address_hash", endpoint=GLOBAL)
    one = _observe(Metrics(), settings).value(
        "sts_agent_endpoint_public_address_hash", endpoint=GLOBAL
    )
    assert both and one and both != one
    assert DEAD_PUBLIC not in s.text and PUBLIC_GLOBAL not in s.text


def test_public_phases_survive_the_slowest_address_failing_before_tls(
    vpc: SimulatedVpc, settings: Settings
) -> None:
    """A public address that takes the TCP handshake and then never answers TLS is the
    slowest in total; the live address's tls/ttfb must still be exported for `public`."""
    with socket.socket() as mute:
        mute.bind((MUTE_PUBLIC, vpc.sts_port))
        mute.listen(8)  # the kernel completes the handshake; nobody ever speaks TLS
        vpc.dns.set_records(GLOBAL, (PUBLIC_GLOBAL, MUTE_PUBLIC))
        try:
            s = _observe(Metrics(), settings)
        finally:
            vpc.dns.set_records(GLOBAL, (PUBLIC_GLOBAL,))
    assert s.value("sts_agent_probe_success", endpoint=GLOBAL, address="public") == 0
    phases = s.label_values(
        "sts_agent_request_phase_seconds", "phase", endpoint=GLOBAL, address="public"
    )
    assert {"connect", "tls", "ttfb", "total"} <= phases
    assert s.value(
        "sts_agent_tls_certificate_expiry_timestamp_seconds", endpoint=GLOBAL, address="public"
    )


def test_histogram_phases_are_configurable_and_dropped_on_change(settings: Settings) -> None:
    metrics = Metrics(("total", "connect"))
    s = _observe(metrics, settings)
    counts = s.find("sts_agent_request_duration_seconds_count", endpoint=REGIONAL)
    assert {x.labels["phase"] for x in counts} == {"total", "connect"}
    assert all("address" not in x.labels for x in counts)
    assert s.value(
        "sts_agent_request_duration_seconds_count", endpoint=REGIONAL, phase="total"
    ) == len(ENI_ADDRESSES)
    metrics.histogram_phases = frozenset({"total"})  # what a reload does
    s = _observe(metrics, settings)
    counts = s.find("sts_agent_request_duration_seconds_count", endpoint=REGIONAL)
    assert {x.labels["phase"] for x in counts} == {"total"}
    # every phase of the record is a gauge per ENI, whatever the histograms
    phases = s.label_values("sts_agent_request_phase_seconds", "phase", address=ENI_ADDRESSES[0])
    assert {"connect", "tls", "ttfb", "total"} <= phases


def _answer(*pairs: tuple[str, int]) -> DnsLookup:
    answers = tuple(DnsAnswer(a, ttl) for a, ttl in pairs)
    return DnsLookup(GLOBAL, Resolver("127.0.0.1"), (DnsQuery("A", 0.001, "NOERROR", answers),))


def test_the_address_book_stays_bounded_whatever_ttls_dns_sends() -> None:
    book = AddressBook()
    for i in range(1000):  # a new address every second, each with a TTL of 68 years
        got = book.update(GLOBAL, [_answer((f"198.51.100.{i % 250}", 2**31 - 1))], float(i), 8)
        assert len(got) <= 9 and len(book.expiry[GLOBAL]) <= 9
    # the newest past addresses are kept, and no TTL counts for more than five minutes
    assert got[0] == "198.51.100.249" and "198.51.100.241" in got
    assert book.update(GLOBAL, [], 999.0 + 301, 8) == []
