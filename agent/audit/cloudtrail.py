"""`sts-agent audit cloudtrail`: who still calls the global STS endpoint, per CloudTrail.

The host probes show which path *this* host takes; CloudTrail shows every caller in the
account, including hosts that run no agent. Only events from `sts.amazonaws.com` count.
A call is global when `additionalEventData.RequestDetails.endpointType` says so (the
reliable signal) or its host header is `sts.amazonaws.com` or `sts-global.<region>...`
(older events carry only the header); which signal decided is reported. Since 2025 AWS
serves global calls from default-enabled regions in the caller's region, and
`RequestDetails.awsServingRegion` says where each was served, so global calls are split
into served in us-east-1 (a cross-region dependency) and served elsewhere (in-region).
Every dimension is a bounded counter (at most MAX_KEYS keys of at most MAX_KEY_CHARS
characters; the rest is summed under "(other)"), so a month of logs, or a hostile
file, cannot exhaust memory.

`--json` prints one object (a stable contract):

- `files_read`: sources read to the end; `events`: all records; `sts_events`: STS records.
- `by_host`, `by_principal` (readable caller, see below), `by_identity_type`,
  `by_source_ip`, `by_event_name`, `by_endpoint_type`, `by_serving_region`:
  `{key: count}`, most calls first, then `"(other)"` when capped. A missing host header
  is `"(unknown)"`; endpoint type and serving region are counted only when present.
- `by_vpc_endpoint`: `{"with": n, "without": n}`, by presence of `vpcEndpointId`.
- `time_range`: `{"first": eventTime, "last": eventTime}` of STS events, or nulls.
- `global_calls`: STS events counted as global; `global_by_signal`: how many of them
  `endpoint_type_and_host`, `endpoint_type` alone or `host_header` alone recognised;
  `global_served`: `{"in_region": n, "us_east_1": n, "unknown": n}` by
  `awsServingRegion` or an `sts-global.<region>` host (unknown: neither says).
- `global_callers[]`: one row per workload, most calls first: `{caller, identity_type,
  principal_arn, sessions, source_ips, count, last_seen, signals, served}`; an assumed
  role's sessions are grouped under the role, a web-identity or SAML user under
  `userName via identityProvider`, a service under `invokedBy`. `sessions` and
  `source_ips` hold the first few distinct values. `global_callers_other`: calls from
  callers beyond the cap.
- `errors[]`: `{source, error, records_counted}`; records read before a source broke
  are counted and said so.
- `queries`: `{region, logged_in, logs_insights_seed, logs_insights,
  logs_insights_us_east_1, athena_seed, athena, athena_in_region}`.

Exit codes: 0 no call to the global endpoint; 1 global calls, none recorded as served
in us-east-1; 2 nothing readable (or a usage error); 3 global calls of which some were
served in us-east-1.
"""

from __future__ import annotations

import os
import re
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent.audit.cloudtrail_identity import UNKNOWN, bounded, identity_of, text_at

# At import time, not lazily: the audit may run after dropping to a user that cannot
# read the installation's files any more.
from agent.audit.cloudtrail_queries import GLOBAL_HOST, GLOBAL_LOG_REGION, STS_SOURCE
from agent.audit.cloudtrail_queries import queries as queries
from agent.audit.cloudtrail_read import (
    InputProblem,
    RecordSource,
    SourceError,
    iter_sources,
    read_records,
)
from agent.redact import redact_text

EXIT_OK, EXIT_FOUND, EXIT_ERROR, EXIT_US_EAST_1 = 0, 1, 2, 3
MAX_KEYS = 10_000
SAMPLES = 5  # distinct sessions / source IPs kept per caller row
OTHER = "(other)"
REGION_PLACEHOLDER = "<region>"
_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_STS_GLOBAL_RE = re.compile(r"^sts-global\.([a-z0-9-]+)\.amazonaws\.com$")  # names where served
SIGNALS = ("endpoint_type_and_host", "endpoint_type", "host_header")
SERVED = ("in_region", "us_east_1", "unknown")


class BoundedCounter:
    """Counts keys up to a cap; later new keys only add to `other`. Keys are cut short."""

    def __init__(self, cap: int = MAX_KEYS) -> None:
        self.cap = cap
        self.counts: dict[str, int] = {}
        self.other = 0

    def add(self, key: str, n: int = 1) -> None:
        key = bounded(key)
        if key in self.counts:
            self.counts[key] += n
        elif len(self.counts) < self.cap:
            self.counts[key] = n
        else:
            self.other += n

    def ranked(self) -> list[tuple[str, int]]:
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))

    def as_json(self) -> dict[str, int]:
        out = dict(self.ranked())
        if self.other:
            out[OTHER] = self.other
        return out


