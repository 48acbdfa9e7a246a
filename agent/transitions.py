"""Log lines for what changed between rounds: a path, its addresses, a finding.

A daemon that logs nothing per round leaves a log pipeline blind to the event an
operator searches for afterwards ("when did the regional name go public, and to
which addresses?"). Logging every round would cost a fleet a line per host per
interval for no news, so only changes are logged, and the first round's state.
"""

from __future__ import annotations

import logging

from agent.results import Report
from agent.targets import answered

log = logging.getLogger("agent.changes")

_Paths = dict[str, tuple[str, tuple[str, ...]]]
_Findings = dict[tuple[str, str | None], tuple[str, str]]
#: Addresses a line shows at most, so one stays short whatever DNS answers.
_SHOWN = 8


def _state(path: str, addresses: list[str]) -> tuple[str, tuple[str, ...]]:
    """An endpoint's path and, on a private path, its addresses: what counts as a change.

    A public name rotates its addresses every few answers, so only its path
    counts; an endpoint's ENIs are few and stable, so a new one is news.
    """
    return path, tuple(sorted(addresses)) if path in ("vpce", "private") else ()


def _shown(addresses: list[str]) -> str:
    listed = sorted(addresses)
    more = [f"{len(listed) - _SHOWN} more"] if len(listed) > _SHOWN else []
    return f" ({', '.join(listed[:_SHOWN] + more)})"


class TransitionLog:
    """Compares each round with the one before and logs the differences."""

    def __init__(self) -> None:
        self._paths: _Paths | None = None
        self._findings: _Findings = {}

    def observe(self, report: Report) -> None:
        paths: _Paths = {}
        for ep in report.endpoints:
            host, path, addresses = ep.endpoint.hostname, ep.effective_path, answered(ep.lookups)
            paths[host] = state = _state(path, addresses)
            old = None if self._paths is None else self._paths.get(host)
            if old == state:
                continue
            shown = _shown(addresses) if path != "unresolved" else ""
            if old is None:
                log.info("%s: path %s%s", host, path, shown)
            elif old[0] != path:
                log.warning("%s: path %s -> %s%s", host, old[0], path, shown)
            else:
                log.info("%s: path %s, addresses now%s", host, path, shown)
        findings: _Findings = {
            (f.code, f.endpoint): (f.severity, f.message) for f in report.findings
        }
        for key, (severity, message) in findings.items():
            if self._findings.get(key, (None,))[0] != severity:
                level = logging.INFO if severity == "info" else logging.WARNING
                log.log(level, "finding %s (%s): %s", key[0], severity, message)
        for code, endpoint in self._findings.keys() - findings.keys():
            log.info("finding %s cleared%s", code, f" for {endpoint}" if endpoint else "")
        self._paths, self._findings = paths, findings
