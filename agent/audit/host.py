"""Folds the optional host audits into a round's Report.

Connections are cheap and counted every round; the process audit and the
VPC endpoint confirmation are slower (and the latter costs API calls), so
they are cached for discovery_interval.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from agent.config import Settings
from agent.results import Finding, Report
from agent.verdicts.findings import SDK_ENV_CODES
from agent.verdicts.serving import cross_region, served_text

log = logging.getLogger("agent.audit")


class HostAudits:
    """`with_owners` names the processes behind connections: for `check`, not each round."""

    def __init__(self, *, with_owners: bool = False) -> None:
        self.with_owners = with_owners
        self._conns: Any = None  # PacedCounter, imported with the audit on first use
        self._procs: tuple[float, dict[str, Any], tuple[Finding, ...]] | None = None
        self._vpce: tuple[float, dict[str, Any], tuple[Finding, ...]] | None = None

    def apply(self, settings: Settings, report: Report) -> Report:
        audit: dict[str, Any] = {}
        findings: list[Finding] = []
        base = report.findings
        if settings.audit_connections:
            audit["connections"] = self._connections(settings, report)
        if settings.audit_processes:
            if self._procs is None or time.time() - self._procs[0] > settings.discovery_interval:
                self._procs = (time.time(), *_processes(report))
            audit["processes"], found = self._procs[1], self._procs[2]
            findings.extend(found)
            if audit["processes"].get("permitted"):
                # The workloads' own settings were read: they, not the agent's environment,
                # decide whether boto3 on this host calls the global endpoint.
                base = tuple(f for f in base if f.code not in SDK_ENV_CODES)
                audit["processes"]["decides_sdk_verdict"] = True
        if settings.audit_vpc_endpoints and report.region:
            if self._vpce is None or time.time() - self._vpce[0] > settings.discovery_interval:
                self._vpce = (time.time(), *_vpc_endpoints(report))
            audit["vpc_endpoints"], found = self._vpce[1], self._vpce[2]
            findings.extend(found)
        if not audit:
            return report
        extras = dict(report.extras, audit=audit)
        report = dataclasses.replace(report, extras=extras, findings=base + tuple(findings))
        return _with_api_zones(report, audit.get("vpc_endpoints"))

    def _connections(self, settings: Settings, report: Report) -> dict[str, Any]:
        from agent.audit.connections import PacedCounter, count_connections

        known: dict[str, tuple[str, str]] = {}
        for ep in report.endpoints:
            for v in ep.verdicts:
                for a in v.addresses:
                    known.setdefault(a.address, (ep.endpoint.kind, a.klass))
        age = 0.0
        try:
            if self.with_owners:
                result = count_connections(known, ports=(settings.port,))
            else:
                self._conns = self._conns or PacedCounter()
                result = self._conns.count(known, (settings.port,))
                age = self._conns.age
        except Exception as e:  # an audit must never cost the round
            return {"counts": {}, "owners": {}, "error": f"{type(e).__name__}: {e}"[:200]}
        return {
            "counts": {f"{k}/{p}": n for (k, p), n in result.counts.items()},
            "owners": {f"{k}/{p}": list(names) for (k, p), names in result.owners.items()},
            "error": result.error,
            "source": result.source,
            "age_seconds": round(age, 3),
        }


def _with_api_zones(report: Report, vpce: dict[str, Any] | None) -> Report:
    """Fill in ENI AZs the EC2 API reported and zonal DNS names did not, then judge again."""
    from agent.verdicts.findings import zone_findings

    vpc = report.imds.vpc_id  # an address means an ENI only within one VPC
    records = [r for r in (vpce or {}).get("endpoints", ()) if not vpc or r["vpc_id"] == vpc]
    api = {a: az for r in records for a, az in r.get("zones", ())}
    if not api.keys() - report.eni_zones.keys():
        return report
    groups = tuple(tuple(r["addresses"]) for r in records if r.get("addresses"))
    report = dataclasses.replace(
        report, eni_zones={**api, **report.eni_zones}, vpce_enis=report.vpce_enis + groups
    )
    kept = tuple(f for f in report.findings if f.code != "ENDPOINT_NO_LOCAL_AZ_ENI")
    return dataclasses.replace(report, findings=kept + tuple(zone_findings(report)))


def _processes(report: Report) -> tuple[dict[str, Any], tuple[Finding, ...]]:
    from agent.audit.processes import audit_processes

    try:
        res = audit_processes()
    except Exception as e:
        log.warning("process audit failed: %s", e)
        return {"permitted": False, "error": str(e)[:200]}, ()
    doc: dict[str, Any] = {
        "permitted": res.permitted,
        "inspected": res.inspected,
        "denied": res.denied,
        "counts_by_mode": dict(res.counts_by_mode),
        "processes": [
            {
                "pid": p.pid,
                "name": p.name,
                "mode": p.mode,
                "endpoint_url": p.endpoint_url,
                "reasons": list(p.reasons),
            }
            for p in res.processes
        ],
    }
    findings: list[Finding] = []
    if not res.permitted:
        findings.append(
            Finding(
                "PROCESS_AUDIT_NOT_PERMITTED",
                "info",
                "process audit is on but other processes' environments cannot be read",
                "Run with CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (see the systemd drop-in), "
                "or turn audit.processes off.",
            )
        )
    global_users = [p for p in res.processes if p.mode == "global"]
    if global_users:
        names = ", ".join(f"{p.name}[{p.pid}]" for p in global_users[:5])
        more = f" and {len(global_users) - 5} more" if len(global_users) > 5 else ""
        sdk = report.sdk
        served, why = (sdk.global_served_in, sdk.global_served_why) if sdk else (None, None)
        where = served_text(served, why)
        severe = cross_region(served, why)
        findings.append(
            Finding(
                "SDK_GLOBAL_SERVED_US_EAST_1" if severe else "PROCESS_USES_GLOBAL_ENDPOINT",
                "critical" if severe else "warning",
                f"{len(global_users)} process(es) would call sts.amazonaws.com: {names}{more}; "
                f"{where}" + (": their STS calls depend on us-east-1" if severe else ""),
                "Give them AWS_DEFAULT_REGION and AWS_STS_REGIONAL_ENDPOINTS=regional (or a "
                "botocore >= 1.40); the global name never uses the VPC endpoint.",
            )
        )
    return doc, tuple(findings)


def _vpc_endpoints(report: Report) -> tuple[dict[str, Any], tuple[Finding, ...]]:
    from agent.audit.vpc_endpoints import confirm_vpc_endpoints

    resolved = {
        ep.endpoint.hostname: [
            a.address for v in ep.verdicts for a in v.addresses if a.klass in ("vpce", "private")
        ]
        for ep in report.endpoints
        if ep.endpoint.kind != "global"
    }
    res = confirm_vpc_endpoints(report.region or "", report.imds.vpc_id, resolved)
    doc = {
        "error": res.error,
        "confirmed": dict(res.confirmed),
        "endpoints": [dataclasses.asdict(r) for r in res.endpoints],
    }
    return doc, tuple(res.findings)