@dataclass
class Caller:
    """One workload calling the global endpoint."""

    kind: str
    arn: str | None
    count: int = 0
    last_seen: str = ""
    sessions: list[str] = field(default_factory=list)
    ips: list[str] = field(default_factory=list)
    signals: dict[str, int] = field(default_factory=dict)
    served: dict[str, int] = field(default_factory=dict)

    def as_json(self, name: str) -> dict[str, Any]:
        return {
            "caller": name,
            "identity_type": self.kind,
            "principal_arn": self.arn,
            "sessions": self.sessions,
            "source_ips": self.ips,
            "count": self.count,
            "last_seen": self.last_seen,
            "signals": self.signals,
            "served": self.served,
        }


def _sample(values: list[str], value: str | None) -> None:
    if value and len(values) < SAMPLES and value not in values:
        values.append(value)


def global_signal(endpoint_type: str | None, host: str) -> str | None:
    """Which evidence makes a call global, or None for a regional call."""
    by_type = endpoint_type == "global"
    by_host = host == GLOBAL_HOST or bool(_STS_GLOBAL_RE.match(host))
    if by_type and by_host:
        return "endpoint_type_and_host"
    if by_type:
        return "endpoint_type"
    return "host_header" if by_host else None


def served_case(served_in: str | None) -> str:
    if served_in is None:
        return "unknown"
    return "us_east_1" if served_in == GLOBAL_LOG_REGION else "in_region"


@dataclass
class Summary:
    """Running totals for one audit; mutable because it is filled record by record."""

    files_read: int = 0
    events: int = 0
    sts_events: int = 0
    with_vpce: int = 0
    without_vpce: int = 0
    global_calls: int = 0
    first_seen: str = ""
    last_seen: str = ""
    by_host: BoundedCounter = field(default_factory=BoundedCounter)
    by_principal: BoundedCounter = field(default_factory=BoundedCounter)
    by_identity_type: BoundedCounter = field(default_factory=BoundedCounter)
    by_source_ip: BoundedCounter = field(default_factory=BoundedCounter)
    by_event_name: BoundedCounter = field(default_factory=BoundedCounter)
    by_endpoint_type: BoundedCounter = field(default_factory=BoundedCounter)
    by_serving_region: BoundedCounter = field(default_factory=BoundedCounter)
    global_by_signal: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SIGNALS, 0))
    global_served: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SERVED, 0))
    callers: dict[str, Caller] = field(default_factory=dict)
    callers_other: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def add(self, record: dict[str, Any], n: int = 1, first: str | None = None) -> None:
        """Count one record (or, from an aggregate query, `n` alike ones)."""
        self.events += n
        if record.get("eventSource") != STS_SOURCE:
            return
        self.sts_events += n
        host = normal_host(text_at(record, "tlsDetails", "clientProvidedHostHeader"))
        who = identity_of(record)
        ip = text_at(record, "sourceIPAddress") or UNKNOWN
        when = text_at(record, "eventTime") or ""
        kind = text_at(record, "additionalEventData", "RequestDetails", "endpointType")
        served_in = text_at(record, "additionalEventData", "RequestDetails", "awsServingRegion")
        self.by_host.add(host, n)
        self.by_principal.add(who.caller, n)
        self.by_identity_type.add(who.kind, n)
        self.by_source_ip.add(ip, n)
        self.by_event_name.add(text_at(record, "eventName") or UNKNOWN, n)
        if record.get("vpcEndpointId"):
            self.with_vpce += n
        else:
            self.without_vpce += n
        if kind is not None:
            self.by_endpoint_type.add(kind, n)
        if served_in is not None:
            self.by_serving_region.add(served_in, n)
        if when:
            self.first_seen = min(self.first_seen or first or when, first or when)
            self.last_seen = max(self.last_seen, when)
        signal = global_signal(kind, host)
        if signal is None:
            return
        named = _STS_GLOBAL_RE.match(host)
        case = served_case(served_in or (named.group(1) if named else None))
        self.global_calls += n
        self.global_by_signal[signal] += n
        self.global_served[case] += n
        caller = self.callers.get(who.caller)
        if caller is None:
            if len(self.callers) >= MAX_KEYS:
                self.callers_other += n
                return
            caller = self.callers[who.caller] = Caller(who.kind, who.arn)
        caller.count += n
        caller.last_seen = max(caller.last_seen, when)
        _sample(caller.sessions, who.session)
        _sample(caller.ips, ip)
        caller.signals[signal] = caller.signals.get(signal, 0) + n
        caller.served[case] = caller.served.get(case, 0) + n

    def ranked_callers(self) -> list[tuple[str, Caller]]:
        return sorted(self.callers.items(), key=lambda r: (-r[1].count, r[0]))

    def as_json(self, region: str) -> dict[str, Any]:
        return {
            "files_read": self.files_read,
            "events": self.events,
            "sts_events": self.sts_events,
            "time_range": {"first": self.first_seen or None, "last": self.last_seen or None},
            "by_host": self.by_host.as_json(),
            "by_vpc_endpoint": {"with": self.with_vpce, "without": self.without_vpce},
            "by_principal": self.by_principal.as_json(),
            "by_identity_type": self.by_identity_type.as_json(),
            "by_source_ip": self.by_source_ip.as_json(),
            "by_event_name": self.by_event_name.as_json(),
            "by_endpoint_type": self.by_endpoint_type.as_json(),
            "by_serving_region": self.by_serving_region.as_json(),
            "global_calls": self.global_calls,
            "global_by_signal": self.global_by_signal,
            "global_served": self.global_served,
            "global_callers": [c.as_json(name) for name, c in self.ranked_callers()],
            "global_callers_other": self.callers_other,
            "errors": self.errors,
            "queries": queries(region),
        }

    def exit_code(self) -> int:
        if self.files_read == 0 and self.events == 0:
            return EXIT_ERROR
        if self.global_served["us_east_1"]:
            return EXIT_US_EAST_1
        return EXIT_FOUND if self.global_calls else EXIT_OK


