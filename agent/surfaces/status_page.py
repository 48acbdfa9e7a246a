"""The `/` status page: server-rendered HTML with no external assets.

It must work on an isolated host with no internet, so styles are inline and
there is no JavaScript; a meta refresh keeps it current.  Every value is
escaped and every attribute quoted, and the finished page is made valid text
(process names from /proc can carry undecodable bytes), so no value can break
the markup or the response.
"""

from __future__ import annotations

import html
import re
import time

from agent import __version__
from agent.history import History, Window, window
from agent.results import Phases, Report
from agent.surfaces import history_svg as svg
from agent.surfaces.history_json import iso
from agent.surfaces.series import probe_classes

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:middle}
th{background:#f3f3f3}
.vpce,.ok{color:#0a6b2b;font-weight:bold}.public,.fail,.critical{color:#b00020;font-weight:bold}
.private{color:#8a5a00;font-weight:bold}.mixed,.unresolved,.warning{color:#b35c00;font-weight:bold}
.info,.ago{color:#555}code{background:#f6f6f6;padding:0 3px}
.key{margin-right:1.2em;white-space:nowrap}.key svg{display:inline;vertical-align:-1px}
td.n{white-space:nowrap}
"""
_SURROGATES = re.compile("[\ud800-\udfff]")
#: How many path changes the text beside a strip lists (the strip shows them all).
_CHANGES_LISTED = 6
_PHASE_TITLES = {"tls": "TLS", "ttfb": "first byte"}


def _escape(v: object) -> str:
    """Text for HTML content or a quoted attribute; None is empty, bytes are decoded."""
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    return html.escape("" if v is None else str(v), quote=True)


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v * 1000:.1f} ms"


def _ago(seconds: float) -> str:
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s ago"
    if s < 3600:
        return f"{s // 60} min ago"
    return f"{s // 3600} h {s % 3600 // 60} min ago"


def _offset(t: float) -> str:
    off = time.localtime(t).tm_gmtoff
    sign = "-" if off < 0 else "+"
    return f"UTC{sign}{abs(off) // 3600:02d}:{abs(off) % 3600 // 60:02d}"


class _Clock:
    """Formats times as UTC, with local time where the host is not on UTC, and their age."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.local = time.localtime(now).tm_gmtoff != 0

    def short(self, t: float) -> str:
        text = time.strftime("%H:%M:%S UTC", time.gmtime(t))
        if self.local:
            text += time.strftime(" (%H:%M:%S local)", time.localtime(t))
        return text

    def when(self, t: float) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
        return (
            f'<time datetime="{stamp}">{self.short(t)}</time> '
            f'<span class="ago">{_ago(self.now - t)}</span>'
        )


def render(report: Report | None, *, refresh: int = 30, history: History | None = None) -> str:
    now = time.time()
    head = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{refresh}"><title>sts-agent</title>'
        f"<style>{_STYLE}</style></head><body><h1>sts-agent {_escape(__version__)}</h1>"
    )
    if report is None:
        return head + '<p id="waiting">Waiting for the first probe round…</p></body></html>'
    clock = _Clock(now)
    parts = [head, *_latest(report, clock)]
    if history is not None:
        parts.extend(_history(window(history.snapshot(now)), history, clock))
    parts.append(
        '<p class="info"><a href="/metrics">/metrics</a> · <a href="/api/history">'
        '/api/history</a> · <a href="/-/ready">/-/ready</a></p></body></html>'
    )
    # One pass over the finished page: a lone surrogate (os.fsdecode of a bad byte)
    # would make the response's UTF-8 encoding fail.
    return _SURROGATES.sub("\ufffd", "".join(parts))


def _latest(report: Report, clock: _Clock) -> list[str]:
    imds = report.imds
    parts = [
        f"<p>Region <b>{_escape(report.region or 'unknown')}</b> "
        f"(from {_escape(report.region_source)}); "
        f"VPC CIDRs {_escape(', '.join(report.vpc_cidrs) or 'unknown')}; IMDS "
        f"{'available' if imds.available else 'unavailable: ' + _escape(imds.reason)}; "
        f"last round {clock.when(report.finished)}, took "
        f"{report.finished - report.started:.2f}s. Times are UTC; this host's clock is "
        f"{_offset(clock.now)}.</p>"
    ]
    if report.sdk is not None:
        s = report.sdk
        parts.append(
            f"<p>boto3 on this host would call <code>{_escape(s.endpoint_url)}</code> "
            f"(<b>{_escape(s.mode)}</b>)"
            f"{' — ' + _escape('; '.join(s.reasons)) if s.reasons else ''}"
            f"{', through the proxy <code>' + _escape(s.proxy) + '</code>' if s.proxy else ''}.</p>"
        )
    parts.append(
        '<h2>Endpoints</h2><table id="endpoints"><tr><th>Endpoint</th><th>Kind</th>'
        "<th>Path</th><th>Expected</th><th>Per resolver</th></tr>"
    )
    for ep in report.endpoints:
        per = ", ".join(f"{_escape(src)}: {_escape(p)}" for src, p in ep.paths_by_source.items())
        exp = ep.endpoint.expected or "–"
        met = "" if ep.expectation_met is None else (" ✓" if ep.expectation_met else " ✗")
        parts.append(
            f"<tr><td>{_escape(ep.endpoint.hostname)}</td><td>{_escape(ep.endpoint.kind)}</td>"
            f'<td class="{_escape(ep.path)}" data-path="{_escape(ep.path)}">{_escape(ep.path)}</td>'
            f"<td>{_escape(exp)}{met}</td><td>{per}</td></tr>"
        )
    parts.append(
        '</table><h2>STS calls per address</h2><table id="probes"><tr><th>Endpoint</th>'
        "<th>Address</th><th>Class</th><th>Result</th>"
        + "".join(f"<th>{_PHASE_TITLES.get(k, k)}</th>" for k in Phases().as_dict())
        + "<th>Detail</th></tr>"
    )
    for ep in report.endpoints:
        classes = probe_classes(ep, report.vpc_cidrs)
        for p in ep.probes:
            ok = "ok" if p.success else "fail"
            detail = (f"account {p.account}" if p.account else "") if p.success else p.error
            klass = classes[p.address]
            parts.append(
                f"<tr><td>{_escape(ep.endpoint.hostname)}</td><td>{_escape(p.address)}</td>"
                f'<td class="{_escape(klass)}">{_escape(klass)}</td>'
                f'<td class="{ok}">{"OK" if p.success else _escape(p.reason)}</td>'
                + "".join(f"<td>{_ms(v)}</td>" for v in p.phases.as_dict().values())
                + f"<td>{_escape(detail)}</td></tr>"
            )
    parts.append("</table><h2>Findings</h2>")
    if not report.findings:
        parts.append(
            '<p id="findings" class="ok">No findings: STS traffic takes the expected path.</p>'
        )
    else:
        parts.append(
            '<table id="findings"><tr><th>Severity</th><th>Code</th><th>Message</th>'
            "<th>Advice</th></tr>"
        )
        for f in report.findings:
            parts.append(
                f'<tr><td class="{_escape(f.severity)}">{_escape(f.severity)}</td><td><code>'
                f"{_escape(f.code)}</code></td><td>{_escape(f.message)}</td><td>{_escape(f.advice)}</td></tr>"
            )
        parts.append("</table>")
    procs = report.audit.processes if report.audit is not None else None
    if procs is not None and procs.processes:
        parts.append(
            '<h2>Processes and the STS endpoint their SDK would use</h2><table id="processes">'
            "<tr><th>PID</th><th>Name</th><th>Mode</th><th>Endpoint</th></tr>"
        )
        for proc in procs.processes:
            parts.append(
                f"<tr><td>{_escape(proc.pid)}</td><td>{_escape(proc.name)}</td>"
                f'<td class="{_escape(proc.mode)}">{_escape(proc.mode)}</td>'
                f"<td>{_escape(proc.endpoint_url)}</td></tr>"
            )
        parts.append("</table>")
    return parts


def _history(w: Window, history: History, clock: _Clock) -> list[str]:
    if not w.times:
        return []
    axis = svg.Axis(w.times)
    start, n = w.times[0], len(w.times)
    parts = [
        f'<div id="history" data-rounds="{n}" data-start="{iso(start)}" '
        f'data-end="{iso(w.times[-1])}"><h2>The last {n} round(s), since '
        f"{clock.when(start)}</h2>"
        f'<p class="info">The window holds at most {history.max_rounds} rounds and '
        f"{history.max_seconds / 60:.0f} minutes. Hover a mark for its time.</p>",
        svg.defs(),
        f'<p class="legend">Paths: {svg.legend()}</p>'
        '<table id="path-history"><tr><th>Endpoint</th><th>Path over time</th>'
        "<th>Changes</th></tr>",
    ]
    for endpoint, runs in w.paths.items():
        listed = runs[-_CHANGES_LISTED:]
        earlier = len(runs) - len(listed)
        text = " → ".join(
            f'<span class="{r.path}">{r.path}</span> from {clock.when(r.start)} '
            f"({r.rounds} round{'s' if r.rounds != 1 else ''})"
            for r in listed
        )
        more = f"{earlier} earlier change(s); " if earlier else ""
        parts.append(
            f'<tr><td class="n">{_escape(endpoint)}</td>'
            f"<td>{svg.path_strip(endpoint, runs, axis, clock.short)}</td>"
            f"<td>{more}{text}</td></tr>"
        )
    parts.append(
        '</table><table id="latency-history"><tr><th>Endpoint</th><th>Address</th>'
        "<th>Total time per round (× = failed)</th><th>p50</th><th>p99</th>"
        "<th>Failed</th></tr>"
    )
    for s in w.series:
        fails = [p for p in s.points if not p.success]
        last = f"; last {_escape(fails[-1].reason)} at {clock.when(fails[-1].at)}" if fails else ""
        parts.append(
            f'<tr><td class="n">{_escape(s.endpoint)}</td><td class="n">{_escape(s.address)} '
            f'<span class="{_escape(s.klass)}">({_escape(s.klass)})</span></td>'
            f'<td>{svg.sparkline(s, axis, clock.short)}</td><td class="n">{_ms(s.p50)}</td>'
            f'<td class="n">{_ms(s.p99)}</td><td>{len(fails)} of {len(s.points)}{last}</td></tr>'
        )
    parts.append("</table>")
    if w.findings:
        parts.append(
            '<table id="finding-history"><tr><th>Code</th><th>Severity</th><th>Endpoint</th>'
            "<th>First seen in the window</th><th>Last seen</th><th>Rounds held</th></tr>"
        )
        for f in w.findings:
            k = f.key
            parts.append(
                f'<tr data-code="{_escape(k.code)}" data-rounds="{f.rounds}"><td><code>'
                f"{_escape(k.code)}</code></td>"
                f'<td class="{_escape(k.severity)}">{_escape(k.severity)}</td>'
                f"<td>{_escape(k.endpoint or '–')}</td><td>{clock.when(f.first)}</td>"
                f"<td>{'now' if f.active else clock.when(f.last)}</td>"
                f"<td>{f.rounds} of {n}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append('<p id="finding-history" class="ok">No findings in the window.</p>')
    parts.append("</div>")
    return parts
