"""The daemon's memory of recent rounds, kept small and flat enough to hold an hour.

The status page and `/api/history` answer "since when?" and "is it flapping?"
on a host whose Prometheus may be the thing that is broken.  A Report holds
every DNS answer, error text and audit; the window keeps only what those
questions need (the path per endpoint, outcome and total time per address, the
findings raised) and keeps it in columns: one preallocated-size array per
endpoint and per address, one slot per round.  Once the window is full a round
adds no Python object at all, so the daemon's heap does not fragment around
thousands of small long-lived records.
"""

from __future__ import annotations

import math
import threading
import time
from array import array
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from agent.results import PATHS, STS_REASONS, EndpointReport, Path, Report, Severity
from agent.surfaces.series import PUBLIC, by_label

MAX_ROUNDS = 120
MAX_SECONDS = 3600.0
#: Address rows kept per endpoint, never dropping one of the latest round (so more only
#: while a round probes more).  Each round probes at most max_addresses_per_endpoint, but
#: ENIs rotating through a pool (a misbehaving resolver, or vpc_cidrs wide enough to cover
#: a public range) would otherwise leave a row each for the whole window: hundreds of
#: rows, a page of a megabyte.
MAX_ADDRESS_ROWS = 32
_ABSENT = -1  # the endpoint or address was not part of that round
_OK = 0  # outcome codes above this are 1 + the index of the failure reason in STS_REASONS
_REASON: dict[str, int] = {r: i + 1 for i, r in enumerate(STS_REASONS)}
_PATH = {p: i for i, p in enumerate(PATHS)}


@dataclass(frozen=True, slots=True)
class FindingKey:
    code: str
    severity: Severity
    endpoint: str | None


class _Column:
    """One address of one endpoint: its class, and per round an outcome and a total time."""

    __slots__ = ("klass", "outcome", "total")

    def __init__(self, klass: str, absent_rounds: int) -> None:
        self.klass = klass
        self.outcome = array("b", [_ABSENT]) * absent_rounds
        self.total = array("d", [math.nan]) * absent_rounds


def _outcome(ok: bool, reason: str | None) -> int:
    return _OK if ok else _REASON.get(reason or "other", _REASON["other"])


def _addresses(ep: EndpointReport, vpc_cidrs: Sequence[str]) -> dict[str, tuple[str, int, float]]:
    """label -> (class, outcome, total), grouped as the metrics' `address` label groups:
    each ENI, then one public row (the slowest public address; failed if any failed, with
    the first reason)."""
    out: dict[str, tuple[str, int, float]] = {}
    for group in by_label(ep, vpc_cidrs):
        reason = next((p.reason for p in group.probes if not p.success), None)
        total = group.phases().get("total", math.nan)
        out[group.label] = (group.klass, _outcome(group.success, reason), total)
    return out


class History:
    """The last `max_rounds` rounds no older than `max_seconds`, whichever are fewer.

    The scheduler thread adds; HTTP threads take a snapshot (array copies under
    the lock), so a page never sees a window changing under it.
    """

    def __init__(self, max_rounds: int = MAX_ROUNDS, max_seconds: float = MAX_SECONDS) -> None:
        self.max_rounds = max_rounds
        self.max_seconds = max_seconds
        self._times = array("d")
        self._paths: dict[str, array[int]] = {}
        self._columns: dict[tuple[str, str], _Column] = {}
        self._findings: deque[tuple[FindingKey, ...]] = deque()
        self._keys: dict[FindingKey, FindingKey] = {}  # one object per distinct finding
        self._lock = threading.Lock()
        #: Rounds added so far: changes once the window holds a round, which a page built
        #: from the window and the latest report can be keyed on.
        self.added = 0

    def add(self, report: Report) -> None:
        paths = {ep.endpoint.hostname: _PATH[ep.effective_path] for ep in report.endpoints}
        values = {
            (ep.endpoint.hostname, address): v
            for ep in report.endpoints
            for address, v in _addresses(ep, report.vpc_cidrs).items()
        }
        raised = [FindingKey(f.code, f.severity, f.endpoint) for f in report.findings]
        with self._lock:
            held = len(self._times)
            for endpoint in paths:  # new rows keep the round's order
                if endpoint not in self._paths:
                    self._paths[endpoint] = array("b", [_ABSENT]) * held
            for key, (klass, _, _) in values.items():
                if key not in self._columns:
                    self._columns[key] = _Column(klass, held)
            self._times.append(report.finished)
            for endpoint, column in self._paths.items():
                column.append(paths.get(endpoint, _ABSENT))
            for key, col in self._columns.items():
                klass, outcome, total = values.get(key, (col.klass, _ABSENT, math.nan))
                col.klass = klass
                col.outcome.append(outcome)
                col.total.append(total)
            self._findings.append(tuple(dict.fromkeys(self._key(k) for k in raised)))
            self._expire(report.finished)
            self._trim(values.keys())
            self.added += 1

    def _trim(self, present: Iterable[tuple[str, str]]) -> None:
        """Past MAX_ADDRESS_ROWS an endpoint loses the rows seen longest ago; never a row
        of the latest round, so every address probed now keeps its history."""
        rows: dict[str, list[tuple[str, str]]] = {}
        for key in self._columns:
            rows.setdefault(key[0], []).append(key)
        latest = set(present)
        for keys in rows.values():
            extra = len(keys) - MAX_ADDRESS_ROWS
            if extra <= 0:
                continue
            gone = sorted((k for k in keys if k not in latest), key=self._last_seen)
            for key in gone[:extra]:
                del self._columns[key]

    def _last_seen(self, key: tuple[str, str]) -> int:
        outcome = self._columns[key].outcome
        return next((i for i in range(len(outcome) - 1, -1, -1) if outcome[i] != _ABSENT), -1)

    def _key(self, key: FindingKey) -> FindingKey:
        return self._keys.setdefault(key, key)

    def _expire(self, now: float) -> None:
        drop = 0
        while len(self._times) - drop > self.max_rounds or (
            drop < len(self._times) and now - self._times[drop] > self.max_seconds
        ):
            drop += 1
        if not drop:
            return
        del self._times[:drop]
        for _ in range(drop):
            self._findings.popleft()
        for endpoint, column in list(self._paths.items()):
            del column[:drop]
            if column.count(_ABSENT) == len(column):
                del self._paths[endpoint]
        for key, col in list(self._columns.items()):
            del col.outcome[:drop]
            del col.total[:drop]
            if col.outcome.count(_ABSENT) == len(col.outcome):
                del self._columns[key]
        live = {k for ks in self._findings for k in ks}
        for k in self._keys.keys() - live:
            del self._keys[k]

    def snapshot(self, now: float | None = None) -> Snapshot:
        now = time.time() if now is None else now
        with self._lock:
            self._expire(now)
            return Snapshot(
                tuple(self._times),
                {e: tuple(c) for e, c in self._paths.items()},
                {k: (c.klass, tuple(c.outcome), tuple(c.total)) for k, c in self._columns.items()},
                tuple(self._findings),
            )


