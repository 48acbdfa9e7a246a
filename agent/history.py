"""The daemon's memory of recent rounds, kept small enough to hold an hour.

The status page and `/api/history` answer "since when?" and "is it flapping?"
on a host whose Prometheus may be the thing that is broken.  A Report holds
every DNS answer, error text and audit; a round summary keeps only what those
questions need (the path per endpoint, total time and outcome per address, the
finding codes), with repeated strings interned, so a full window costs a few
hundred KiB however long the daemon runs.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from agent.results import Path, Report, Severity
from agent.verdicts.classify import classify

MAX_ROUNDS = 120
MAX_SECONDS = 3600.0
#: Every public address of an endpoint is one row, as in the metrics' `address` label.
PUBLIC = "public"


@dataclass(frozen=True, slots=True)
class AddressSample:
    """One ENI (or every public address of the endpoint together) in one round."""

    at: float  # the round's time (the same float object the round holds)
    address: str
    klass: str
    success: bool
    total: float | None  # seconds; for the public row the slowest public address
    reason: str | None  # one of STS_REASONS when not success


@dataclass(frozen=True, slots=True)
class EndpointSample:
    endpoint: str
    path: Path  # the path programs take: a hosts-file pin wins over DNS
    addresses: tuple[AddressSample, ...]


@dataclass(frozen=True, slots=True)
class FindingKey:
    code: str
    severity: Severity
    endpoint: str | None


@dataclass(frozen=True, slots=True)
class RoundSummary:
    at: float  # epoch seconds the round finished
    endpoints: tuple[EndpointSample, ...]
    findings: tuple[FindingKey, ...]


def _s(value: str) -> str:
    return sys.intern(value)


def address_class(classes: Mapping[str, str], address: str, vpc_cidrs: Sequence[str]) -> str:
    """The class this round's answers gave the address, or, for one still probed because
    its DNS TTL has not run out, the class its address alone gives."""
    return classes.get(address) or classify(address, vpc_cidrs)


def _addresses(
    at: float,
    classes: Mapping[str, str],
    vpc_cidrs: Sequence[str],
    probes: Iterable[tuple[str, bool, float | None, str | None]],
) -> tuple[AddressSample, ...]:
    """Per-ENI samples in probe order, then one aggregate row for all public addresses."""
    out: list[AddressSample] = []
    public: list[tuple[bool, float | None, str | None]] = []
    for address, ok, total, reason in probes:
        klass = address_class(classes, address, vpc_cidrs)
        if klass == PUBLIC:
            public.append((ok, total, reason))
        else:
            out.append(
                AddressSample(at, _s(address), _s(klass), ok, total, _s(reason) if reason else None)
            )
    if public:
        totals = [t for _, t, _ in public if t is not None]
        failed = [r or "other" for ok, _, r in public if not ok]
        out.append(
            AddressSample(
                at,
                PUBLIC,
                PUBLIC,
                not failed,
                max(totals) if totals else None,
                _s(failed[0]) if failed else None,
            )
        )
    return tuple(out)


def summarize(report: Report) -> RoundSummary:
    endpoints = tuple(
        EndpointSample(
            _s(ep.endpoint.hostname),
            ep.effective_path,
            _addresses(
                report.finished,
                ep.classes,
                report.vpc_cidrs,
                ((p.address, p.success, p.phases.total, p.reason) for p in ep.probes),
            ),
        )
        for ep in report.endpoints
    )
    findings = tuple(
        dict.fromkeys(
            FindingKey(_s(f.code), f.severity, _s(f.endpoint) if f.endpoint else None)
            for f in report.findings
        )
    )
    return RoundSummary(report.finished, endpoints, findings)


class History:
    """The last `max_rounds` round summaries no older than `max_seconds`, whichever is fewer.

    The scheduler thread adds; HTTP threads read a snapshot, so a page never
    sees a window changing under it.
    """

    def __init__(self, max_rounds: int = MAX_ROUNDS, max_seconds: float = MAX_SECONDS) -> None:
        self.max_rounds = max_rounds
        self.max_seconds = max_seconds
        self._rounds: deque[RoundSummary] = deque(maxlen=max_rounds)
        self._lock = threading.Lock()

    def add(self, report: Report) -> None:
        summary = summarize(report)
        with self._lock:
            self._rounds.append(summary)
            self._expire(summary.at)

    def _expire(self, now: float) -> None:
        while self._rounds and now - self._rounds[0].at > self.max_seconds:
            self._rounds.popleft()

    def snapshot(self, now: float | None = None) -> tuple[RoundSummary, ...]:
        now = time.time() if now is None else now
        with self._lock:
            self._expire(now)
            return tuple(self._rounds)


# --- what the page and the JSON show, computed once from a snapshot -------------------


class PathRun(NamedTuple):
    """Consecutive rounds on one path: a segment of an endpoint's strip."""

    path: Path
    start: float  # first round's time
    end: float  # last round's time
    rounds: int


