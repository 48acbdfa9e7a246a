"""`/api/history`: the status page's window of recent rounds as JSON, for scripts.

Built from the same `Window` the page draws, so the two never disagree.  Times
are ISO 8601 in UTC with millisecond precision; durations are seconds.
"""

from __future__ import annotations

import time
from typing import Any

from agent.history import History, Window, window

SCHEMA_VERSION = 1


def iso(t: float) -> str:
    """2026-12-02T09:52:10.123Z"""
    ms = min(int(t % 1 * 1000), 999)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{ms:03d}Z"


def _opt(t: float | None) -> str | None:
    return None if t is None else iso(t)


def to_json(history: History, w: Window | None = None) -> dict[str, Any]:
    w = window(history.snapshot()) if w is None else w
    endpoints: dict[str, dict[str, Any]] = {
        name: {
            "endpoint": name,
            "paths": [
                {"path": r.path, "start": iso(r.start), "end": iso(r.end), "rounds": r.rounds}
                for r in runs
            ],
            "addresses": [],
        }
        for name, runs in w.paths.items()
    }
    for s in w.series:
        endpoints[s.endpoint]["addresses"].append(
            {
                "address": s.address,
                "class": s.klass,
                "rounds": len(s.points),
                "failures": s.failures,
                "p50_seconds": s.p50,
                "p99_seconds": s.p99,
                "samples": [
                    {
                        "at": iso(p.at),
                        "success": p.success,
                        "total_seconds": p.total,
                        "reason": p.reason,
                    }
                    for p in s.points
                ],
            }
        )
    return {
        "schema_version": SCHEMA_VERSION,
        "window": {
            "max_rounds": history.max_rounds,
            "max_seconds": history.max_seconds,
            "rounds": len(w.times),
            "start": _opt(w.start),
            "end": _opt(w.end),
        },
        "endpoints": list(endpoints.values()),
        "findings": [
            {
                "code": f.key.code,
                "severity": f.key.severity,
                "endpoint": f.key.endpoint,
                "first_seen": iso(f.first),
                "last_seen": iso(f.last),
                "rounds": f.rounds,
                "active": f.active,
            }
            for f in w.findings
        ],
    }
