"""The article's VPC rebuilt in network namespaces, with the installed agent on the instance.

Nothing here is pointed at test doubles by configuration: the agent finds its region
and VPC CIDR through IMDSv2 at 169.254.169.254, its resolver through the namespace's
resolv.conf, and its credentials through botocore's instance-profile provider. The
only test-specific settings are the CA that signed the STS certificates, where to
listen, how often to probe and what path to expect. Then private DNS is turned off
and the agent must notice that STS traffic now leaves the VPC.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.config import DEFAULT_PORT
from agent.simulate.imds_server import DEFAULT_CREDENTIALS
from testbed.agent_proc import wait_for
from testbed.procs import stop_process
from testbed.require import require_binary, require_root
from tests.support.netns import (
    DNS_IP,
    ENI_IP,
    GLOBAL,
    IMDS_IP,
    NETNS_ETC,
    PUBLIC_IP,
    REGION,
    REGIONAL,
    VPC_CIDR,
    NamespaceServer,
    Topology,
    agent_binary,
    fetch_in,
    instance_env,
    ip,
    namespaces,
    topology,
)
from tests.support.phases import JSON_ROUNDING, PHASES, assert_phases_add_up

pytestmark = [pytest.mark.root, pytest.mark.slow]

MOTO_ACCOUNT = "123456789012"
MOTO_ARN = f"arn:aws:sts::{MOTO_ACCOUNT}:user/moto"
METRICS_URL = f"http://127.0.0.1:{DEFAULT_PORT}/metrics"

Sample = tuple[str, dict[str, str], float]


def _samples(text: str) -> list[Sample]:
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def _value(samples: list[Sample], name: str, **labels: str) -> float | None:
    """The one sample of `name` whose labels include `labels`, or None when there is none."""
    found = [v for n, lb, v in samples if n == name and labels.items() <= lb.items()]
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} series"
    return found[0] if found else None


def _host_links() -> set[str]:
    return {line.split()[0] for line in ip("-br", "link").splitlines() if line.strip()}


def _write_config(path: Path, ca_bundle: Path) -> Path:
    # timeout must stay below the interval; everything else is discovered.
    path.write_text(
        f'ca_bundle = "{ca_bundle}"\n'
        "interval = 2\n"
        "timeout = 1.5\n"
        "[web]\n"
        f'listen_address = "127.0.0.1:{DEFAULT_PORT}"\n'
        "[expect]\n"
        'regional = "vpce"\n'
    )
    return path


@contextlib.contextmanager
def _servers(
    topo: Topology, workdir: Path, dnsmasq: str
) -> Iterator[tuple[NamespaceServer, NamespaceServer]]:
    """The VPC's services and the public STS, started side by side."""
    hostnames = [REGIONAL, GLOBAL]
    vpc = NamespaceServer(
        topo,
        topo.vpc,
        {
            "imds": {"address": IMDS_IP, "port": 80, "region": REGION, "vpc_cidrs": [VPC_CIDR]},
            "dns": {
                "address": DNS_IP,
                "records": {REGIONAL: [ENI_IP], GLOBAL: [PUBLIC_IP]},
                "binary": dnsmasq,
            },
            "sts": {"address": ENI_IP, "port": 443, "hostnames": hostnames},
        },
        workdir,
    )
    public = NamespaceServer(
        topo,
        topo.public,
        {"sts": {"address": PUBLIC_IP, "port": 443, "hostnames": hostnames}},
        workdir,
    )
    try:
        vpc.wait_ready(60)
        public.wait_ready(60)
        yield vpc, public
    finally:
        vpc.stop()
        public.stop()


def _ca_bundle(path: Path, *servers: NamespaceServer) -> Path:
    """Each STS has its own throwaway CA; one bundle trusts both, like a host's store would."""
    pems = dict.fromkeys(Path(s.info["ca_path"]).read_text() for s in servers)
    path.write_text("".join(pems))
    return path


