"""Collecting past one Prometheus: agent mode with remote_write, and the CloudWatch agent.

The real Debian Prometheus runs in agent mode with the shipped config (only
addresses and ports changed; EC2 discovery swapped for a file holding the same
`__meta_ec2_*` labels) against a running sts-agent, and remote-writes to a
receiver on loopback that decodes snappy-compressed protobuf; samples of the
agent's metrics must arrive with the labels the rules join on.  The CloudWatch
agent is not packaged here: its JSON is checked for shape, its scrape config
with promtool, and its EMF dimensions against the labels the agent really sent.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.simulate.demo import REGIONAL, SimulatedVpc, simulated_vpc
from testbed import ROOT
from testbed.agent_proc import (
    agent_env,
    http_get,
    running_agent,
    vpc_config,
    wait_for,
)
from testbed.prometheus import prometheus_process
from testbed.require import require_binary
from tests.support.promql import AGENT_METRICS
from tests.support.remote_write import Received, remote_write_receiver

PROM = ROOT / "deploy" / "prometheus"
AGENT_CONFIG = PROM / "prometheus-agent.yml"
CLOUDWATCH = ROOT / "deploy" / "cloudwatch"
CW_AGENT = CLOUDWATCH / "amazon-cloudwatch-agent.json"
CW_SCRAPE = CLOUDWATCH / "sts-agent-prometheus.yaml"
AGENT_PORT = 9472  # the shipped relabelling scrapes this port on the private IP
INSTANCE_ID = "i-0fleet0000000001"
# CloudWatch's StandardUnit values (PutMetricData).
_CW_BASE = ("Seconds", "Microseconds", "Milliseconds", "Percent", "Count", "None")
_CW_SIZES = [p + u for u in ("bytes", "bits") for p in ("", "Kilo", "Mega", "Giga", "Tera")]
CW_UNITS = frozenset(
    [*_CW_BASE, *(s.capitalize() for s in _CW_SIZES)]
    + [f"{s.capitalize()}/Second" for s in _CW_SIZES]
    + ["Count/Second"]
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *args], capture_output=True, text=True, timeout=60
    )


def agent_mode_flags(binary: str) -> list[str]:
    """Prometheus 2.x enables agent mode by feature flag; 3.x by --agent."""
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
    help_text = out.stdout + out.stderr
    return (
        ["--agent"] if re.search(r"^\s+--agent\s", help_text, re.M) else ["--enable-feature=agent"]
    )


def loopback_with_free_agent_port() -> str:
    """A 127/8 address whose port 9472 is free, so the shipped port can stay."""
    for last in range(2, 250):
        addr = f"127.0.94.{last}"
        with socket.socket() as s:
            try:
                s.bind((addr, AGENT_PORT))
            except OSError:
                continue
        return addr
    pytest.fail(f"no loopback address with port {AGENT_PORT} free")


def cw_config() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(CW_AGENT.read_text())
    return doc


def declarations() -> list[dict[str, Any]]:
    prom = cw_config()["logs"]["metrics_collected"]["prometheus"]
    return list(prom["emf_processor"]["metric_declaration"])


# --- static checks ---------------------------------------------------------------------------


def test_agent_config_passes_promtool_in_agent_mode() -> None:
    out = promtool("check", "config", "--agent", str(AGENT_CONFIG))
    assert out.returncode == 0, out.stdout + out.stderr
    doc = yaml.safe_load(AGENT_CONFIG.read_text())
    assert "rule_files" not in doc and "alerting" not in doc  # agent mode refuses both
    assert doc["remote_write"] and all("sigv4" not in rw for rw in doc["remote_write"])
    assert "sigv4:" in AGENT_CONFIG.read_text()  # the AMP variant, documented in place


def test_agent_config_scrapes_like_the_ec2_config() -> None:
    """The store gets the same labels as a local Prometheus, so the rules work there."""
    agent = yaml.safe_load(AGENT_CONFIG.read_text())["scrape_configs"]
    ec2 = yaml.safe_load((PROM / "prometheus-ec2-sd.yml").read_text())["scrape_configs"]
    assert agent == ec2


def test_cloudwatch_agent_config_shape() -> None:
    prom = cw_config()["logs"]["metrics_collected"]["prometheus"]
    assert set(prom) == {"log_group_name", "prometheus_config_path", "emf_processor"}
    assert Path(prom["prometheus_config_path"]).name == CW_SCRAPE.name
    emf = prom["emf_processor"]
    assert emf["metric_declaration_dedup"] is True and emf["metric_namespace"]
    assert set(emf["metric_unit"]) <= AGENT_METRICS
    assert set(emf["metric_unit"].values()) <= CW_UNITS
    for d in declarations():
        assert set(d) == {"source_labels", "label_matcher", "dimensions", "metric_selectors"}
        # The matcher is tried on the source labels' values joined by ";".
        assert d["source_labels"][0] == "job" and d["label_matcher"].startswith("^sts-agent")
        re.compile(d["label_matcher"])
        assert all(0 < len(dims) <= 30 for dims in d["dimensions"])  # CloudWatch's limit
        for selector in d["metric_selectors"]:
            matched = {m for m in AGENT_METRICS if re.search(selector, m)}
            assert matched, f"{selector} selects no agent metric"
    selected = {s for d in declarations() for s in d["metric_selectors"]}
    assert {f"^{m}$" for m in emf["metric_unit"]} == selected


def test_cloudwatch_scrape_config_passes_promtool() -> None:
    out = promtool("check", "config", str(CW_SCRAPE))
    assert out.returncode == 0, out.stdout + out.stderr
    jobs = yaml.safe_load(CW_SCRAPE.read_text())["scrape_configs"]
    assert [j["job_name"] for j in jobs] == ["sts-agent"]


# --- end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vpc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatedVpc]:
    with simulated_vpc(tmp_path_factory.mktemp("vpc")) as v:
        yield v


@pytest.fixture(scope="module")
def remote_written(vpc: SimulatedVpc, tmp_path_factory: pytest.TempPathFactory) -> Received:
    """What Prometheus in agent mode forwarded from a running sts-agent."""
    binary = require_binary("prometheus")
    tmp = tmp_path_factory.mktemp("agent-mode")
    addr = loopback_with_free_agent_port()
    cfg = vpc_config(
        vpc, tmp / "agent.toml", AGENT_PORT, web__listen_address=f"{addr}:{AGENT_PORT}"
    )
    with (
        running_agent(cfg, agent_env(vpc), AGENT_PORT, tmp=tmp),
        remote_write_receiver() as (url, received),
    ):
        base = f"http://{addr}:{AGENT_PORT}"
        wait_for(lambda: http_get(base + "/-/ready", 2)[0] == 200, 60, "agent ready")
        wait_for(lambda: "sts_agent_probe_success{" in http_get(base + "/metrics")[1], 60, "round")
        doc = yaml.safe_load(AGENT_CONFIG.read_text())
        job = doc["scrape_configs"][0]
        job.pop("ec2_sd_configs")
        targets = tmp / "ec2.json"
        labels = {
            "__meta_ec2_private_ip": addr,
            "__meta_ec2_instance_id": INSTANCE_ID,
            "__meta_ec2_tag_Name": "fleet-1",
        }
        targets.write_text(json.dumps([{"targets": ["127.0.0.1:1"], "labels": labels}]))
        job["file_sd_configs"] = [{"files": [str(targets)]}]
        doc["remote_write"][0]["url"] = url
        (tmp / "prometheus-agent.yml").write_text(yaml.safe_dump(doc))
        flags = [*agent_mode_flags(binary), f"--storage.agent.path={tmp / 'wal'}"]
        with prometheus_process(tmp / "prometheus-agent.yml", tmp, *flags):
            try:
                # The first scrape comes within one 30 s interval, the batch within 5 s more.
                wait_for(lambda: received.series("sts_agent_probe_success"), 150, "remote write")
            except AssertionError:
                pytest.fail((tmp / "prometheus.log").read_text()[-3000:])
    return received


def test_agent_mode_forwards_the_agents_samples(
    remote_written: Received, vpc: SimulatedVpc
) -> None:
    names = remote_written.names()
    assert {"up", "sts_agent_probe_success", "sts_agent_endpoint_path"} <= names
    assert all(n == "up" or n.startswith("sts_agent_") for n in names), names  # write relabel
    success = remote_written.series("sts_agent_probe_success")
    assert {s["endpoint"] for s in success} >= {REGIONAL}
    for s in success:
        assert s["job"] == "sts-agent" and s["instance"] == INSTANCE_ID, s
        assert s["collector"] == "sts-agent-prometheus-agent"  # external label
    up = remote_written.series("up")
    assert up and up[0]["instance"] == INSTANCE_ID
    # The identity the fleet rules join on arrives beside them, from the (simulated) IMDS.
    info = remote_written.series("sts_agent_host_info")
    assert info and {s["vpc_id"] for s in info} == {vpc.imds.vpc_id}, info


def test_remote_write_speaks_the_protocol(remote_written: Received) -> None:
    for h in remote_written.headers:
        assert h["content-encoding"] == "snappy"
        assert h["content-type"] == "application/x-protobuf"
        assert h["x-prometheus-remote-write-version"].startswith("0.1")


def test_cloudwatch_dimensions_are_labels_the_agent_sends(remote_written: Received) -> None:
    """Every EMF dimension set exists on the samples its declaration selects."""
    checked = set()
    for d in declarations():
        matcher = re.compile(d["label_matcher"])
        for selector in d["metric_selectors"]:
            for name in {n for n in remote_written.names() if re.search(selector, n)}:
                for labels in remote_written.series(name):
                    if not matcher.search(";".join(labels.get(k, "") for k in d["source_labels"])):
                        continue
                    for dims in d["dimensions"]:
                        assert set(dims) <= set(labels), (name, dims, labels)
                    checked.add(name)
    assert {"sts_agent_probe_success", "sts_agent_endpoint_expectation_met"} <= checked
