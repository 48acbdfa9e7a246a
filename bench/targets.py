"""The local targets both tools probe: simulated DNS, STS over TLS and IMDS on loopback.

Every STS name maps to a list of loopback addresses; one StsServer listens on
each distinct address, all on one port, so the agent and blackbox_exporter
dial exactly the same sockets and see exactly the same injected delays.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.probes.sts import default_ca_bundle
from agent.simulate.ca import Authority
from agent.simulate.demo import SimulatedVpc, start_sts_servers
from agent.simulate.dns_server import DnsServer
from agent.simulate.imds_server import ImdsServer
from agent.simulate.sts_server import StsServer

REGION = "us-east-2"
VPC_CIDR = "127.10.0.0/16"
DNS_ADDRESS = "127.10.0.2"
REGIONAL = f"sts.{REGION}.amazonaws.com"
GLOBAL = "sts.amazonaws.com"

#: The default agent set-up with three addresses per name: VPC-endpoint ENIs for the
#: regional name, public front doors for the global one.
DEFAULT_LAYOUT: dict[str, tuple[str, ...]] = {
    REGIONAL: ("127.10.138.148", "127.10.139.20", "127.10.140.7"),
    GLOBAL: ("127.20.0.10", "127.20.0.11", "127.20.0.12"),
}


@dataclass
class Targets:
    vpc: SimulatedVpc  # its ca_path is the agent's bundle: botocore's roots + the simulated CA
    names: dict[str, tuple[str, ...]]
    #: The simulated CA alone, for blackbox_exporter: it parses a `ca_file` on every
    #: probe, where in production it would load the system roots once.
    sim_ca: Path

    @property
    def dns(self) -> DnsServer:
        return self.vpc.dns

    @property
    def port(self) -> int:
        return self.vpc.sts_port

    @property
    def resolver(self) -> str:
        return f"{self.vpc.dns.address}:{self.vpc.dns.port}"

    def servers(self) -> list[StsServer]:
        return list(self.vpc.sts.values())

    def set_delays(
        self, *, dns: float = 0.0, handshake: float = 0.0, processing: float = 0.0
    ) -> None:
        self.vpc.dns.delay = dns
        for s in self.servers():
            s.handshake_delay = handshake
            s.processing_delay = processing

    def requests(self) -> int:
        return sum(len(s.requests) for s in self.servers())


@contextlib.contextmanager
def simulated_targets(
    workdir: Path, layout: Mapping[str, Sequence[str]] = DEFAULT_LAYOUT, ttl: int = 30
) -> Iterator[Targets]:
    """Start DNS, IMDS and one StsServer per distinct address in `layout`."""
    workdir.mkdir(parents=True, exist_ok=True)
    ca = Authority.create(workdir)
    cert, key = ca.issue(sorted(layout), name="sts")
    addresses = list(dict.fromkeys(a for addrs in layout.values() for a in addrs))
    sts, port = start_sts_servers(addresses, cert, key)
    dns = DnsServer(DNS_ADDRESS, 0, ttl=ttl).start()
    imds = ImdsServer("127.0.0.1", 0, region=REGION, az=f"{REGION}a", vpc_cidrs=(VPC_CIDR,)).start()
    for name, addrs in layout.items():
        dns.set_records(name, addrs)
    # What a deployed agent trusts by default (botocore's bundle) plus the simulated CA,
    # so the footprint includes the real trust store and not a one-certificate one.
    bundle = workdir / "ca-bundle.pem"
    bundle.write_text(Path(default_ca_bundle()).read_text() + ca.ca_path.read_text())
    try:
        vpc = SimulatedVpc(dns, imds, sts, bundle, port)
        yield Targets(vpc, {name: tuple(addrs) for name, addrs in layout.items()}, ca.ca_path)
    finally:
        for s in sts.values():
            s.stop()
        dns.stop()
        imds.stop()
