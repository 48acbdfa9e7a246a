"""IMDS and credential faults against a running `sts-agent serve`.

The daemon rediscovers every `discovery_interval` (1 s here), so an IMDS fault
shows within a round or two and clears as fast.  Credentials come from botocore's
own provider chain, unchanged: the simulated IMDS for instance profiles, and a
loopback container-credentials endpoint where a short expiry must be refreshed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from agent.simulate.demo import ENI_ADDRESSES, REGIONAL, SimulatedVpc
from testbed.agent_proc import agent_env
from tests.support.faults import (
    PHASE,
    REQ_FAILURES,
    SUCCESS,
    ContainerCredentials,
    CountingImds,
    LiveAgent,
    all_enis_answer,
    live_agent,
)
from tests.support.phases import PHASES

RESOLVER_INFO = "sts_agent_resolver_info"
IMDS_FAST: dict[str, Any] = {"discovery_interval": 1, "imds__timeout": 0.5}


def _credentials_from(tmp_path: Path, **provider: str) -> AbstractContextManager[LiveAgent]:
    """A live agent whose credentials come from a provider the test runs (`provider` env)."""
    return live_agent(tmp_path, env=lambda vpc: agent_env(vpc, **provider))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveAgent]:
    with live_agent(tmp_path_factory.mktemp("imds"), **IMDS_FAST) as la:
        la.wait_healthy("a healthy start")
        yield la


@pytest.mark.parametrize(
    ("fault", "available", "status_text"),
    [
        ("timeout", 0.0, "IMDS unavailable: timeout"),
        ("unauthorized", 0.0, "IMDS unavailable: unauthorized"),
        ("token_forbidden", 0.0, "IMDS unavailable: forbidden"),
        ("garbage_cidrs", 1.0, "IMDS answered without usable VPC CIDRs"),
    ],
)
def test_imds_fault_is_named_survived_and_recovered(
    live: LiveAgent, fault: str, available: float, status_text: str
) -> None:
    live.wait_healthy("a healthy baseline")
    live.vpc.imds.fault = fault
    try:
        s = live.wait(
            lambda s: (
                s.value("sts_agent_imds_available") == available
                and s.finding("IMDS_UNREACHABLE") == 1
            ),
            f"IMDS {fault} in imds_available and findings",
        )
        # The VPC facts IMDS last reported are kept, so a passing IMDS failure does not
        # reclassify the endpoint's addresses or the VPC resolver (CIDR base + 2).
        s = live.wait_rounds(2)
        assert s.path(REGIONAL) == {"vpce"} and all_enis_answer(s)
        assert s.finding("PRIVATE_DNS_NOT_RESOLVING") == 0
        assert s.value(RESOLVER_INFO, resolver=live.resolver, amazon_provided="true") == 1
        assert s.value("sts_agent_imds_available") == available
        assert s.finding("IMDS_UNREACHABLE") == 1
        status, page = live.agent.get("/")
        assert status == 200 and status_text in page, page[:2000]
    finally:
        live.vpc.imds.fault = None
    s = live.wait(
        lambda s: (
            s.value("sts_agent_imds_available") == 1
            and s.finding("IMDS_UNREACHABLE") == 0
            and live.healthy(s)
            and s.value(RESOLVER_INFO, resolver=live.resolver, amazon_provided="true") == 1
        ),
        "IMDS back and the vpce path restored",
    )
    live.assert_alive()


def test_missing_credentials_still_measure_the_path_and_recover(tmp_path: Path) -> None:
    """No instance profile: calls go out unsigned, the transport is still timed."""

    def no_role(vpc: SimulatedVpc) -> None:
        vpc.imds.role = ""  # EC2 answers 404 for the credentials listing then

    with live_agent(tmp_path, before_start=no_role) as live:
        s = live.wait(
            lambda s: (
                all(
                    s.total(
                        REQ_FAILURES, endpoint=REGIONAL, address=a, reason="credentials_missing"
                    )
                    > 0
                    for a in ENI_ADDRESSES
                )
                and s.finding("CREDENTIALS_MISSING") >= 1
            ),
            "credentials_missing at every ENI",
        )
        for a in ENI_ADDRESSES:
            assert s.value(SUCCESS, endpoint=REGIONAL, address=a) == 0
            for phase in PHASES:
                assert (s.value(PHASE, endpoint=REGIONAL, address=a, phase=phase) or 0) > 0
        reasons = {x.labels["reason"] for x in s.find(REQ_FAILURES, endpoint=REGIONAL) if x.value}
        assert reasons == {"credentials_missing"}
        assert s.path(REGIONAL) == {"vpce"}  # the path verdict does not need credentials
        assert all(
            not r.get("had_authorization")
            for srv in live.vpc.sts.values()
            for r in list(srv.requests)
        )

        live.vpc.imds.role = "demo-instance-role"
        # The agent asks the chain again at most every 30 s, so give it a generous minute.
        s = live.wait(live.healthy, "signed calls once the role is attached", timeout=75)
        assert s.finding("CREDENTIALS_MISSING") == 0
        live.assert_alive()


def test_instance_profile_credentials_expiring_mid_run(tmp_path: Path) -> None:
    """IMDS says the credentials expire in seconds: probes must go on across that moment."""
    creds = CountingImds("127.0.0.1", 0)
    creds.start()
    creds.credentials_expiration = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=6)
    try:
        with _credentials_from(tmp_path, AWS_EC2_METADATA_SERVICE_ENDPOINT=creds.url) as live:
            live.wait_healthy("signed calls with the short-lived credentials")
            assert creds.credential_fetches >= 1
            rounds = 0
            while dt.datetime.now(dt.UTC) < creds.credentials_expiration + dt.timedelta(seconds=2):
                s = live.wait_rounds(1)
                rounds += 1
                assert s.total(REQ_FAILURES, reason="credentials_missing") == 0
                assert s.total(SUCCESS, endpoint=REGIONAL) >= 1, "no signed call succeeded"
            assert rounds >= 2
            s = live.wait_healthy("every ENI answering after the expiry")
            assert s.total(REQ_FAILURES, endpoint=REGIONAL) == 0
    finally:
        creds.stop()


def test_container_credentials_refresh_expire_and_recover(tmp_path: Path) -> None:
    """Short-lived container credentials: refreshed each round; stale ones are named."""
    server = ContainerCredentials().start()
    server.rotate(seconds=10)  # inside botocore's refresh window from the first fetch
    try:
        with _credentials_from(tmp_path, AWS_CONTAINER_CREDENTIALS_FULL_URI=server.url) as live:
            live.wait_healthy("signed calls with container credentials")
            # Inside the refresh window botocore fetches again on every use.
            fetched = server.fetches
            s = live.wait_rounds(2)
            assert live.healthy(s) and server.fetches > fetched
            # The endpoint keeps serving the same credentials after they expire: the agent
            # must name that rather than sign with stale ones or stop.
            s = live.wait(
                lambda s: (
                    s.total(REQ_FAILURES, endpoint=REGIONAL, reason="credentials_missing") > 0
                    and s.finding("CREDENTIALS_MISSING") >= 1
                ),
                "credentials_missing once the served credentials are stale",
            )
            assert s.value(SUCCESS, endpoint=REGIONAL, address=ENI_ADDRESSES[0]) == 0
            # Once from the credential chain (the change log quotes it in the finding too).
            stale = "credentials: credential refresh failed: RuntimeError (profile default)"
            assert live.agent.log().count(stale) == 1, live.agent.log()[-3000:]
            server.rotate(seconds=3600)
            s = live.wait(live.healthy, "signed calls after rotation")
            assert s.finding("CREDENTIALS_MISSING") == 0
            live.assert_alive()
    finally:
        server.stop()