def normal_host(host: str | None) -> str:
    """Fold case, a trailing dot and the default port, which all name the same endpoint."""
    if not host:
        return UNKNOWN
    host = host.strip().lower()
    if host.endswith(":443"):
        host = host[:-4]
    return host.rstrip(".") or UNKNOWN


def principal_of(record: dict[str, Any]) -> str:
    """The readable caller of one record (see agent.audit.cloudtrail_identity)."""
    return identity_of(record).caller


def printable(text: str) -> str:
    """Escape control and format characters, so an event cannot drive the terminal."""
    if text.isprintable():
        return text
    return "".join(
        ch if ch == " " or not unicodedata.category(ch).startswith(("C", "Z")) else _escape(ch)
        for ch in text
    )


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def resolve_region(region: str | None) -> str:
    """--region, else the SDK's variables, else a placeholder the user fills in."""
    if region is not None:
        if not _REGION_RE.match(region):
            raise ValueError(f"--region {region!r}: not an AWS region name (like eu-west-1)")
        return region
    for var in ("AWS_DEFAULT_REGION", "AWS_REGION"):
        value = os.environ.get(var, "").strip()
        if value:
            if _REGION_RE.match(value):
                return value
            print(f"sts-agent: audit: ignoring {var}={value!r}: not a region", file=sys.stderr)
    return REGION_PLACEHOLDER


def summarise(
    paths: Sequence[str], since_ms: int | None = None, summary: Summary | None = None
) -> Summary:
    """Read every source once; report each bad one on stderr as it happens and go on."""
    summary = Summary() if summary is None else summary
    for item in iter_sources(paths, since_ms):
        if isinstance(item, InputProblem):
            _error(summary, item.name, item.message, 0)
            continue
        counted = 0
        # logs:// and Athena bound the time themselves (logs:// by delivery time).
        cutoff = None if isinstance(item, RecordSource) else since_ms
        try:
            records = item.records() if isinstance(item, RecordSource) else read_records(item)
            for record in records:
                if isinstance(record, InputProblem):  # one bad log event: skipped, counted
                    _error(summary, item.name, record.message, 0)
                    continue
                if cutoff is None or not _before(record, cutoff):
                    summary.add(record)
                counted += 1
        except SourceError as e:
            note = f" ({counted} records before it were counted)" if counted else ""
            _error(summary, item.name, f"{e}{note}", counted)
        else:
            summary.files_read += 1
    return summary


def _before(record: dict[str, Any], since_ms: int) -> bool:
    """An event older than --since, whatever the source; one without a readable time
    is kept, since nothing shows it is out of range."""
    try:
        when = datetime.fromisoformat(text_at(record, "eventTime") or "")
    except ValueError:
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp() * 1000 < since_ms


def _error(summary: Summary, source: str, message: str, counted: int) -> None:
    # botocore quotes the endpoint URL it failed on, user info and query included.
    message = redact_text(message)
    print(f"sts-agent: audit: {printable(source)}: {printable(message)}", file=sys.stderr)
    summary.errors.append({"source": source, "error": message, "records_counted": counted})
