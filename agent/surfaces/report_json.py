"""The `check --json` document.  Its keys are a contract; add, never rename."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.results import DnsLookup, EndpointReport, Report, StsProbe

if TYPE_CHECKING:
    from agent.audit.connections import ConnectionAudit
    from agent.audit.host import HostAuditResult
    from agent.audit.processes import ProcessAudit
    from agent.audit.vpc_endpoints import VpceConfirmation

SCHEMA_VERSION = 1


def _lookup(lk: DnsLookup) -> dict[str, Any]:
    return {
        "resolver": lk.resolver.label,
        "amazon_provided": lk.resolver.amazon_provided,
        "addresses": list(lk.addresses),
        "cnames": list(lk.cnames),
        "error": lk.reason,
        "queries": [
            {
                "type": q.rdtype,
                "rcode": q.rcode,
                "duration": round(q.duration, 6),
                "answers": [{"address": a.address, "ttl": a.ttl} for a in q.answers],
                "error": q.reason,
                "detail": q.detail,
                "tcp": q.tcp,
            }
            for q in lk.queries
        ],
    }


def _probe(p: StsProbe) -> dict[str, Any]:
    return {
        "address": p.address,
        "port": p.port,
        "success": p.success,
        "error": p.reason,
        "message": p.error,
        "phases": {
            k: (round(v, 6) if v is not None else None) for k, v in p.phases.as_dict().items()
        },
        "http_status": p.http_status,
        "sts_error_code": p.sts_error_code,
        "signed": p.signed,
        "account": p.account,
        "arn": p.arn,
        "tls_version": p.tls_version,
        "certificate_not_after": p.cert_not_after,
    }


def _endpoint(ep: EndpointReport, zones: dict[str, str]) -> dict[str, Any]:
    return {
        "hostname": ep.endpoint.hostname,
        "kind": ep.endpoint.kind,
        "signing_region": ep.endpoint.signing_region,
        "path": ep.path,
        "expected": ep.endpoint.expected,
        "expectation_met": ep.expectation_met,
        "effective_path": ep.effective_path,
        "addresses": [
            {"address": a, "class": c, "availability_zone": zones.get(a)}
            for a, c in ep.classes.items()
        ],
        "paths_by_resolver": ep.paths_by_source,
        "hosts_file": [{"address": a.address, "class": a.klass} for a in ep.pinned],
        "dns": [_lookup(lk) for lk in ep.lookups],
        "probes": [{**_probe(p), "availability_zone": zones.get(p.address)} for p in ep.probes],
        "dropped_addresses": ep.dropped_addresses,
    }


def to_json(report: Report) -> dict[str, Any]:
    imds = report.imds
    sdk = report.sdk
    return {
        "schema_version": SCHEMA_VERSION,
        "agent_version": __version__,
        "started": report.started,
        "finished": report.finished,
        "region": report.region,
        "region_source": report.region_source,
        "regions": list(report.regions),
        "vpc_cidrs": list(report.vpc_cidrs),
        "imds": {
            "available": imds.available,
            "reason": imds.reason,
            "detail": imds.detail,
            "region": imds.region,
            "availability_zone": imds.availability_zone,
            "instance_id": imds.instance_id,
            "vpc_id": imds.vpc_id,
            "subnet_id": imds.subnet_id,
            "vpc_cidrs": list(imds.vpc_cidrs),
            "account_id": imds.account_id,
        },
        "resolvers": [
            {"resolver": r.label, "amazon_provided": r.amazon_provided, "source": r.source}
            for r in report.resolvers
        ],
        "sdk": None
        if sdk is None
        else {
            "endpoint_url": sdk.endpoint_url,
            "mode": sdk.mode,
            "region": sdk.region,
            "reasons": list(sdk.reasons),
            "error": sdk.error,
            "proxy": sdk.proxy,
            "unconfigured": sdk.unconfigured,
            "ca_bundle_problem": sdk.ca_bundle_problem,
            "global_served_in": sdk.global_served_in,
            "global_served_why": sdk.global_served_why,
        },
        "endpoints": [_endpoint(ep, report.eni_zones) for ep in report.endpoints],
        "findings": [
            {
                "code": f.code,
                "severity": f.severity,
                "message": f.message,
                "advice": f.advice,
                "endpoint": f.endpoint,
            }
            for f in report.findings
        ],
        "audit": {} if report.audit is None else _audit(report.audit),
    }


def _audit(audit: HostAuditResult) -> dict[str, Any]:
    """One key per audit that ran."""
    out: dict[str, Any] = {}
    if audit.connections is not None:
        out["connections"] = _connections(audit.connections, audit.connections_age)
    if audit.processes is not None:
        out["processes"] = _processes(audit.processes, audit.decides_sdk_verdict)
    if audit.vpc_endpoints is not None:
        out["vpc_endpoints"] = _vpc_endpoints(audit.vpc_endpoints)
    return out


def _connections(conns: ConnectionAudit, age: float | None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "counts": conns.labelled_counts,
        "owners": {k: list(names) for k, names in conns.labelled_owners.items()},
        "error": conns.error,
    }
    if age is not None:  # the audit ran (it did not raise), so something read the table
        doc.update(source=conns.source, age_seconds=age)
    return doc


def _processes(procs: ProcessAudit, decides_sdk_verdict: bool) -> dict[str, Any]:
    if procs.error is not None:
        return {"permitted": False, "error": procs.error}
    doc: dict[str, Any] = {
        "permitted": procs.permitted,
        "inspected": procs.inspected,
        "denied": procs.denied,
        "counts_by_mode": dict(procs.counts_by_mode),
        "processes": [
            {
                "pid": p.pid,
                "name": p.name,
                "mode": p.mode,
                "endpoint_url": p.endpoint_url,
                "reasons": list(p.reasons),
            }
            for p in procs.processes
        ],
    }
    if decides_sdk_verdict:
        doc["decides_sdk_verdict"] = True
    return doc


def _vpc_endpoints(vpce: VpceConfirmation) -> dict[str, Any]:
    return {
        "error": vpce.error,
        "confirmed": dict(vpce.confirmed),
        # zone_ids only sharpen the AZ verdicts; the document keeps its documented keys
        "endpoints": [
            {k: v for k, v in dataclasses.asdict(r).items() if k != "zone_ids"}
            for r in vpce.endpoints
        ],
    }
