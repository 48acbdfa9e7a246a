"""The failure reasons the probes give are exactly the documented `reason` label values.

The reasons are collected from the probes themselves: every fault the probe tests
use is run here against a server of its own, so the check does not depend on
which other tests ran, or in which order.
"""

from __future__ import annotations

import re
from pathlib import Path

from agent.probes import sts
from agent.results import DNS_REASONS, STS_REASONS
from agent.simulate.ca import Authority
from agent.simulate.dns_server import DnsServer
from agent.simulate.sts_server import StsServer
from testbed import ROOT
from tests.support.probe_faults import DNS_FAULTS, GLOBAL, REGIONAL, STS_FAULTS, StsRig

README = (ROOT / "README.md").read_text()
FAULTS = (ROOT / "docs" / "FAULTS.md").read_text()


def documented(metric: str) -> set[str]:
    """The backquoted values in the description of `metric`'s row of the README's table."""
    row = next(line for line in README.splitlines() if line.startswith(f"| `{metric}` |"))
    return set(re.findall(r"`([a-z0-9_]+)`", row.rsplit("|", 2)[1]))


def in_fault_matrix(*sections: str) -> set[str]:
    """The `reason="…"` values the fault matrix reports under these headings."""
    parts = re.split(r"^## ", FAULTS, flags=re.M)
    chosen = [p for p in parts if p.split("\n", 1)[0].split(" ", 1)[0] in sections]
    assert len(chosen) == len(sections), sections
    return set(re.findall(r'reason="([a-z0-9_]+)"', "".join(chosen)))


def test_the_reasons_real_faults_provoke_are_the_documented_ones(tmp_path: Path) -> None:
    dns: dict[str, str | None] = {}
    for dns_fault in DNS_FAULTS.values():
        with DnsServer("127.0.0.1", 0, ttl=42) as resolver:
            dns[dns_fault.id] = dns_fault.provoke(resolver).reason
    authority = Authority.create(tmp_path / "ca")
    leaf = authority.issue([REGIONAL, GLOBAL], name="sts")
    context = sts.tls_context(str(authority.ca_path))
    calls: dict[str, str | None] = {}
    for sts_fault in STS_FAULTS.values():
        with StsServer("127.0.0.1", 0, *leaf) as server:
            calls[sts_fault.id] = sts_fault.provoke(StsRig(authority, context, server)).reason

    # each fault gives the reason the probe tests expect of it ...
    assert dns == {f.id: f.reason for f in DNS_FAULTS.values()}
    assert calls == {f.id: f.reason for f in STS_FAULTS.values()}
    # ... together they give every documented value and nothing else ...
    dns_documented = documented("sts_agent_dns_lookup_failures_total")
    sts_documented = documented("sts_agent_request_failures_total")
    assert set(dns.values()) == dns_documented == set(DNS_REASONS)
    assert set(calls.values()) == sts_documented == set(STS_REASONS)
    # ... and the fault matrix of the daemon names no value the README does not list.
    assert in_fault_matrix("DNS") <= dns_documented
    assert in_fault_matrix("TCP", "TLS", "HTTP", "Credentials") <= sts_documented
