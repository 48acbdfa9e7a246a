"""DNS faults against a running `sts-agent serve`: each is named, survived and recovered from.

One agent serves the whole module; every test switches one fault on at the
simulated VPC resolver, reads the reason back from /metrics, and switches it off.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.simulate.demo import ENI_ADDRESSES, GLOBAL, PUBLIC_GLOBAL, REGIONAL, SimulatedVpc
from agent.simulate.dns_server import DnsServer
from testbed.agent_proc import agent_env
from testbed.ports import free_port
from tests.support.faults import DNS_FAILURES, LiveAgent, Scrape, all_enis_answer, grown, live_agent


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveAgent]:
    with live_agent(tmp_path_factory.mktemp("dns")) as la:
        la.wait_healthy("a healthy start")
        yield la


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("timeout", "timeout"),
        ("servfail", "servfail"),
        ("nxdomain", "nxdomain"),
        ("refused", "refused"),
        ("garbage", "malformed"),
    ],
)
def test_dns_failure_is_named_survived_and_recovered(
    live: LiveAgent, fault: str, reason: str
) -> None:
    live.wait_healthy("a healthy baseline")
    res = live.resolver
    start = live.scrape()
    before = start.total(DNS_FAILURES, endpoint=REGIONAL, resolver=res, reason=reason)

    def shows_fault(s: Scrape) -> bool:
        return (
            s.total(DNS_FAILURES, endpoint=REGIONAL, resolver=res, reason=reason) > before
            and s.path(REGIONAL) == {"unresolved"}
            and s.path(GLOBAL) == {"unresolved"}
        )

    live.vpc.dns.fault = fault
    try:
        s = live.wait(shows_fault, f"{reason} in dns failures and the unresolved path")
        assert s.finding("ENDPOINT_UNRESOLVED") == 2  # both names
        # Addresses already learnt stay in use for their TTL, as clients' caches keep them.
        live.wait(
            lambda s: shows_fault(s) and all_enis_answer(s), "cached ENI addresses still probed"
        )
        after = live.wait_rounds(1)
        assert grown(start, after, DNS_FAILURES, besides=reason, resolver=res) == set()
    finally:
        live.vpc.dns.fault = None
    s = live.wait_healthy()
    assert s.finding("ENDPOINT_UNRESOLVED") == 0
    live.assert_alive()


def test_truncated_udp_reply_is_retried_over_tcp_and_succeeds(live: LiveAgent) -> None:
    live.wait_healthy("a healthy baseline")
    res = live.resolver
    failures = live.scrape().total(DNS_FAILURES, resolver=res)
    live.vpc.dns.fault = "truncate"
    try:
        queries = live.vpc.dns.queries
        for _ in range(3):
            s = live.wait_rounds(1)
            assert s.path(REGIONAL) == {"vpce"}
            assert s.total(DNS_FAILURES, resolver=res) == failures
        live.wait_healthy("the ENIs answering while DNS falls back to TCP")
        assert live.vpc.dns.queries > queries
        # The same config as a one-shot check shows the answers really came over TCP.
        out = subprocess.run(
            [sys.executable, "-m", "agent", "check", "--json", "--config", str(live.config)],
            env=agent_env(live.vpc),
            capture_output=True,
            text=True,
            timeout=60,
        )
        doc = json.loads(out.stdout)
        regional = next(e for e in doc["endpoints"] if e["hostname"] == REGIONAL)
        a_query = next(q for q in regional["dns"][0]["queries"] if q["type"] == "A")
        assert a_query["tcp"] is True and a_query["error"] is None
        assert sorted(regional["dns"][0]["addresses"]) == sorted(ENI_ADDRESSES)
    finally:
        live.vpc.dns.fault = None
    live.assert_alive()


def test_unreachable_resolver_is_named_and_recovers_when_it_comes_up(tmp_path: Path) -> None:
    """A second resolver with nothing listening: only its own verdict goes unresolved."""
    dead = "127.10.0.3"  # inside the simulated VPC; nothing bound there until the end
    port = free_port(dead)
    dead_label = f"{dead}:{port}"

    def two_resolvers(vpc: SimulatedVpc) -> dict[str, Any]:
        return {"resolvers": [f"{vpc.dns.address}:{vpc.dns.port}", dead_label]}

    with live_agent(tmp_path, before_start=two_resolvers) as live:
        good = live.resolver
        s = live.wait(
            lambda s: (
                s.total(DNS_FAILURES, endpoint=REGIONAL, resolver=dead_label) > 0
                and s.path(REGIONAL, resolver=dead_label) == {"unresolved"}
            ),
            "the dead resolver named in dns failures",
        )
        reasons = {
            x.labels["reason"]
            for x in s.find(DNS_FAILURES, endpoint=REGIONAL, resolver=dead_label)
            if x.value
        }
        assert reasons <= {"timeout", "network"} and reasons, reasons
        assert s.total(DNS_FAILURES, endpoint=REGIONAL, resolver=good) == 0
        assert s.path(REGIONAL, resolver=good) == {"vpce"}
        live.wait_healthy("the working resolver keeping the endpoint on its path")
        assert s.finding("ENDPOINT_UNRESOLVED") == 0
        assert s.finding("RESOLVERS_DISAGREE") == 0  # a timeout: the next nameserver answers

        with DnsServer(dead, port, ttl=30) as revived:
            revived.set_records(REGIONAL, ENI_ADDRESSES)
            revived.set_records(GLOBAL, [PUBLIC_GLOBAL])
            live.wait(
                lambda s: s.path(REGIONAL, resolver=dead_label) == {"vpce"},
                "the revived resolver answering",
            )
            live.assert_alive()


def test_a_second_resolver_that_denies_the_name_is_a_disagreement(tmp_path: Path) -> None:
    """NXDOMAIN from the second resolver is final for the programs that ask it first."""
    other = "127.10.0.3"
    port = free_port(other)
    label = f"{other}:{port}"
    with DnsServer(other, port, ttl=30) as denying:
        denying.set_records(GLOBAL, [PUBLIC_GLOBAL])  # it knows the global name only

        def two_resolvers(vpc: SimulatedVpc) -> dict[str, Any]:
            return {"resolvers": [f"{vpc.dns.address}:{vpc.dns.port}", label]}

        with live_agent(tmp_path, before_start=two_resolvers) as live:
            s = live.wait(
                lambda s: s.finding("RESOLVERS_DISAGREE") == 1,
                "RESOLVERS_DISAGREE for the name the second resolver denies",
            )
            assert s.path(REGIONAL, resolver=label) == {"unresolved"}
            assert s.path(REGIONAL, resolver=live.resolver) == {"vpce"}
            assert s.total(DNS_FAILURES, endpoint=REGIONAL, resolver=label, reason="nxdomain") > 0
            denying.set_records(REGIONAL, ENI_ADDRESSES)
            live.wait(lambda s: s.finding("RESOLVERS_DISAGREE") == 0, "agreement once both answer")
            live.assert_alive()