#: One address in one round, as the series of a window lists it.
Point = AddressSample


@dataclass(frozen=True, slots=True)
class AddressSeries:
    endpoint: str
    address: str
    klass: str
    points: tuple[Point, ...]
    p50: float | None
    p99: float | None

    @property
    def failures(self) -> int:
        return sum(1 for p in self.points if not p.success)


@dataclass(frozen=True, slots=True)
class FindingSpan:
    key: FindingKey
    first: float
    last: float
    rounds: int  # rounds of the window in which it was raised
    active: bool  # raised by the latest round


@dataclass(frozen=True, slots=True)
class Window:
    rounds: tuple[RoundSummary, ...]
    paths: dict[str, tuple[PathRun, ...]]
    series: tuple[AddressSeries, ...]
    findings: tuple[FindingSpan, ...]

    @property
    def start(self) -> float | None:
        return self.rounds[0].at if self.rounds else None

    @property
    def end(self) -> float | None:
        return self.rounds[-1].at if self.rounds else None


def percentile(values: Iterable[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100), None for no values."""
    data = sorted(values)
    if not data:
        return None
    pos = (len(data) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def window(rounds: Sequence[RoundSummary]) -> Window:
    paths: dict[str, list[list[Any]]] = {}  # path, start, end, rounds
    points: dict[tuple[str, str], list[Point]] = {}
    klass: dict[tuple[str, str], str] = {}
    spans: dict[FindingKey, list[float]] = {}  # first, last, rounds
    for r in rounds:
        at = r.at
        for ep in r.endpoints:
            runs = paths.setdefault(ep.endpoint, [])
            if runs and runs[-1][0] == ep.path:
                runs[-1][2] = at
                runs[-1][3] += 1
            else:
                runs.append([ep.path, at, at, 1])
            for a in ep.addresses:
                key = (ep.endpoint, a.address)
                points.setdefault(key, []).append(a)
                klass[key] = a.klass
        for f in r.findings:
            span = spans.get(f)
            if span is None:
                spans[f] = [r.at, r.at, 1]
            else:
                span[1], span[2] = r.at, span[2] + 1
    latest = set(rounds[-1].findings) if rounds else set()
    order = {endpoint: i for i, endpoint in enumerate(paths)}  # per endpoint, public last
    series = []
    for (endpoint, address), pts in sorted(
        points.items(), key=lambda kv: (order[kv[0][0]], kv[0][1] == PUBLIC)
    ):
        ok = sorted(p.total for p in pts if p.success and p.total is not None)
        series.append(
            AddressSeries(
                endpoint,
                address,
                klass[(endpoint, address)],
                tuple(pts),
                percentile(ok, 50),
                percentile(ok, 99),
            )
        )
    findings = tuple(
        FindingSpan(k, first, last, int(n), k in latest)
        for k, (first, last, n) in sorted(spans.items(), key=lambda kv: kv[1][0])
    )
    return Window(
        tuple(rounds),
        {e: tuple(PathRun(*r) for r in v) for e, v in paths.items()},
        tuple(series),
        findings,
    )
