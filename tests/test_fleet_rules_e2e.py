"""The fleet recording rules on real agents: the join on sts_agent_host_info holds.

Two agents of one simulated VPC, one in each AZ of the endpoint's two ENIs
(the second told its AZ by config), are scraped by a real Prometheus with
the fleet rules loaded.  The unit tests prove the arithmetic on synthetic
series; this proves the rules match the labels the agent really exports.
Then one ENI stops answering in time and its fleet success ratio drops to 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from agent.simulate.demo import ENI_ZONES, REGIONAL, VPCE_REGIONAL, SimulatedVpc, simulated_vpc
from testbed import ROOT
from testbed.agent_proc import agent_env, running_agent, vpc_config, wait_for
from testbed.ports import free_port
from testbed.prometheus import Prometheus, prometheus_scraping

RULES = [ROOT / "deploy" / "prometheus" / "rules" / "sts-agent-fleet.rules.yml"]
AZ_A, AZ_B = sorted(set(ENI_ZONES.values()))


@pytest.fixture
def vpc(tmp_path: Path) -> Iterator[SimulatedVpc]:
    with simulated_vpc(tmp_path / "vpc") as v:
        yield v


def by(prom: Prometheus, expr: str, *labels: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(r["metric"].get(k, "") for k in labels): float(r["value"][1])
        for r in prom.query(expr)
    }


def test_fleet_rules_on_real_agents(vpc: SimulatedVpc, tmp_path: Path) -> None:
    vpc_id = vpc.imds.vpc_id
    with ExitStack() as stack:
        ports = []
        for i, az in enumerate((None, AZ_B)):
            port = free_port()
            extra = {"host__availability_zone": az} if az else {}
            cfg = vpc_config(
                vpc, tmp_path / f"a{i}.toml", port, vpce_dns_names=[VPCE_REGIONAL], **extra
            )
            agent = stack.enter_context(running_agent(cfg, agent_env(vpc), port, tmp=tmp_path))
            agent.wait_ready()
            ports.append(port)
        prom = stack.enter_context(
            prometheus_scraping([f"127.0.0.1:{p}" for p in ports], tmp_path, rules=RULES)
        )
        hosts = wait_for(
            lambda: (
                len(by(prom, "vpc_az:sts_agent_hosts:count", "availability_zone")) == 2
                and by(prom, "vpc_az:sts_agent_hosts:count", "vpc_id", "availability_zone")
            ),
            60,
            "hosts per VPC and AZ",
        )
        assert hosts == {(vpc_id, AZ_A): 1.0, (vpc_id, AZ_B): 1.0}

        ratio = "vpc_az_endpoint_address:sts_agent_eni_probe_success:ratio"
        enis = wait_for(
            lambda: by(prom, ratio, "vpc_id", "availability_zone", "endpoint", "address"),
            60,
            "ENI success ratio",
        )
        assert enis == {(vpc_id, az, REGIONAL, addr): 1.0 for addr, az in ENI_ZONES.items()}
        off = by(prom, "vpc_endpoint:sts_agent_hosts_off_path:ratio", "vpc_id", "endpoint")
        assert off[(vpc_id, REGIONAL)] == 0.0
        paths = by(prom, "vpc_az_endpoint_path:sts_agent_hosts:count", "availability_zone", "path")
        assert paths[(AZ_A, "vpce")] == paths[(AZ_B, "vpce")] == 1.0
        local = by(prom, "vpc_az_endpoint:sts_agent_hosts_without_local_eni:count", "endpoint")
        assert local[(REGIONAL,)] == 0.0  # both AZs have an ENI

        # The ENI in AZ b stops answering within the agents' timeout, for both hosts.
        failing = next(addr for addr, az in ENI_ZONES.items() if az == AZ_B)
        vpc.sts[failing].handshake_delay = 5.0
        wait_for(
            lambda: by(prom, ratio, "address").get((failing,)) == 0.0,
            60,
            "the failing ENI's fleet ratio at 0",
        )
        assert by(prom, ratio, "address")[(next(iter(set(ENI_ZONES) - {failing})),)] == 1.0