@contextlib.contextmanager
def _agent(topo: Topology, binary: Path, config: Path, log: Path) -> Iterator[None]:
    argv = topo.exec_argv(topo.instance, [str(binary), "serve", "--config", str(config)])
    with open(log, "w") as fh:
        proc = subprocess.Popen(argv, env=instance_env(), stdout=fh, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        stop_process(proc)


def _scrape(topo: Topology) -> list[Sample]:
    status, body = fetch_in(topo, topo.instance, METRICS_URL)
    assert status == 200, body
    return _samples(body)


def _wait_metrics(
    topo: Topology, log: Path, what: str, cond: Callable[[list[Sample]], bool]
) -> list[Sample]:
    """Scrape until `cond` holds; on time-out say what the agent last exported and logged."""
    last: list[Sample] = []

    def ready() -> bool:
        nonlocal last
        last = _scrape(topo)
        return cond(last)

    try:
        wait_for(ready, 30, what)
    except AssertionError:
        keys = ("sts_agent_endpoint_path", "sts_agent_probe_success", "sts_agent_findings")
        seen = [f"{n}{lb}={v}" for n, lb, v in last if n in keys and v]
        tail = log.read_text(errors="replace").splitlines()[-10:]
        raise AssertionError(f"timed out waiting for {what}: {seen}; agent log: {tail}") from None
    return last


def _check_json(topo: Topology, binary: Path, config: Path) -> dict[str, Any]:
    argv = [str(binary), "check", "--json", "--config", str(config)]
    out = subprocess.run(
        topo.exec_argv(topo.instance, argv),
        env=instance_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode in (0, 1), out.stderr
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def _assert_private_path(topo: Topology, binary: Path, config: Path, log: Path) -> None:
    def vpce_reached(s: list[Sample]) -> bool:
        path = _value(s, "sts_agent_endpoint_path", endpoint=REGIONAL, path="vpce")
        ok = _value(s, "sts_agent_probe_success", endpoint=REGIONAL, address=ENI_IP)
        return path == 1 and ok == 1

    s = _wait_metrics(topo, log, "the vpce path with a successful probe", vpce_reached)
    assert (
        _value(s, "sts_agent_endpoint_path", endpoint=REGIONAL, resolver=DNS_IP, path="vpce") == 1
    )
    assert _value(s, "sts_agent_endpoint_expectation_met", endpoint=REGIONAL) == 1
    assert _value(s, "sts_agent_imds_available") == 1
    assert _value(s, "sts_agent_resolver_info", resolver=DNS_IP, amazon_provided="true") == 1
    klass = _value(s, "sts_agent_endpoint_address_info", address=ENI_IP, **{"class": "vpce"})
    assert klass == 1
    phases = {
        lb["phase"]: v
        for n, lb, v in s
        if n == "sts_agent_request_phase_seconds" and lb.get("address") == ENI_IP
    }
    assert set(phases) == set(PHASES) and all(v >= 0 for v in phases.values()), phases
    assert _value(s, "sts_agent_findings", code="PRIVATE_DNS_NOT_RESOLVING") is None

    doc = _check_json(topo, binary, config)
    assert (doc["region"], doc["region_source"]) == (REGION, "imds")
    assert doc["vpc_cidrs"] == [VPC_CIDR]
    (ep,) = [e for e in doc["endpoints"] if e["hostname"] == REGIONAL]
    assert ep["path"] == "vpce"
    ((lookup,),) = [ep["dns"]]
    assert (lookup["resolver"], lookup["amazon_provided"]) == (DNS_IP, True), lookup
    (probe,) = ep["probes"]
    assert probe["address"] == ENI_IP and probe["success"] is True, probe
    assert probe["signed"] is True, "credentials should come from the instance profile"
    assert (probe["account"], probe["arn"]) == (MOTO_ACCOUNT, MOTO_ARN), "not moto's answer"
    assert_phases_add_up(probe["phases"], JSON_ROUNDING)  # a real probe of moto over TLS


def _assert_public_path(topo: Topology, log: Path) -> None:
    def public_reached(s: list[Sample]) -> bool:
        path = _value(s, "sts_agent_endpoint_path", endpoint=REGIONAL, path="public")
        found = _value(s, "sts_agent_findings", code="PRIVATE_DNS_NOT_RESOLVING")
        ok = _value(s, "sts_agent_probe_success", endpoint=REGIONAL, address="public")
        return path == 1 and bool(found) and ok == 1

    s = _wait_metrics(topo, log, "the public path once private DNS is off", public_reached)
    assert _value(s, "sts_agent_endpoint_path", endpoint=REGIONAL, path="vpce") == 0
    assert _value(s, "sts_agent_endpoint_expectation_met", endpoint=REGIONAL) == 0
    klass = _value(s, "sts_agent_endpoint_address_info", endpoint=REGIONAL, **{"class": "public"})
    assert klass == 1


def _assert_hosts_pin_wins(topo: Topology, binary: Path, config: Path) -> None:
    """The common workaround: pin the regional name to the ENI in the instance's /etc/hosts.

    `ip netns exec` bind-mounts /etc/netns/<instance>/hosts over /etc/hosts, as a
    real instance's own file would be; DNS still says public.
    """
    (NETNS_ETC / topo.instance / "hosts").write_text(
        f"127.0.0.1 localhost\n{ENI_IP}  {REGIONAL}  # pinned by hand\n"
    )
    doc = _check_json(topo, binary, config)
    (ep,) = [e for e in doc["endpoints"] if e["hostname"] == REGIONAL]
    assert (ep["path"], ep["effective_path"]) == ("public", "vpce"), ep
    assert ep["hosts_file"] == [{"address": ENI_IP, "class": "vpce"}]
    assert ep["expectation_met"] is True
    assert ep["paths_by_resolver"] == {DNS_IP: "public", "hosts_file": "vpce"}
    by_address = {p["address"]: p for p in ep["probes"]}
    assert by_address[ENI_IP]["success"] is True, by_address
    codes = {f["code"] for f in doc["findings"] if f.get("endpoint") == REGIONAL}
    assert {"HOSTS_FILE_OVERRIDE", "PRIVATE_DNS_NOT_RESOLVING"} <= codes, codes


def test_agent_on_an_instance_sees_vpce_then_public_when_private_dns_is_off(
    tmp_path: Path,
) -> None:
    require_root()
    require_binary("ip")
    require_binary("sysctl", "/usr/sbin/sysctl")
    dnsmasq = require_binary("dnsmasq", "/usr/sbin/dnsmasq")
    binary = agent_binary()
    links_before = _host_links()

    log = tmp_path / "agent.log"
    with topology() as topo, _servers(topo, tmp_path / "servers", dnsmasq) as (vpc, public):
        bundle = _ca_bundle(tmp_path / "ca-bundle.pem", vpc, public)
        config = _write_config(tmp_path / "agent.toml", bundle)
        with _agent(topo, binary, config, log):
            _assert_private_path(topo, binary, config, log)
            # "Enable private DNS name" unticked on the endpoint: the Amazon DNS now
            # answers the regional name with the public front door.
            vpc.command({"records": {REGIONAL: [PUBLIC_IP], GLOBAL: [PUBLIC_IP]}})
            _assert_public_path(topo, log)
            _assert_hosts_pin_wins(topo, binary, config)
    secret = DEFAULT_CREDENTIALS["SecretAccessKey"]
    assert secret not in log.read_text(), "the agent logged a secret"

    mine = [n for n in namespaces() if n in topo.names]
    assert not mine, f"namespaces left behind: {mine}"
    assert not [n for n in topo.names if (NETNS_ETC / n).exists()]
    assert _host_links() == links_before, "the host namespace gained or lost interfaces"
