"""The `check --json` document.  Its keys are a contract; add, never rename."""

from __future__ import annotations

from typing import Any

from agent import __version__
from agent.results import DnsLookup, EndpointReport, Report, StsProbe

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
        "regions": report.extras.get("regions", []),
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
        "audit": report.extras.get("audit", {}),
    }
