"""`sts-agent serve` as a real process against a simulated VPC on loopback.

A real Prometheus scrapes it; promtool checks its exposition; signals are
real signals; the status page is rendered by headless Chromium.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from agent.simulate.demo import (
    ENI_ADDRESSES,
    GLOBAL,
    PUBLIC_GLOBAL,
    REGIONAL,
    SimulatedVpc,
    simulated_vpc,
)
from agent.simulate.dns_server import DnsServer
from testbed.agent_proc import AgentProcess, agent_env, running_agent, vpc_config, wait_for
from testbed.ports import free_port
from testbed.prometheus import prometheus_scraping
from testbed.require import require_binary
from tests.support.chromium import dump_dom

PATH_VPCE = f'sts_agent_endpoint_path{{endpoint="{REGIONAL}",path="vpce",'


@pytest.fixture
def vpc(tmp_path: Path) -> Iterator[SimulatedVpc]:
    with simulated_vpc(tmp_path / "vpc") as v:
        yield v


@contextmanager
def serving(
    vpc: SimulatedVpc, tmp_path: Path, **overrides: Any
) -> Iterator[tuple[AgentProcess, Path]]:
    """A ready `serve` on a free port for the simulated VPC, and the config file it reads."""
    port = free_port()
    cfg = vpc_config(vpc, tmp_path / "agent.toml", port, **overrides)
    with running_agent(cfg, agent_env(vpc), port, tmp=tmp_path) as agent:
        agent.wait_ready()
        yield agent, cfg


def _series(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


def test_prometheus_scrapes_the_agent_and_reads_the_vpce_path(
    vpc: SimulatedVpc, tmp_path: Path
) -> None:
    with (
        serving(vpc, tmp_path) as (agent, _),
        prometheus_scraping([f"127.0.0.1:{agent.port}"], tmp_path) as prom,
    ):
        wait_for(prom.targets_up, 30, "scrape target up")
        res = wait_for(
            lambda: prom.query(
                f'sts_agent_endpoint_path{{endpoint="{REGIONAL}",path="vpce"}} == 1'
            ),
            30,
            "vpce path in prometheus",
        )
        assert res[0]["metric"]["resolver"] == f"{vpc.dns.address}:{vpc.dns.port}"
        ok = wait_for(
            lambda: prom.query(f'sts_agent_probe_success{{endpoint="{REGIONAL}"}} == 1'),
            30,
            "successful probes",
        )
        assert {r["metric"]["address"] for r in ok} == set(ENI_ADDRESSES)
        phases = prom.query(
            f'count by (phase) (sts_agent_request_duration_seconds_count{{endpoint="{REGIONAL}"}})'
        )
        # per endpoint, total only by default; each ENI's phases are gauges
        assert {r["metric"]["phase"] for r in phases} == {"total"}
        enis = prom.query(
            f'count by (address) (sts_agent_request_phase_seconds{{endpoint="{REGIONAL}"}})'
        )
        assert {r["metric"]["address"] for r in enis} == set(ENI_ADDRESSES)
        met = prom.query("sts_agent_endpoint_expectation_met")
        assert {r["metric"]["endpoint"]: r["value"][1] for r in met} == {
            REGIONAL: "1",
            "sts.amazonaws.com": "1",
        }


def test_metrics_pass_promtool_with_no_warnings(vpc: SimulatedVpc, tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    with serving(vpc, tmp_path) as (agent, _):
        text = agent.metrics()
    out = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), (
        out.stdout + out.stderr
    )
    for name in (
        "sts_agent_dns_lookup_duration_seconds_bucket",
        "sts_agent_endpoint_path",
        "sts_agent_endpoint_address_info",
        "sts_agent_request_duration_seconds_bucket",
        "sts_agent_requests_total",
        "sts_agent_probe_success",
        "sts_agent_tls_certificate_expiry_timestamp_seconds",
        "sts_agent_sdk_endpoint_info",
        "sts_agent_imds_available",
        "sts_agent_resolver_info",
        "sts_agent_build_info",
        "sts_agent_probe_last_run_timestamp_seconds",
        "sts_agent_endpoint_expectation_met",
    ):
        assert _series(text, name), f"{name} missing"
    # exactly one path is 1 per endpoint x resolver
    for host in (REGIONAL, "sts.amazonaws.com"):
        ones = [
            line
            for line in _series(text, f'sts_agent_endpoint_path{{endpoint="{host}"')
            if line.endswith(" 1.0")
        ]
        assert len(ones) == 1, ones
    # histograms carry the documented bucket ranges (requests 2.5 ms .. 10 s, DNS 1 ms .. 2.5 s)
    assert 'le="0.0025"' in text and 'le="10.0"' in text
    assert 'le="0.001"' in text and 'le="2.5"' in text


def test_scrapes_answer_while_a_probe_target_hangs(vpc: SimulatedVpc, tmp_path: Path) -> None:
    """A target that accepts and never answers must not hold up /metrics."""
    with serving(vpc, tmp_path, interval=20, timeout=15) as (agent, _):
        vpc.sts[ENI_ADDRESSES[0]].fault = "hang"
        os.kill(agent.proc.pid, signal.SIGHUP)  # reload: starts a fresh round at once
        wait_for(lambda: len(vpc.sts[ENI_ADDRESSES[0]].requests) >= 2, 10, "hung request")
        # The round is now stuck for up to 15 s on the hung address; scrapes must still be served
        # (a blocked scrape would exceed this client timeout by far).
        for _ in range(20):
            status, body = agent.get("/metrics", timeout=3)
            assert status == 200 and "sts_agent_build_info" in body
        assert agent.get("/-/healthy", timeout=3)[0] == 200
        vpc.sts[ENI_ADDRESSES[0]].fault = None


def _reload_is_refused(agent: AgentProcess, why: str) -> None:
    """SIGHUP with a bad file: the failure is logged with `why`, and rounds go on."""
    agent.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in agent.log(), 10, "reload failure logged")
    assert why in agent.log() and agent.proc.poll() is None
    rounds = agent.value("sts_agent_rounds_total") or 0
    wait_for(lambda: (agent.value("sts_agent_rounds_total") or 0) > rounds, 20, "rounds go on")


def test_sighup_reloads_and_a_bad_file_keeps_the_running_config(
    vpc: SimulatedVpc, tmp_path: Path
) -> None:
    with serving(vpc, tmp_path) as (agent, cfg):
        assert agent.value(f'sts_agent_endpoint_expectation_met{{endpoint="{REGIONAL}"}}') == 1.0
        vpc_config(vpc, cfg, agent.port, expect__regional="public")
        agent.signal(signal.SIGHUP)
        wait_for(
            lambda: (
                agent.value(f'sts_agent_endpoint_expectation_met{{endpoint="{REGIONAL}"}}') == 0.0
            ),
            20,
            "reloaded expectation",
        )
        cfg.write_text("interval = -3\n")
        _reload_is_refused(agent, "interval")
        assert agent.value(f'sts_agent_endpoint_expectation_met{{endpoint="{REGIONAL}"}}') == 0.0


def test_sighup_to_an_empty_resolver_list_keeps_the_running_config(
    vpc: SimulatedVpc, tmp_path: Path
) -> None:
    """`resolvers = []` asks nobody; taken on reload, every later round would look at nothing."""
    with serving(vpc, tmp_path) as (agent, cfg):
        vpc_config(vpc, cfg, agent.port, resolvers=[])
        _reload_is_refused(agent, "resolvers: must not be empty")
        assert agent.value(f'sts_agent_endpoint_expectation_met{{endpoint="{REGIONAL}"}}') == 1.0


def test_sighup_drops_the_series_of_a_resolver_and_an_endpoint_no_longer_watched(
    vpc: SimulatedVpc, tmp_path: Path
) -> None:
    second = DnsServer("127.10.0.6", 0, ttl=30).start()
    try:
        second.set_records(REGIONAL, ENI_ADDRESSES)
        second.set_records(GLOBAL, (PUBLIC_GLOBAL,))
        kept, dropped = f"{vpc.dns.address}:{vpc.dns.port}", f"{second.address}:{second.port}"
        with serving(vpc, tmp_path, resolvers=[kept, dropped]) as (agent, cfg):
            gone = (f'resolver="{dropped}"', f'endpoint="{GLOBAL}"')
            wait_for(lambda: all(g in agent.metrics() for g in gone), 20, "both resolvers")
            vpc_config(vpc, cfg, agent.port, resolvers=[kept], endpoints__global=False)
            agent.signal(signal.SIGHUP)
            wait_for(
                lambda: not any(g in agent.metrics() for g in gone), 20, "their series removed"
            )
            lookups = f'sts_agent_dns_lookups_total{{endpoint="{REGIONAL}",resolver="{kept}"}}'
            before = agent.value(lookups) or 0
            wait_for(lambda: (agent.value(lookups) or 0) > before, 20, "the kept one counting")
            assert not any(g in agent.metrics() for g in gone)
    finally:
        second.stop()


def test_sighup_with_a_ca_bundle_openssl_refuses_keeps_the_running_config(
    vpc: SimulatedVpc, tmp_path: Path
) -> None:
    """The bundle passes the settings' check (its base64 decodes) and fails only when the
    probes' TLS context is built; before, that error escaped the reload and the daemon exited
    with its settings half swapped."""
    bundle = tmp_path / "decodes-to-nothing.pem"
    body = base64.b64encode(b"not a certificate").decode()
    bundle.write_text(f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
    with serving(vpc, tmp_path) as (agent, cfg):
        vpc_config(vpc, cfg, agent.port, ca_bundle=str(bundle), expect__regional="public")
        _reload_is_refused(agent, "ca_bundle")
        # The old settings in full: the old expectation, and probes that still succeed.
        assert agent.value(f'sts_agent_endpoint_expectation_met{{endpoint="{REGIONAL}"}}') == 1.0
        ok = f'sts_agent_probe_success{{address="{ENI_ADDRESSES[0]}",endpoint="{REGIONAL}"}}'
        assert agent.value(ok) == 1.0


def test_the_log_says_when_the_path_flips_and_when_it_returns(
    vpc: SimulatedVpc, tmp_path: Path
) -> None:
    """A log pipeline sees the event (path, addresses, finding) once, not every round."""
    with serving(vpc, tmp_path) as (agent, _):
        wait_for(lambda: f"{REGIONAL}: path vpce (" in agent.log(), 20, "first state logged")
        try:
            vpc.private_dns(False)
            wait_for(lambda: "path vpce -> public" in agent.log(), 20, "flip logged")
            wait_for(
                lambda: "finding PRIVATE_DNS_NOT_RESOLVING (critical)" in agent.log(), 10, "finding"
            )
        finally:
            vpc.private_dns(True)
        wait_for(lambda: "path public -> vpce" in agent.log(), 20, "return logged")
        wait_for(lambda: "PRIVATE_DNS_NOT_RESOLVING cleared" in agent.log(), 10, "cleared")
        rounds = agent.value("sts_agent_rounds_total") or 0
        wait_for(lambda: (agent.value("sts_agent_rounds_total") or 0) > rounds + 2, 20, "rounds")
        log = agent.log()
        assert log.count("path vpce -> public") == 1 and log.count("path public -> vpce") == 1
        assert log.count(f"{REGIONAL}: path vpce (") == 1


def test_sigterm_stops_cleanly_within_five_seconds(vpc: SimulatedVpc, tmp_path: Path) -> None:
    with serving(vpc, tmp_path) as (agent, _):
        agent.signal(signal.SIGTERM)
        assert agent.proc.wait(5) == 0
        assert "stopped" in agent.log()


def test_systemd_notify_ready_and_watchdog(vpc: SimulatedVpc, tmp_path: Path) -> None:
    sock_path = Path(tempfile.mkdtemp()) / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(20)
    port = free_port()
    env = agent_env(vpc, NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="1000000")
    try:
        with running_agent(
            vpc_config(vpc, tmp_path / "a.toml", port), env, port, tmp=tmp_path
        ) as agent:
            got: list[str] = []
            while "WATCHDOG=1" not in got:
                got.extend(sock.recv(4096).decode().split("\n"))
            assert "READY=1" in got
            agent.signal(signal.SIGTERM)
            while "STOPPING=1" not in got:
                got.extend(sock.recv(4096).decode().split("\n"))
    finally:
        sock.close()


def test_probe_endpoint_runs_one_synchronous_round(vpc: SimulatedVpc, tmp_path: Path) -> None:
    with serving(vpc, tmp_path) as (agent, _):
        status, body = agent.get("/probe?endpoint=regional", timeout=10)
        assert status == 200
        assert (
            f'sts_agent_probe_success{{address="{ENI_ADDRESSES[0]}",endpoint="{REGIONAL}"}} 1.0'
            in body
        )
        assert 'endpoint="sts.amazonaws.com"' not in body
        status, body = agent.get("/probe?endpoint=nope.example.com")
        assert status == 400 and REGIONAL in body


def test_a_probe_round_leaves_the_scheduled_rounds_series_alone(
    vpc: SimulatedVpc, tmp_path: Path
) -> None:
    """A /probe round watches one endpoint: fed to the shared registry, it would prune
    every other endpoint's series (and count its own twice)."""
    with serving(vpc, tmp_path, interval=600) as (agent, _):  # no scheduled round follows

        def counted() -> list[str]:
            text = agent.metrics()
            return _series(text, "sts_agent_dns_") + _series(text, "sts_agent_requests")

        before = counted()
        assert any(f'endpoint="{GLOBAL}"' in line for line in before)
        assert agent.get("/probe?endpoint=regional", timeout=10)[0] == 200
        assert counted() == before


def test_status_page_in_headless_chromium(vpc: SimulatedVpc, tmp_path: Path) -> None:
    vpc.private_dns(False)  # so the page has a finding to show
    with serving(vpc, tmp_path) as (agent, _):
        dom = dump_dom(f"{agent.base}/", tmp_path)
    assert '<table id="endpoints">' in dom or 'id="endpoints"' in dom, dom[:2000]
    row = re.search(rf"<tr><td>{re.escape(REGIONAL)}</td>.*?</tr>", dom)
    assert row and 'data-path="public"' in row.group(0)
    assert "PRIVATE_DNS_NOT_RESOLVING" in dom
    assert 'id="probes"' in dom and "127.20.0.20" in dom


def test_unreadable_config_fails_fast_with_exit_2(tmp_path: Path) -> None:
    port = free_port()
    bad = tmp_path / "bad.toml"
    bad.write_text("interval = \n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "serve",
            "--config",
            str(bad),
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        env=agent_env(None),
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and str(bad) in proc.stderr, proc.stderr
