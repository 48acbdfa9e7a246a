"""An AZ too long for a DNS label (IMDS and host.availability_zone accept up to 64
characters) gets no zonal name, instead of making every discovery raise."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from agent.config import ConfigError, build
from agent.discovery.zones import eni_zones
from agent.results import Resolver
from agent.runner import discover
from agent.simulate.demo import ENI_ZONES, VPCE_REGIONAL, simulated_vpc
from agent.sts_hosts import zonal_names

LONG_AZ = "us-east-2-" + "x" * 50  # passes the config's [a-z0-9-]{1,64}


def test_a_host_az_too_long_for_a_label_is_left_out() -> None:
    names = zonal_names(VPCE_REGIONAL, LONG_AZ)
    assert LONG_AZ not in names and "us-east-2a" in names
    assert all(len(n.split(".")[0]) <= 63 for n in names.values())


def test_discovery_with_such_an_az_still_learns_the_enis_zones(tmp_path: Path) -> None:
    env = {"AWS_DEFAULT_REGION": "us-east-2", "AWS_CONFIG_FILE": "/dev/null"}
    with simulated_vpc(tmp_path) as vpc:
        s = vpc.settings(interval=5, listen="127.0.0.1:0")
        s = dataclasses.replace(s, credentials="none", host_availability_zone=LONG_AZ)
        disc = discover(s, env)
    assert disc.imds.availability_zone == LONG_AZ
    assert disc.eni_zones == ENI_ZONES


LONG_REGION_VPCE = "vpce-0123456789abcdef0-abcdefgh.sts.us-" + "e" * 40 + "-1.vpce.amazonaws.com"


def test_a_vpce_name_whose_zonal_names_cannot_exist_is_refused_or_skipped() -> None:
    with pytest.raises(ConfigError, match=r"vpce_dns_names.*too long"):
        build(None, {"STS_AGENT_VPCE_DNS_NAMES": LONG_REGION_VPCE})
    # endpoints.extra is not checked for this: discovery asks nothing and learns nothing
    dead = Resolver("127.0.0.1", 9, amazon_provided=False, source="config")
    assert eni_zones([LONG_REGION_VPCE], (dead,), None, 0.2) == ({}, ())
