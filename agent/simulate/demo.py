"""`sts-agent demo`: the real agent against a simulated VPC on loopback.

The simulation mirrors the article's topology with loopback addresses:
a VPC 127.10.0.0/16 whose Amazon DNS sits at base+2 (127.10.0.2), an STS
interface endpoint with one ENI per AZ (127.10.138.148 in us-east-2a,
127.10.139.20 in us-east-2b, each also under its zonal vpce DNS name), a
"public" STS front door (127.20.0.10, outside every private range), and
IMDSv2 serving the region, the VPC CIDR and instance-profile credentials.
Nothing leaves the machine and no root is needed (Linux routes all of
127/8 to loopback).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import shlex
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.config import FIELDS, Loaded, Settings
from agent.simulate.ca import Authority
from agent.simulate.dns_server import DnsServer
from agent.simulate.imds_server import ImdsServer
from agent.simulate.sts_server import StsServer

REGION = "us-east-2"
VPC_CIDR = "127.10.0.0/16"
DNS_ADDRESS = "127.10.0.2"
ENI_ADDRESSES = ("127.10.138.148", "127.10.139.20")
PUBLIC_GLOBAL = "127.20.0.10"
PUBLIC_REGIONAL = "127.20.0.20"
REGIONAL = f"sts.{REGION}.amazonaws.com"
GLOBAL = "sts.amazonaws.com"
VPCE_ID = "vpce-0a1b2c3d4e5f67890-k3j2h1g0"
VPCE_REGIONAL = f"{VPCE_ID}.sts.{REGION}.vpce.amazonaws.com"
ENI_ZONES = dict(zip(ENI_ADDRESSES, (f"{REGION}a", f"{REGION}b"), strict=True))
SCENARIOS = ("healthy", "private-dns-off", "global-sdk")


@dataclass
class SimulatedVpc:
    dns: DnsServer
    imds: ImdsServer
    sts: dict[str, StsServer]
    ca_path: Path
    sts_port: int

    def private_dns(self, enabled: bool) -> None:
        """Flip the endpoint's private DNS, as the console checkbox would."""
        self.dns.set_records(REGIONAL, ENI_ADDRESSES if enabled else (PUBLIC_REGIONAL,))

    def settings(self, *, interval: float, listen: str) -> Settings:
        return Settings(
            interval=interval,
            timeout=min(2.0, interval / 2),
            port=self.sts_port,
            ca_bundle=str(self.ca_path),
            resolvers=(f"{DNS_ADDRESS}:{self.dns.port}",),
            expect=(("regional", "vpce"), ("global", "public")),
            imds_address=f"127.0.0.1:{self.imds.port}",
            discovery_interval=60.0,
            web_listen_address=listen,
            vpce_dns_names=(VPCE_REGIONAL,),
        )

    def zonal_dns(self, zones: dict[str, str]) -> None:
        """Publish the endpoint's regional and zonal vpce names for ENI -> AZ."""
        self.dns.set_records(VPCE_REGIONAL, tuple(zones))
        for address, az in zones.items():
            self.dns.set_records(f"{VPCE_ID}-{az}.sts.{REGION}.vpce.amazonaws.com", (address,))


def start_sts_servers(
    addresses: Sequence[str], cert: Path, key: Path
) -> tuple[dict[str, StsServer], int]:
    """One server per address, all on one port (the agent dials every address on one port)."""
    for _ in range(20):
        servers: dict[str, StsServer] = {}
        try:
            first = StsServer(addresses[0], 0, cert, key).start()
            servers[addresses[0]] = first
            for addr in addresses[1:]:
                servers[addr] = StsServer(addr, first.port, cert, key).start()
            return servers, first.port
        except OSError as e:
            for s in servers.values():
                s.stop()
            if e.errno != errno.EADDRINUSE:
                raise
    raise OSError(f"no port free on all of {', '.join(addresses)}")


@contextlib.contextmanager
def simulated_vpc(workdir: Path) -> Iterator[SimulatedVpc]:
    ca = Authority.create(workdir)
    cert, key = ca.issue([REGIONAL, GLOBAL], name="sts")
    sts, port = start_sts_servers((*ENI_ADDRESSES, PUBLIC_GLOBAL, PUBLIC_REGIONAL), cert, key)
    dns = DnsServer(DNS_ADDRESS, 0, ttl=30).start()
    imds = ImdsServer("127.0.0.1", 0, region=REGION, az=f"{REGION}a", vpc_cidrs=(VPC_CIDR,)).start()
    vpc = SimulatedVpc(dns, imds, sts, ca.ca_path, port)
    vpc.private_dns(True)
    vpc.zonal_dns(ENI_ZONES)
    dns.set_records(GLOBAL, (PUBLIC_GLOBAL,))
    try:
        yield vpc
    finally:
        for s in sts.values():
            s.stop()
        dns.stop()
        imds.stop()


