"""TCP and TLS faults on one address of the STS endpoint, against a running `sts-agent serve`.

TCP faults are switched on the first ENI's server.  TLS faults need certificates
the simulated VPC does not issue, so a second CA (added to the agent's bundle)
and a third, untrusted one serve them from spare addresses inside the VPC, and
the resolver is pointed there, as a hijacked or misconfigured name would be.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent.simulate.ca import Authority
from agent.simulate.demo import ENI_ADDRESSES, GLOBAL, REGIONAL, SimulatedVpc
from agent.simulate.sts_server import StsServer
from tests.support.faults import (
    PHASE,
    REQ_FAILURES,
    SUCCESS,
    LiveAgent,
    Scrape,
    grown,
    live_agent,
    restart_sts,
)

ENI = ENI_ADDRESSES[0]
SPARE = {"wrong_hostname": "127.10.250.1", "expired": "127.10.250.2", "untrusted": "127.10.250.3"}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveAgent]:
    tmp = tmp_path_factory.mktemp("tcp_tls")
    trusted = Authority.create(tmp / "trusted-ca")
    untrusted = Authority.create(tmp / "untrusted-ca")
    certs = {
        "wrong_hostname": trusted.issue(["evil.example.com"], name="evil"),
        "expired": trusted.issue([REGIONAL, GLOBAL], name="expired", expired=True),
        "untrusted": untrusted.issue([REGIONAL, GLOBAL], name="stranger"),
    }
    servers: dict[str, StsServer] = {}

    def prepare(vpc: SimulatedVpc) -> dict[str, str]:
        vpc.dns.ttl = 1  # so a redirected answer ages out of the agent's address book quickly
        bundle = tmp / "bundle.pem"
        bundle.write_bytes(vpc.ca_path.read_bytes() + trusted.ca_path.read_bytes())
        for kind, (cert, key) in certs.items():
            servers[kind] = StsServer(SPARE[kind], vpc.sts_port, cert, key).start()
        return {"ca_bundle": str(bundle)}

    try:
        with live_agent(tmp, before_start=prepare) as live:
            live.wait_healthy("a healthy start")
            yield live
    finally:
        for s in servers.values():
            s.stop()


def _failed(s: Scrape, address: str, reason: str, before: float) -> bool:
    return (
        s.total(REQ_FAILURES, endpoint=REGIONAL, address=address, reason=reason) > before
        and s.value(SUCCESS, endpoint=REGIONAL, address=address) == 0
    )


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("reset_handshake", "tls_error"),
        ("reset_response", "connection_reset"),
        ("hang_accept", "timeout"),
        ("hang", "timeout"),
        ("slow_drip", "timeout"),
        ("plain_http", "tls_error"),
    ],
)
def test_transport_fault_on_one_eni(live: LiveAgent, fault: str, reason: str) -> None:
    live.wait_healthy("a healthy baseline")
    start = live.scrape()
    before = start.total(REQ_FAILURES, endpoint=REGIONAL, address=ENI, reason=reason)
    live.vpc.sts[ENI].fault = fault
    try:
        s = live.wait(lambda s: _failed(s, ENI, reason, before), f"{reason} at {ENI}")
        assert s.finding("STS_CALL_FAILED") >= 1
        # The other ENI is untouched and the name stays on its path.
        live.wait(
            lambda s: (
                _failed(s, ENI, reason, before)
                and s.value(SUCCESS, endpoint=REGIONAL, address=ENI_ADDRESSES[1]) == 1
                and s.path(REGIONAL) == {"vpce"}
            ),
            "the other ENI answering",
        )
        after = live.wait_rounds(1)
        assert grown(start, after, REQ_FAILURES, besides=reason, address=ENI) == set()
    finally:
        live.vpc.sts[ENI].fault = None
    live.wait_healthy()
    live.assert_alive()


def test_connection_refused_when_an_eni_is_down(live: LiveAgent) -> None:
    live.wait_healthy("a healthy baseline")
    before = live.scrape().total(REQ_FAILURES, endpoint=REGIONAL, reason="connect_refused")
    live.vpc.sts[ENI].stop()
    try:
        s = live.wait(lambda s: _failed(s, ENI, "connect_refused", before), "connect_refused")
        # No connection was made, so no connect (or later) phase is reported for it.
        assert s.find(PHASE, endpoint=REGIONAL, address=ENI, phase="connect") == []
        assert live.wait_rounds(1).find(PHASE, endpoint=REGIONAL, address=ENI, phase="tls") == []
        assert s.finding("STS_CALL_FAILED") >= 1
    finally:
        restart_sts(live.vpc, ENI)
    live.wait_healthy()
    live.assert_alive()


@pytest.mark.parametrize(
    ("kind", "reason", "finding"),
    [
        ("wrong_hostname", "tls_hostname_mismatch", "TLS_HOSTNAME_MISMATCH"),
        ("expired", "tls_error", "STS_CALL_FAILED"),
        ("untrusted", "tls_error", "STS_CALL_FAILED"),
    ],
)
def test_bad_certificate_behind_the_name(
    live: LiveAgent, kind: str, reason: str, finding: str
) -> None:
    address = SPARE[kind]
    live.wait_healthy("a healthy baseline")
    before = live.scrape().total(REQ_FAILURES, endpoint=REGIONAL, address=address, reason=reason)
    live.vpc.dns.set_records(REGIONAL, [address])
    try:
        s = live.wait(lambda s: _failed(s, address, reason, before), f"{reason} at {address}")
        assert s.finding(finding) >= 1
        # The handshake never finished: a connect time, but no TLS or first-byte time.
        assert (s.value(PHASE, endpoint=REGIONAL, address=address, phase="connect") or 0) > 0
        assert s.find(PHASE, endpoint=REGIONAL, address=address, phase="tls") == []
    finally:
        live.vpc.private_dns(True)
    s = live.wait_healthy()
    assert address not in s.label_values(SUCCESS, "address")
    assert s.finding(finding) == 0
    live.assert_alive()
