"""The human `check` report: what nslookup and get-caller-identity would show, and more."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.results import Report, StsProbe
from agent.verdicts.serving import served_text

if TYPE_CHECKING:
    from agent.audit.host import HostAuditResult

_MARK = {"info": "i", "warning": "!", "critical": "X"}


def _ms(v: float | None) -> str:
    return "    -   " if v is None else f"{v * 1000:7.1f}ms"


def _probe_line(p: StsProbe) -> str:
    timing = "  ".join(f"{name} {_ms(v)}" for name, v in p.phases.as_dict().items())
    if p.success:
        who = f"account {p.account}" if p.account else f"HTTP {p.http_status} (unsigned)"
        return f"      {p.address:<39} OK    {timing}  {who}"
    return f"      {p.address:<39} FAIL  {timing}  {p.reason}: {p.error}"


def render(report: Report) -> str:
    out: list[str] = []
    imds = report.imds
    out.append("sts-agent check")
    region = report.region or "unknown"
    out.append(f"  region      {region} (from {report.region_source})")
    if imds.available:
        out.append(
            f"  instance    {imds.instance_id or '?'} in {imds.availability_zone or '?'}, "
            f"{imds.vpc_id or '?'}"
        )
    else:
        detail = f" ({imds.detail})" if imds.detail else ""
        out.append(f"  imds        unavailable: {imds.reason}{detail}")
    out.append(f"  vpc cidrs   {', '.join(report.vpc_cidrs) or 'unknown'}")
    for r in report.resolvers:
        tag = "Amazon-provided" if r.amazon_provided else "not Amazon-provided"
        out.append(f"  resolver    {r.label} ({tag}, from {r.source})")
    if report.sdk is not None:
        s = report.sdk
        why = f" — {'; '.join(s.reasons)}" if s.reasons else ""
        if s.error:
            out.append(f"  sdk         unknown: {s.error}")
        else:
            out.append(f"  sdk         boto3 here would call {s.endpoint_url} ({s.mode}){why}")
            if s.proxy:
                out.append(f"  sdk proxy   {s.proxy}")
            if s.global_served_why:
                where = served_text(s.global_served_in, s.global_served_why)
                out.append(f"  sdk global  calls to sts.amazonaws.com: {where}")
    for ep in report.endpoints:
        e = ep.endpoint
        exp = ""
        if e.expected:
            exp = f", expected {e.expected}: " + ("OK" if ep.expectation_met else "NOT MET")
        out.append("")
        path = ep.path.upper()
        if ep.pinned:
            path += f" in DNS, {ep.effective_path.upper()} pinned in the hosts file"
        out.append(f"{e.hostname}  [{e.kind}]  path {path}{exp}")
        for lk, v in zip(ep.lookups, ep.verdicts, strict=True):
            out.append(f"  Server: {lk.resolver.label}")
            if lk.cnames:
                out.append(f"    CNAME  {' -> '.join(lk.cnames)}")
            if lk.reason:
                detail = next((q.detail for q in lk.queries if q.reason), "")
                # An rcode's detail is the reason itself (SERVFAIL): say it once.
                if not detail or detail.lower().startswith(lk.reason):
                    shown = detail or lk.reason
                else:
                    shown = f"{lk.reason}: {detail}"
                out.append(f"    no address: {shown}")
            ttl = {a.address: a.ttl for q in lk.queries for a in q.answers}
            for a in v.addresses:
                az = f"  {report.eni_zones[a.address]}" if a.address in report.eni_zones else ""
                out.append(
                    f"    Address: {a.address:<39} {a.klass:<8} ttl {ttl.get(a.address, 0)}s{az}"
                )
        if ep.pinned:
            out.append("  Hosts file (answers before DNS):")
            out.extend(f"    Address: {a.address:<39} {a.klass}" for a in ep.pinned)
        if ep.probes:
            out.append("    GetCallerIdentity per address:")
            out.extend(_probe_line(p) for p in ep.probes)
        if ep.dropped_addresses:
            out.append(f"    ({ep.dropped_addresses} more addresses not probed: cap reached)")
    out.extend(_audit_lines(report.audit))
    out.append("")
    unjudged = [ep.endpoint.hostname for ep in report.endpoints if ep.endpoint.expected is None]
    if not report.findings and unjudged:
        out.append(
            f"No findings. No path is expected for {', '.join(unjudged)}: set [expect] "
            '(e.g. regional = "vpce") to have it judged.'
        )
    elif not report.findings:
        out.append("No findings: STS traffic takes the expected path.")
    else:
        out.append("Findings:")
        for f in report.findings:
            out.append(f"  [{_MARK[f.severity]}] {f.severity.upper():<8} {f.code}: {f.message}")
            if f.advice:
                out.append(f"      -> {f.advice}")
    return "\n".join(out)


def _audit_lines(audit: HostAuditResult | None) -> list[str]:
    """The optional host audits, in the report only when they ran."""
    if audit is None:
        return []
    out: list[str] = []
    conns = audit.connections
    counts = {k: n for k, n in conns.labelled_counts.items() if n} if conns else {}
    if conns is not None and (counts or conns.error):
        source = ""
        if audit.connections_age is not None and conns.source:
            source = f" (read via {conns.source}"
            if audit.connections_age:
                source += f", {audit.connections_age:.0f} s ago"
            source += ")"
        out += ["", f"Live connections from this host to STS addresses{source}:"]
        owners = conns.labelled_owners
        for key, n in sorted(counts.items()):
            who = ", ".join(owners.get(key, ()))
            out.append(f"  {key:<20} {n}" + (f"  ({who})" if who else ""))
        if conns.error:
            out.append(f"  error: {conns.error}")
    procs = audit.processes
    if procs is not None:
        out += ["", "Processes and the STS endpoint their AWS settings resolve to:"]
        if not procs.permitted:
            out.append("  not permitted (needs CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH, or root)")
        elif not procs.processes:
            out.append(f"  none of {procs.inspected} inspected processes uses AWS")
        for p in procs.processes:
            why = f"  ({', '.join(p.reasons)})" if p.reasons else ""
            out.append(f"  {p.pid:>7} {p.name:<20} {p.mode:<9} {p.endpoint_url}{why}")
    vpce = audit.vpc_endpoints
    if vpce is not None:
        out += ["", "STS interface endpoints (EC2 API):"]
        if vpce.error:
            out.append(f"  error: {vpce.error}")
        for e in vpce.endpoints:
            dns = "private DNS on" if e.private_dns_enabled else "private DNS OFF"
            out.append(f"  {e.id} in {e.vpc_id} ({e.state}, {dns}): {', '.join(e.addresses)}")
        for host, ok in vpce.confirmed.items():
            out.append(f"  {host}: {'confirmed' if ok else 'NOT confirmed'}")
    return out
