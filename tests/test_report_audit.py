"""The host audits as the report's surfaces show them: the `check --json` keys are a contract."""

from __future__ import annotations

import dataclasses
import json

from prometheus_client import generate_latest

from agent.audit.connections import ConnectionAudit
from agent.audit.host import HostAuditResult, HostAudits
from agent.audit.processes import ProcessAudit, ProcessSdk
from agent.audit.vpc_endpoints import VpceConfirmation, VpceRecord
from agent.config import Settings
from agent.results import Report
from agent.surfaces.metrics import Metrics
from agent.surfaces.report_json import to_json
from agent.surfaces.report_text import render
from tests.support.rounds import synthetic_report

REGIONAL = "sts.us-east-2.amazonaws.com"
ENI = "127.10.138.148"
CONNECTIONS = ConnectionAudit(
    {("regional", "vpce"): 3, ("global", "public"): 0},
    {("regional", "vpce"): ("java", "python")},
    None,
    "netlink",
)
PROCESSES = ProcessAudit(
    True,
    12,
    1,
    (
        ProcessSdk(7, "python", "python3", "global", "https://sts.amazonaws.com", ("no_region",)),
        ProcessSdk(9, "java", "java", "regional", f"https://{REGIONAL}", region="us-east-2"),
    ),
    {"global": 1, "regional": 1},
    vanished=2,
)
VPC_ENDPOINTS = VpceConfirmation(
    (
        VpceRecord(
            "vpce-1",
            "vpc-1",
            "available",
            True,
            ("a.vpce",),
            ("eni-1",),
            (ENI,),
            ((ENI, "us-east-2b"),),
        ),
    ),
    {REGIONAL: True},
)


def _report(audit: HostAuditResult | None) -> Report:
    report = synthetic_report(1000.0, {REGIONAL: ("vpce", [(ENI, "vpce", 0.01)])})
    # The text report pairs each verdict with its DNS lookup; a synthetic round has none.
    bare = tuple(dataclasses.replace(ep, verdicts=()) for ep in report.endpoints)
    return dataclasses.replace(report, endpoints=bare, audit=audit)


def _audit_json(audit: HostAuditResult | None) -> object:
    return json.loads(json.dumps(to_json(_report(audit))))["audit"]


def test_every_audit_that_ran_has_its_keys_in_the_json() -> None:
    audit = HostAuditResult(CONNECTIONS, 5.0, PROCESSES, True, VPC_ENDPOINTS)
    assert _audit_json(audit) == {
        "connections": {
            "counts": {"regional/vpce": 3, "global/public": 0},
            "owners": {"regional/vpce": ["java", "python"]},
            "error": None,
            "source": "netlink",
            "age_seconds": 5.0,
        },
        "processes": {
            "permitted": True,
            "inspected": 12,
            "denied": 1,
            "counts_by_mode": {"global": 1, "regional": 1},
            "processes": [
                {
                    "pid": 7,
                    "name": "python",
                    "mode": "global",
                    "endpoint_url": "https://sts.amazonaws.com",
                    "reasons": ["no_region"],
                },
                {
                    "pid": 9,
                    "name": "java",
                    "mode": "regional",
                    "endpoint_url": f"https://{REGIONAL}",
                    "reasons": [],
                },
            ],
            "decides_sdk_verdict": True,
        },
        "vpc_endpoints": {
            "error": None,
            "confirmed": {REGIONAL: True},
            "endpoints": [
                {
                    "id": "vpce-1",
                    "vpc_id": "vpc-1",
                    "state": "available",
                    "private_dns_enabled": True,
                    "dns_names": ["a.vpce"],
                    "network_interface_ids": ["eni-1"],
                    "addresses": [ENI],
                    "zones": [[ENI, "us-east-2b"]],
                }
            ],
        },
    }


def test_an_audit_that_failed_says_only_why() -> None:
    audit = HostAuditResult(
        connections=ConnectionAudit({}, {}, "RuntimeError: nope"),
        processes=ProcessAudit(False, 0, 0, error="nope"),
    )
    assert _audit_json(audit) == {
        "connections": {"counts": {}, "owners": {}, "error": "RuntimeError: nope"},
        "processes": {"permitted": False, "error": "nope"},
    }
    assert _audit_json(None) == {}


def test_no_audit_on_leaves_the_report_without_one() -> None:
    off = dataclasses.replace(
        Settings(), audit_connections=False, audit_processes=False, audit_vpc_endpoints=False
    )
    report = _report(None)
    assert HostAudits().apply(off, report) is report


def test_check_text_and_metrics_show_the_counts_by_kind_and_path() -> None:
    report = _report(HostAuditResult(CONNECTIONS, 5.0, PROCESSES, True, VPC_ENDPOINTS))
    text = render(report)
    assert "Live connections from this host to STS addresses (read via netlink, 5 s ago):" in text
    assert "  regional/vpce        3  (java, python)" in text
    assert "global/public" not in text  # no connection, no line
    assert "        7 python               global    https://sts.amazonaws.com  (no_region)" in text
    assert "  vpce-1 in vpc-1 (available, private DNS on): 127.10.138.148" in text
    metrics = Metrics()
    metrics.observe(report)
    exposition = generate_latest(metrics.registry).decode()
    assert 'sts_agent_host_connections{endpoint_kind="regional",path="vpce"} 3.0' in exposition
    assert 'sts_agent_host_connections{endpoint_kind="global",path="public"} 0.0' in exposition
    assert 'sts_agent_process_sdk_mode{mode="global"} 1.0' in exposition
