"""The `/` status page: server-rendered HTML with no external assets.

It must work on an isolated host with no internet, so styles are inline and
there is no JavaScript; a meta refresh keeps it current.
"""

from __future__ import annotations

import html
import time

from agent import __version__
from agent.results import Report

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}
.vpce,.ok{color:#0a6b2b;font-weight:bold}.public,.fail,.critical{color:#b00020;font-weight:bold}
.private{color:#8a5a00;font-weight:bold}.mixed,.unresolved,.warning{color:#b35c00;font-weight:bold}
.info{color:#555}code{background:#f6f6f6;padding:0 3px}
"""


def _e(v: object) -> str:
    return html.escape("" if v is None else str(v))


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v * 1000:.1f} ms"


def render(report: Report | None, *, refresh: int = 30) -> str:
    head = (
        f"<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<meta http-equiv=refresh content={refresh}><title>sts-agent</title>"
        f"<style>{_STYLE}</style></head><body><h1>sts-agent {_e(__version__)}</h1>"
    )
    if report is None:
        return head + "<p id=waiting>Waiting for the first probe round…</p></body></html>"
    parts = [head]
    age = time.time() - report.finished
    imds = report.imds
    parts.append(
        f"<p>Region <b>{_e(report.region or 'unknown')}</b> (from {_e(report.region_source)}); "
        f"VPC CIDRs {_e(', '.join(report.vpc_cidrs) or 'unknown')}; IMDS "
        f"{'available' if imds.available else 'unavailable: ' + _e(imds.reason)}; "
        f"last round {age:.0f}s ago, took {report.finished - report.started:.2f}s.</p>"
    )
    if report.sdk is not None:
        s = report.sdk
        parts.append(
            f"<p>boto3 on this host would call <code>{_e(s.endpoint_url)}</code> "
            f"(<b>{_e(s.mode)}</b>){' — ' + _e('; '.join(s.reasons)) if s.reasons else ''}"
            f"{', through the proxy <code>' + _e(s.proxy) + '</code>' if s.proxy else ''}.</p>"
        )
    parts.append(
        "<h2>Endpoints</h2><table id=endpoints><tr><th>Endpoint</th><th>Kind</th>"
        "<th>Path</th><th>Expected</th><th>Per resolver</th></tr>"
    )
    for ep in report.endpoints:
        per = ", ".join(f"{_e(src)}: {_e(p)}" for src, p in ep.paths_by_source.items())
        exp = ep.endpoint.expected or "–"
        met = "" if ep.expectation_met is None else (" ✓" if ep.expectation_met else " ✗")
        parts.append(
            f"<tr><td>{_e(ep.endpoint.hostname)}</td><td>{_e(ep.endpoint.kind)}</td>"
            f"<td class={_e(ep.path)} data-path={_e(ep.path)}>{_e(ep.path)}</td>"
            f"<td>{_e(exp)}{met}</td><td>{per}</td></tr>"
        )
    parts.append(
        "</table><h2>STS calls per address</h2><table id=probes><tr><th>Endpoint</th>"
        "<th>Address</th><th>Class</th><th>Result</th><th>connect</th><th>TLS</th>"
        "<th>first byte</th><th>total</th><th>Detail</th></tr>"
    )
    for ep in report.endpoints:
        classes = ep.classes
        for p in ep.probes:
            ok = "ok" if p.success else "fail"
            detail = (f"account {p.account}" if p.account else "") if p.success else p.error
            parts.append(
                f"<tr><td>{_e(ep.endpoint.hostname)}</td><td>{_e(p.address)}</td>"
                f"<td class={_e(classes.get(p.address))}>{_e(classes.get(p.address))}</td>"
                f"<td class={ok}>{'OK' if p.success else _e(p.reason)}</td>"
                f"<td>{_ms(p.phases.connect)}</td><td>{_ms(p.phases.tls)}</td>"
                f"<td>{_ms(p.phases.ttfb)}</td><td>{_ms(p.phases.total)}</td><td>{_e(detail)}</td></tr>"
            )
    parts.append("</table><h2>Findings</h2>")
    if not report.findings:
        parts.append(
            "<p id=findings class=ok>No findings: STS traffic takes the expected path.</p>"
        )
    else:
        parts.append(
            "<table id=findings><tr><th>Severity</th><th>Code</th><th>Message</th>"
            "<th>Advice</th></tr>"
        )
        for f in report.findings:
            parts.append(
                f"<tr><td class={_e(f.severity)}>{_e(f.severity)}</td><td><code>{_e(f.code)}"
                f"</code></td><td>{_e(f.message)}</td><td>{_e(f.advice)}</td></tr>"
            )
        parts.append("</table>")
    procs = report.extras.get("audit", {})
    plist = procs.get("processes", {}).get("processes", []) if isinstance(procs, dict) else []
    if plist:
        parts.append(
            "<h2>Processes and the STS endpoint their SDK would use</h2><table id=processes>"
            "<tr><th>PID</th><th>Name</th><th>Mode</th><th>Endpoint</th></tr>"
        )
        for p in plist:
            parts.append(
                f"<tr><td>{_e(p.get('pid'))}</td><td>{_e(p.get('name'))}</td>"
                f"<td class={_e(p.get('mode'))}>{_e(p.get('mode'))}</td>"
                f"<td>{_e(p.get('endpoint_url'))}</td></tr>"
            )
        parts.append("</table>")
    parts.append(
        "<p class=info><a href=/metrics>/metrics</a> · <a href=/-/ready>/-/ready</a>"
        "</p></body></html>"
    )
    return "".join(parts)
