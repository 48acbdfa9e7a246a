"""Folds the optional host audits into a round's Report.

Connections are cheap and counted every round; the process audit and the
VPC endpoint confirmation are slower (and the latter costs API calls), so
they are cached for discovery_interval.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.config import Settings
from agent.results import Finding, Report
from agent.verdicts.codes import PROCESS_GLOBAL_ADVICE, finding
from agent.verdicts.findings import SDK_ENV_CODES
from agent.verdicts.serving import cross_region, served_text

if TYPE_CHECKING:  # the audits import psutil and botocore on first use, not here
    from agent.audit.connections import ConnectionAudit, PacedCounter
    from agent.audit.processes import ProcessAudit
    from agent.audit.vpc_endpoints import VpceConfirmation

log = logging.getLogger("agent.audit")


@dataclass(frozen=True)
class HostAuditResult:
    """What the host audits that are on found this round; None for an audit that is off."""

    connections: ConnectionAudit | None = None
    #: How old the counts are (the daemon paces the audit); None when counting raised.
    connections_age: float | None = None
    processes: ProcessAudit | None = None
    #: The workloads' own settings were read: they, not the agent's environment, decide
    #: whether boto3 on this host calls the global endpoint.
    decides_sdk_verdict: bool = False
    vpc_endpoints: VpceConfirmation | None = None


class HostAudits:
    """`with_owners` names the processes behind connections: for `check`, not each round."""

    def __init__(self, *, with_owners: bool = False) -> None:
        self.with_owners = with_owners
        self._conns: PacedCounter | None = None
        self._procs: tuple[float, ProcessAudit, tuple[Finding, ...]] | None = None
        self._vpce: tuple[float, VpceConfirmation] | None = None

    def apply(self, settings: Settings, report: Report) -> Report:
        conns: ConnectionAudit | None = None
        age: float | None = None
        procs: ProcessAudit | None = None
        vpce: VpceConfirmation | None = None
        findings: list[Finding] = []
        base = report.findings
        if settings.audit_connections:
            conns, age = self._connections(settings, report)
        if settings.audit_processes:
            if self._procs is None or time.time() - self._procs[0] > settings.discovery_interval:
                self._procs = (time.time(), *_processes(report))
            procs = self._procs[1]
            findings.extend(self._procs[2])
            if procs.permitted:
                base = tuple(f for f in base if f.code not in SDK_ENV_CODES)
        if settings.audit_vpc_endpoints and report.region:
            if self._vpce is None or time.time() - self._vpce[0] > settings.discovery_interval:
                self._vpce = (time.time(), _vpc_endpoints(report))
            vpce = self._vpce[1]
            findings.extend(vpce.findings)
        if conns is None and procs is None and vpce is None:
            return report
        decides = procs is not None and procs.permitted
        audit = HostAuditResult(conns, age, procs, decides, vpce)
        report = dataclasses.replace(report, audit=audit, findings=base + tuple(findings))
        return _with_api_zones(report, vpce)

    def _connections(
        self, settings: Settings, report: Report
    ) -> tuple[ConnectionAudit, float | None]:
        from agent.audit.connections import ConnectionAudit, PacedCounter, count_connections

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
            return ConnectionAudit({}, {}, f"{type(e).__name__}: {e}"[:200]), None
        return result, round(age, 3)


def _with_api_zones(report: Report, vpce: VpceConfirmation | None) -> Report:
    """Fill in ENI AZs the EC2 API reported and zonal DNS names did not, then judge again."""
    from agent.verdicts.findings import zone_findings

    vpc = report.imds.vpc_id  # an address means an ENI only within one VPC
    found = vpce.endpoints if vpce is not None else ()
    records = [r for r in found if not vpc or r.vpc_id == vpc]
    api = {a: az for r in records for a, az in r.zones}
    ids = {a: az_id for r in records for a, az_id in r.zone_ids}
    if not api.keys() - report.eni_zones.keys() and not ids.keys() - report.eni_zone_ids.keys():
        return report
    groups = tuple(r.addresses for r in records if r.addresses)
    report = dataclasses.replace(
        report,
        eni_zones={**api, **report.eni_zones},
        eni_zone_ids={**report.eni_zone_ids, **ids},
        vpce_enis=report.vpce_enis + groups,
    )
    kept = tuple(f for f in report.findings if f.code != "ENDPOINT_NO_LOCAL_AZ_ENI")
    return dataclasses.replace(report, findings=kept + tuple(zone_findings(report)))


def _processes(report: Report) -> tuple[ProcessAudit, tuple[Finding, ...]]:
    from agent.audit.processes import ProcessAudit, audit_processes

    try:
        res = audit_processes()
    except Exception as e:
        log.warning("process audit failed: %s", e)
        return ProcessAudit(permitted=False, inspected=0, denied=0, error=str(e)[:200]), ()
    findings: list[Finding] = []
    if not res.permitted:
        findings.append(
            finding(
                "PROCESS_AUDIT_NOT_PERMITTED",
                "process audit is on but other processes' environments cannot be read",
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
            finding(
                "SDK_GLOBAL_SERVED_US_EAST_1" if severe else "PROCESS_USES_GLOBAL_ENDPOINT",
                f"{len(global_users)} process(es) would call sts.amazonaws.com: {names}{more}; "
                f"{where}" + (": their STS calls depend on us-east-1" if severe else ""),
                advice=PROCESS_GLOBAL_ADVICE,
            )
        )
    return res, tuple(findings)


def _vpc_endpoints(report: Report) -> VpceConfirmation:
    from agent.audit.vpc_endpoints import confirm_vpc_endpoints

    resolved = {
        ep.endpoint.hostname: [
            a.address for v in ep.verdicts for a in v.addresses if a.klass in ("vpce", "private")
        ]
        for ep in report.endpoints
        if ep.endpoint.kind != "global"
    }
    return confirm_vpc_endpoints(report.region or "", report.imds.vpc_id, resolved)