@dataclass(frozen=True)
class Snapshot:
    """A copy of the window's columns, index i being round i (oldest first)."""

    times: tuple[float, ...]
    paths: dict[str, tuple[int, ...]]
    columns: dict[tuple[str, str], tuple[str, tuple[int, ...], tuple[float, ...]]]
    findings: tuple[tuple[FindingKey, ...], ...]


# --- what the page and the JSON show, computed once from a snapshot -------------------


class PathRun(NamedTuple):
    """Consecutive rounds on one path: a segment of an endpoint's strip."""

    path: Path
    start: float  # first round's time
    end: float  # last round's time
    rounds: int


class Point(NamedTuple):
    """One address in one round."""

    at: float
    success: bool
    total: float | None  # seconds; None when the call did not finish
    reason: str | None  # one of STS_REASONS when not success


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
    times: tuple[float, ...]  # every round of the window, oldest first
    paths: dict[str, tuple[PathRun, ...]]
    series: tuple[AddressSeries, ...]
    findings: tuple[FindingSpan, ...]

    @property
    def start(self) -> float | None:
        return self.times[0] if self.times else None

    @property
    def end(self) -> float | None:
        return self.times[-1] if self.times else None


def percentile(values: Iterable[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100), None for no values."""
    data = sorted(values)
    if not data:
        return None
    pos = (len(data) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def _runs(times: Sequence[float], column: Sequence[int]) -> tuple[PathRun, ...]:
    """Runs of rounds on one path; a round the endpoint was not in ends a run."""
    runs: list[list[float | int]] = []  # path index, start, end, rounds
    previous = _ABSENT
    for at, code in zip(times, column, strict=True):
        if code != _ABSENT and code == previous:
            runs[-1][2] = at
            runs[-1][3] += 1
        elif code != _ABSENT:
            runs.append([code, at, at, 1])
        previous = code
    return tuple(PathRun(PATHS[int(p)], s, e, int(n)) for p, s, e, n in runs)


def _points(
    times: Sequence[float], outcomes: Sequence[int], totals: Sequence[float]
) -> tuple[Point, ...]:
    return tuple(
        Point(at, o == _OK, None if math.isnan(t) else t, None if o == _OK else STS_REASONS[o - 1])
        for at, o, t in zip(times, outcomes, totals, strict=True)
        if o != _ABSENT
    )


def window(snap: Snapshot) -> Window:
    times = snap.times
    paths = {endpoint: _runs(times, column) for endpoint, column in snap.paths.items()}
    order = {endpoint: i for i, endpoint in enumerate(paths)}  # per endpoint, public last
    series = []
    for (endpoint, address), (klass, outcomes, totals) in sorted(
        snap.columns.items(), key=lambda kv: (order.get(kv[0][0], 0), kv[0][1] == PUBLIC)
    ):
        pts = _points(times, outcomes, totals)
        ok = sorted(p.total for p in pts if p.success and p.total is not None)
        series.append(
            AddressSeries(endpoint, address, klass, pts, percentile(ok, 50), percentile(ok, 99))
        )
    spans: dict[FindingKey, list[float]] = {}  # first, last, rounds
    for at, keys in zip(times, snap.findings, strict=True):
        for k in keys:
            span = spans.get(k)
            if span is None:
                spans[k] = [at, at, 1]
            else:
                span[1], span[2] = at, span[2] + 1
    latest = set(snap.findings[-1]) if snap.findings else set()
    findings = tuple(
        FindingSpan(k, first, last, int(n), k in latest)
        for k, (first, last, n) in sorted(spans.items(), key=lambda kv: kv[1][0])
    )
    return Window(times, paths, tuple(series), findings)
