"""ENI Availability Zones from zonal vpce DNS names, against real DNS and IMDSv2 on loopback.

The simulated VPC publishes the endpoint's regional vpce name and one zonal
name per ENI on its dnspython server; IMDSv2 (tokens enforced) says which AZ
the host is in.  Rounds run in-process and feed the real Metrics registry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import ConfigError, Settings, build
from agent.discovery import Discovery, discover
from agent.discovery.imds import discover as imds_discover
from agent.results import Report
from agent.runner import Prober, run_round
from agent.simulate.demo import (
    ENI_ADDRESSES,
    ENI_ZONES,
    GLOBAL,
    REGIONAL,
    VPCE_REGIONAL,
    SimulatedVpc,
    simulated_vpc,
)
from agent.sts_hosts import zonal_names
from agent.surfaces.metrics import Metrics
from agent.surfaces.report_json import to_json
from tests.support.faults import Scrape

ENV = {"AWS_DEFAULT_REGION": "us-east-2", "AWS_CONFIG_FILE": "/dev/null"}
HOST_AZ = "us-east-2a"  # the simulated IMDS's placement


@pytest.fixture(scope="module")
def vpc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatedVpc]:
    with simulated_vpc(tmp_path_factory.mktemp("zones")) as v:
        yield v


def _settings(vpc: SimulatedVpc, **kw: Any) -> Settings:
    s = vpc.settings(interval=5, listen="127.0.0.1:0")
    return dataclasses.replace(s, credentials="none", **kw)


def _round(settings: Settings) -> tuple[Report, Discovery, Scrape]:
    disc = discover(settings, ENV)
    report = run_round(settings, disc, Prober(settings))
    metrics = Metrics()
    metrics.observe(report)
    return report, disc, Scrape.parse(metrics.registry.exposition().decode())


def test_zonal_names_are_built_from_the_regional_one_host_az_first() -> None:
    names = zonal_names(VPCE_REGIONAL, "us-east-2c")
    assert list(names)[:2] == ["us-east-2c", "us-east-2a"]
    assert names["us-east-2b"] == VPCE_REGIONAL.replace("-k3j2h1g0.", "-k3j2h1g0-us-east-2b.")
    with pytest.raises(ValueError, match="vpce_dns_names"):
        zonal_names(names["us-east-2b"], None)  # a zonal name is not a regional one


def test_each_eni_is_labelled_with_the_az_its_zonal_name_resolves_to(vpc: SimulatedVpc) -> None:
    report, disc, s = _round(_settings(vpc))
    assert disc.eni_zones == ENI_ZONES
    assert [sorted(g) for g in disc.vpce_enis] == [sorted(ENI_ADDRESSES)]
    for address, az in ENI_ZONES.items():
        info = s.find("sts_agent_endpoint_address_info", endpoint=REGIONAL, address=address)
        assert [x.labels["availability_zone"] for x in info] == [az]
    # the global name is public: one aggregate address, no AZ
    (public,) = s.find("sts_agent_endpoint_address_info", endpoint=GLOBAL)
    assert (public.labels["address"], public.labels["availability_zone"]) == ("public", "")
    assert s.value("sts_agent_endpoint_local_az_eni", endpoint=REGIONAL) == 1
    assert s.value("sts_agent_endpoint_cross_az_ratio", endpoint=REGIONAL) == 0.5
    assert not s.find("sts_agent_endpoint_local_az_eni", endpoint=GLOBAL)
    assert "ENDPOINT_NO_LOCAL_AZ_ENI" not in {f.code for f in report.findings}
    (host,) = s.find("sts_agent_host_info")
    assert host.labels == {
        "region": "us-east-2",
        "availability_zone": HOST_AZ,
        "vpc_id": vpc.imds.vpc_id,
        "account_id": vpc.imds.account_id,
    }
    doc = to_json(report)
    regional = next(e for e in doc["endpoints"] if e["hostname"] == REGIONAL)
    assert {a["address"]: a["availability_zone"] for a in regional["addresses"]} == ENI_ZONES
    assert {p["address"]: p["availability_zone"] for p in regional["probes"]} == ENI_ZONES
    assert (doc["imds"]["availability_zone"], doc["imds"]["account_id"]) == (
        HOST_AZ,
        vpc.imds.account_id,
    )


def test_a_host_in_an_az_without_eni_gets_the_finding(vpc: SimulatedVpc) -> None:
    vpc.imds.az = "us-east-2c"
    try:
        report, disc, s = _round(_settings(vpc))
    finally:
        vpc.imds.az = HOST_AZ
    assert disc.eni_zones == ENI_ZONES  # zonal names of 2c do not resolve: nothing guessed
    # the host's AZ ID is known but zonal names carry none: the names are compared
    assert report.imds.availability_zone_id == vpc.imds.az_id and report.eni_zone_ids == {}
    assert s.value("sts_agent_endpoint_local_az_eni", endpoint=REGIONAL) == 0
    assert s.value("sts_agent_endpoint_cross_az_ratio", endpoint=REGIONAL) == 1
    (f,) = [f for f in report.findings if f.code == "ENDPOINT_NO_LOCAL_AZ_ENI"]
    assert f.severity == "warning" and f.endpoint == REGIONAL
    assert "us-east-2a, us-east-2b" in f.message and f.advice
    assert f"this host's AZ us-east-2c ({vpc.imds.az_id})" in f.message
    assert s.finding("ENDPOINT_NO_LOCAL_AZ_ENI") == 1


def test_a_resolver_that_hands_out_one_eni_reports_its_share_across_azs(
    vpc: SimulatedVpc,
) -> None:
    far = ENI_ADDRESSES[1]  # us-east-2b, the host is in us-east-2a
    vpc.dns.set_records(REGIONAL, (far,))
    try:
        report, _, s = _round(_settings(vpc, max_addresses_per_endpoint=1))
    finally:
        vpc.private_dns(True)
    assert s.value("sts_agent_endpoint_cross_az_ratio", endpoint=REGIONAL) == 1
    # the endpoint does have an ENI here (its zonal name says so); the resolver skips it
    assert s.value("sts_agent_endpoint_local_az_eni", endpoint=REGIONAL) == 1
    assert "ENDPOINT_NO_LOCAL_AZ_ENI" not in {f.code for f in report.findings}


def test_without_zonal_names_no_az_is_guessed(vpc: SimulatedVpc) -> None:
    report, disc, s = _round(_settings(vpc, vpce_dns_names=()))
    assert disc.eni_zones == {}
    assert {x.labels["availability_zone"] for x in s.find("sts_agent_endpoint_address_info")} == {
        ""
    }
    assert not s.find("sts_agent_endpoint_local_az_eni")
    assert not s.find("sts_agent_endpoint_cross_az_ratio")
    assert "ENDPOINT_NO_LOCAL_AZ_ENI" not in {f.code for f in report.findings}


def test_configured_identity_wins_over_imds(vpc: SimulatedVpc) -> None:
    _, _, s = _round(
        _settings(vpc, host_account_id="210987654321", host_vpc_id="vpc-0fedcba987654321f")
    )
    (host,) = s.find("sts_agent_host_info")
    assert (host.labels["account_id"], host.labels["vpc_id"]) == (
        "210987654321",
        "vpc-0fedcba987654321f",
    )


def test_imds_account_id_needs_a_token_and_comes_from_the_identity_document(
    vpc: SimulatedVpc,
) -> None:
    info = imds_discover(f"127.0.0.1:{vpc.imds.port}", 3.0, {})
    assert info.account_id == vpc.imds.account_id and info.reason is None
    import urllib.error
    import urllib.request

    url = f"http://127.0.0.1:{vpc.imds.port}/latest/dynamic/instance-identity/document"
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url, timeout=3)
    assert e.value.code == 401


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("vpce_dns_names", "sts.us-east-2.amazonaws.com", "regional DNS name"),
        ("host.account_id", "12345", "123456789012"),
        ("metrics.histogram_phases", "total,wire", "must be one of"),
    ],
)
def test_bad_settings_name_the_field(tmp_path: Path, key: str, value: str, needle: str) -> None:
    env = {"STS_AGENT_" + key.replace(".", "_").upper(): value}
    with pytest.raises(ConfigError, match=needle) as e:
        build(None, env)
    assert key in str(e.value)


def test_check_text_shows_each_enis_az(vpc: SimulatedVpc) -> None:
    from agent.surfaces.report_text import render

    report, _, _ = _round(_settings(vpc))
    text = render(report)
    for address, az in ENI_ZONES.items():
        assert any(address in line and line.rstrip().endswith(az) for line in text.splitlines())


def test_az_ids_decide_where_both_sides_have_one_and_names_elsewhere() -> None:
    from agent.discovery.identity import host_overrides
    from agent.results import ImdsInfo
    from agent.verdicts.zones import cross_az_ratio, local_az_eni
    from tests.support.minimal_rounds import AMAZON_DNS, endpoint, lookup

    near, far = ENI_ADDRESSES[0], ENI_ADDRESSES[1]
    ep = endpoint(lookups=(lookup(AMAZON_DNS, REGIONAL, near, far),), expected="private")
    (answers,) = ep.verdicts
    # a hub account names the host's physical AZ (use2-az3) "us-east-2b"
    zones = {near: "us-east-2a", far: "us-east-2b"}
    ids = {near: "use2-az1", far: "use2-az3"}
    assert local_az_eni(ep, zones, "us-east-2a", (), ids, "use2-az3") is True
    assert cross_az_ratio(answers.addresses, zones, "us-east-2a", ids, "use2-az3") == 0.5
    assert local_az_eni(ep, zones, "us-east-2c", (), ids, "use2-az2") is False
    # one side without an ID: the names compare
    assert local_az_eni(ep, zones, "us-east-2c", (), ids, None) is False
    assert local_az_eni(ep, zones, "us-east-2a", (), {}, "use2-az2") is True
    assert (
        cross_az_ratio(answers.addresses, zones, "us-east-2c", {far: "use2-az2"}, "use2-az2") == 0.5
    )
    # a configured AZ other than the one IMDS named: IMDS's ID is not that AZ's
    imds = ImdsInfo(True, availability_zone="us-east-2a", availability_zone_id="use2-az1")
    moved = host_overrides(imds, Settings(host_availability_zone="us-east-2c"))
    assert (moved.availability_zone, moved.availability_zone_id) == ("us-east-2c", None)
    same = host_overrides(imds, Settings(host_availability_zone="us-east-2a"))
    assert same.availability_zone_id == "use2-az1"
