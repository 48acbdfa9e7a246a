"""An endpoint of another region (reached over peering or a transit gateway) has no ENI
in this host's AZ by nature: its AZs are not comparable with the host's, so it gets no
ENDPOINT_NO_LOCAL_AZ_ENI (whose advice, a subnet in this AZ, is impossible there) and no
local-AZ or cross-AZ gauges, while this region's endpoint is judged as before.

Real DNS (the simulated VPC's dnspython server) and IMDSv2 on loopback, in-process rounds
feeding the real Metrics registry.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from agent.discovery import discover
from agent.runner import Prober, run_round
from agent.simulate.demo import VPCE_REGIONAL, simulated_vpc
from agent.surfaces.metrics import Metrics
from tests.support.faults import Scrape

ENV = {"AWS_DEFAULT_REGION": "us-east-2", "AWS_CONFIG_FILE": "/dev/null"}
FAR_REGION = "eu-west-1"
FAR_REGIONAL = f"sts.{FAR_REGION}.amazonaws.com"
FAR_VPCE_ID = "vpce-0fedcba9876543210-abcd1234"
FAR_VPCE = f"{FAR_VPCE_ID}.sts.{FAR_REGION}.vpce.amazonaws.com"
FAR_ENIS = {"127.10.150.11": f"{FAR_REGION}a", "127.10.151.12": f"{FAR_REGION}b"}


def test_an_endpoint_in_another_region_is_not_judged_against_this_hosts_az(
    tmp_path: Path,
) -> None:
    with simulated_vpc(tmp_path) as vpc:
        vpc.dns.set_records(FAR_REGIONAL, tuple(FAR_ENIS))
        vpc.dns.set_records(FAR_VPCE, tuple(FAR_ENIS))
        for address, az in FAR_ENIS.items():
            vpc.dns.set_records(
                f"{FAR_VPCE_ID}-{az}.sts.{FAR_REGION}.vpce.amazonaws.com", (address,)
            )
        s = vpc.settings(interval=5, listen="127.0.0.1:0")
        s = dataclasses.replace(
            s,
            credentials="none",
            timeout=1.0,
            regions=("us-east-2", FAR_REGION),
            endpoints_global=False,
            vpce_dns_names=(VPCE_REGIONAL, FAR_VPCE),
        )
        disc = discover(s, ENV)
        report = run_round(s, disc, Prober(s))
    assert {a: disc.eni_zones[a] for a in FAR_ENIS} == FAR_ENIS  # the AZs are learned
    metrics = Metrics()
    metrics.observe(report)
    scrape = Scrape.parse(metrics.registry.exposition().decode())
    no_local = [f for f in report.findings if f.code == "ENDPOINT_NO_LOCAL_AZ_ENI"]
    assert no_local == []
    assert not scrape.find("sts_agent_endpoint_local_az_eni", endpoint=FAR_REGIONAL)
    assert not scrape.find("sts_agent_endpoint_cross_az_ratio", endpoint=FAR_REGIONAL)
    # this region's endpoint still has its ENI in the host's AZ (us-east-2a)
    assert (
        scrape.value("sts_agent_endpoint_local_az_eni", endpoint="sts.us-east-2.amazonaws.com") == 1
    )
    # the far ENIs keep their AZ as information
    infos = scrape.find("sts_agent_endpoint_address_info", endpoint=FAR_REGIONAL)
    assert {x.labels["address"]: x.labels["availability_zone"] for x in infos} == FAR_ENIS
