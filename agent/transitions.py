"""Log lines for what changed between rounds: a path, its addresses, a finding.

A daemon that logs nothing per round leaves a log pipeline blind to the event an
operator searches for afterwards ("when did the regional name go public, and to
which addresses?"). Logging every round would cost a fleet a line per host per
interval for no news, so only changes are logged, and the first round's state.
"""

from __future__ import annotations

import logging

from agent.results import Report

log = logging.getLogger("agent.changes")

_Paths = dict[str, tuple[str, tuple[str, ...]]]
_Findings = dict[tuple[str, str | None], tuple[str, str]]


def _paths(report: Report) -> _Paths:
    """Per endpoint, its path and, on a private path, its addresses.

    A public name rotates its addresses every few answers, so only its path
    counts as a change; an endpoint's ENIs are few and stable, so a new one is news.
    """
    out: _Paths = {}
    for ep in report.endpoints:
        path = ep.effective_path
        addresses = sorted({a for lk in ep.lookups for a in lk.addresses})
        out[ep.endpoint.hostname] = (path, tuple(addresses) if path in ("vpce", "private") else ())
    return out


def _findings(report: Report) -> _Findings:
    return {(f.code, f.endpoint): (f.severity, f.message) for f in report.findings}


def _answered(report: Report, host: str) -> list[str]:
    """What the resolvers answered for `host` now, the first few (a line stays short)."""
    for ep in report.endpoints:
        if ep.endpoint.hostname == host:
            found = sorted({a for lk in ep.lookups for a in lk.addresses})
            return found[:8] + ([f"{len(found) - 8} more"] if len(found) > 8 else [])
    return []


class TransitionLog:
    """Compares each round with the one before and logs the differences."""

    def __init__(self) -> None:
        self._paths: _Paths | None = None
        self._findings: _Findings = {}

    def observe(self, report: Report) -> None:
        paths, findings = _paths(report), _findings(report)
        before = self._paths
        for host, (path, addresses) in paths.items():
            old = None if before is None else before.get(host)
            if old == (path, addresses):
                continue
            shown = f" ({', '.join(_answered(report, host))})" if path != "unresolved" else ""
            if old is None:
                log.info("%s: path %s%s", host, path, shown)
            elif old[0] != path:
                log.warning("%s: path %s -> %s%s", host, old[0], path, shown)
            else:
                log.info("%s: path %s, addresses now%s", host, path, shown)
        for key, (severity, message) in findings.items():
            if self._findings.get(key, (None,))[0] != severity:
                level = logging.INFO if severity == "info" else logging.WARNING
                log.log(level, "finding %s (%s): %s", key[0], severity, message)
        for key in self._findings.keys() - findings.keys():
            code, endpoint = key
            log.info("finding %s cleared%s", code, f" for {endpoint}" if endpoint else "")
        self._paths, self._findings = paths, findings