def _demo_environment(imds: ImdsServer, scenario: str) -> None:
    """Make this process look like an EC2 instance with an instance profile.

    Every AWS_* variable of the caller is removed first, so the demo can never
    pick up (let alone sign with) the user's real credentials.
    """
    for name in [n for n in os.environ if n.startswith(("AWS_", "STS_AGENT_"))]:
        del os.environ[name]
    os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = imds.url
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    if scenario == "global-sdk":
        os.environ["AWS_REGION"] = REGION  # botocore ignores it: the classic global trap
    else:
        os.environ["AWS_DEFAULT_REGION"] = REGION


#: Settings only the daemon reads, left out of the printed `check` command.
_SERVE_ONLY = frozenset({"interval", "discovery_interval", "web_listen_address"})


def _program() -> list[str]:
    """This installation's `sts-agent`: the script beside the interpreter, or else
    `python -m agent` told where this package lives (a checkout run without installing)."""
    script = Path(sys.executable).with_name("sts-agent")
    if os.access(script, os.X_OK):
        return [shlex.quote(str(script))]
    root = Path(__file__).resolve().parents[2]
    return [f"PYTHONPATH={shlex.quote(str(root))}", shlex.quote(sys.executable), "-m", "agent"]


def check_command(vpc: SimulatedVpc, settings: Settings, scenario: str) -> str:
    """The `sts-agent check` a user can run against this simulated VPC from another shell.

    `env -i` keeps the caller's own AWS variables (and credentials) out, as the demo does.
    The program is named by its path, since the demo's installer does not put it on PATH.
    """
    env = {
        "PATH": "$PATH",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": vpc.imds.url,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_REGION" if scenario == "global-sdk" else "AWS_DEFAULT_REGION": REGION,
    }
    words = [
        "env",
        "-i",
        *(f'{k}="{v}"' if v == "$PATH" else f"{k}={shlex.quote(v)}" for k, v in env.items()),
        *_program(),
        "check",
    ]
    default = Settings()
    for f in FIELDS:
        value = getattr(settings, f.attr)
        if f.attr in _SERVE_ONLY or value == getattr(default, f.attr):
            continue
        if f.attr == "expect":
            text = ",".join(f"{k}={v}" for k, v in value)
        elif isinstance(value, tuple):
            text = ",".join(value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        words += [f.flag, shlex.quote(text)]
    return " ".join(words)


def run_demo(args: argparse.Namespace) -> int:
    from agent import logs
    from agent.check import emit
    from agent.daemon import Agent, run_until_stopped

    scenario = getattr(args, "scenario", "healthy")
    logs.setup("plain", "warning")
    with (
        tempfile.TemporaryDirectory(prefix="sts-agent-demo-") as tmp,
        simulated_vpc(Path(tmp)) as vpc,
    ):
        _demo_environment(vpc.imds, scenario)
        if scenario == "private-dns-off":
            vpc.private_dns(False)
        settings = vpc.settings(interval=args.interval, listen=args.listen)
        out = sys.stderr if args.json else sys.stdout
        enis = ", ".join(f"{a}:{vpc.sts_port} ({ENI_ZONES[a]})" for a in ENI_ADDRESSES)
        print(
            f"Simulated VPC {VPC_CIDR} in {REGION} (scenario: {scenario}):\n"
            f"  Amazon DNS        {DNS_ADDRESS}:{vpc.dns.port}\n"
            f"  STS endpoint ENIs {enis}\n"
            f"  public STS        {PUBLIC_GLOBAL}:{vpc.sts_port} ({GLOBAL}), "
            f"{PUBLIC_REGIONAL}:{vpc.sts_port} ({REGIONAL} without private DNS)\n"
            f"  IMDSv2            {vpc.imds.url}\n"
            f"  CA certificate    {vpc.ca_path}\n",
            file=out,
        )
        try:
            agent = Agent(settings)
        except Exception as e:
            print(f"sts-agent demo: cannot start: {e}", file=sys.stderr)
            return 2
        if not args.once:
            try:  # before the round, so a taken or foreign address fails at once
                agent.listen()
            except Exception as e:
                print(f"sts-agent demo: cannot serve: {e}", file=sys.stderr)
                return 2
        report = agent.scheduler.run_once()
        if args.once:
            return emit(report, as_json=args.json)
        emit(report, as_json=False, out=out)
        agent.start()
        print(
            f"\nServing the live agent: {agent.http.url}/ (status page), "
            f"{agent.http.url}/metrics\n"
            f"The same check from another shell, while this runs:\n"
            f"  {check_command(vpc, settings, scenario)}\n"
            "Ctrl-C to stop.",
            file=out,
        )
        return run_until_stopped(agent, lambda: Loaded(settings))
