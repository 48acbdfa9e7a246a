"""`sts-agent audit cloudtrail`: who still calls the global STS endpoint, per CloudTrail.

The host probes show which path *this* host takes; CloudTrail shows every caller in the
account, including hosts that run no agent. Only events from `sts.amazonaws.com` count.
Every dimension is a bounded counter (at most MAX_KEYS distinct keys; the rest is
summed under "(other)"), so a month of logs cannot exhaust memory.

`--json` prints one object (a stable contract):

- `files_read`: files read to the end; `events`: all records; `sts_events`: STS records.
- `by_host`, `by_principal`, `by_source_ip`, `by_event_name`, `by_endpoint_type`,
  `by_serving_region`: `{key: count}`, most calls first, then `"(other)"` when capped.
  A missing host header is `"(unknown)"`; endpoint type and serving region come from
  `additionalEventData` and are counted only when present.
- `by_vpc_endpoint`: `{"with": n, "without": n}`, by presence of `vpcEndpointId`.
- `time_range`: `{"first": eventTime, "last": eventTime}` of STS events, or nulls.
- `global_calls`: STS events whose host was `sts.amazonaws.com`.
- `global_callers[]`: `{principal_arn, source_ip, count, last_seen}`, most calls first;
  `global_callers_other`: calls from callers beyond the cap.
- `errors[]`: `{source, error, records_counted}`; records read before a file broke are
  counted and said so.
- `queries`: `{region, logged_in, logs_insights, athena}` to find the same callers in AWS.

Exit codes: 0 no caller of the global endpoint, 1 some found, 2 nothing readable.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.audit.cloudtrail_read import InputProblem, SourceError, iter_sources, read_records

EXIT_OK, EXIT_FOUND, EXIT_ERROR = 0, 1, 2
MAX_KEYS = 10_000
OTHER = "(other)"
UNKNOWN = "(unknown)"
STS_SOURCE = "sts.amazonaws.com"
GLOBAL_HOST = "sts.amazonaws.com"
GLOBAL_LOG_REGION = "us-east-1"  # CloudTrail records global-endpoint calls here
REGION_PLACEHOLDER = "<region>"
_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_TOP = 15  # rows per table in the human report
_TOP_CALLERS = 50


class BoundedCounter:
    """Counts keys up to a cap; later new keys only add to `other`."""

    def __init__(self, cap: int = MAX_KEYS) -> None:
        self.cap = cap
        self.counts: dict[str, int] = {}
        self.other = 0

    def add(self, key: str) -> None:
        if key in self.counts:
            self.counts[key] += 1
        elif len(self.counts) < self.cap:
            self.counts[key] = 1
        else:
            self.other += 1

    def ranked(self) -> list[tuple[str, int]]:
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))

    def as_json(self) -> dict[str, int]:
        out = dict(self.ranked())
        if self.other:
            out[OTHER] = self.other
        return out


@dataclass
class Caller:
    count: int = 0
    last_seen: str = ""


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
    by_source_ip: BoundedCounter = field(default_factory=BoundedCounter)
    by_event_name: BoundedCounter = field(default_factory=BoundedCounter)
    by_endpoint_type: BoundedCounter = field(default_factory=BoundedCounter)
    by_serving_region: BoundedCounter = field(default_factory=BoundedCounter)
    callers: dict[tuple[str, str], Caller] = field(default_factory=dict)
    callers_other: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def add(self, record: dict[str, Any]) -> None:
        self.events += 1
        if record.get("eventSource") != STS_SOURCE:
            return
        self.sts_events += 1
        host = normal_host(_str(record, "tlsDetails", "clientProvidedHostHeader"))
        principal = principal_of(record)
        ip = _str(record, "sourceIPAddress") or UNKNOWN
        when = _str(record, "eventTime") or ""
        self.by_host.add(host)
        self.by_principal.add(principal)
        self.by_source_ip.add(ip)
        self.by_event_name.add(_str(record, "eventName") or UNKNOWN)
        if record.get("vpcEndpointId"):
            self.with_vpce += 1
        else:
            self.without_vpce += 1
        if (kind := _str(record, "additionalEventData", "endpointType")) is not None:
            self.by_endpoint_type.add(kind)
        if (served := _str(record, "additionalEventData", "awsServingRegion")) is not None:
            self.by_serving_region.add(served)
        if when:
            self.first_seen = min(self.first_seen or when, when)
            self.last_seen = max(self.last_seen, when)
        if host == GLOBAL_HOST:
            self.global_calls += 1
            self._add_caller((principal, ip), when)

    def _add_caller(self, key: tuple[str, str], when: str) -> None:
        caller = self.callers.get(key)
        if caller is None:
            if len(self.callers) >= MAX_KEYS:
                self.callers_other += 1
                return
            caller = self.callers[key] = Caller()
        caller.count += 1
        caller.last_seen = max(caller.last_seen, when)

    def ranked_callers(self) -> list[tuple[str, str, Caller]]:
        rows = [(arn, ip, c) for (arn, ip), c in self.callers.items()]
        return sorted(rows, key=lambda r: (-r[2].count, r[0], r[1]))

    def as_json(self, region: str) -> dict[str, Any]:
        return {
            "files_read": self.files_read,
            "events": self.events,
            "sts_events": self.sts_events,
            "time_range": {"first": self.first_seen or None, "last": self.last_seen or None},
            "by_host": self.by_host.as_json(),
            "by_vpc_endpoint": {"with": self.with_vpce, "without": self.without_vpce},
            "by_principal": self.by_principal.as_json(),
            "by_source_ip": self.by_source_ip.as_json(),
            "by_event_name": self.by_event_name.as_json(),
            "by_endpoint_type": self.by_endpoint_type.as_json(),
            "by_serving_region": self.by_serving_region.as_json(),
            "global_calls": self.global_calls,
            "global_callers": [
                {"principal_arn": arn, "source_ip": ip, "count": c.count, "last_seen": c.last_seen}
                for arn, ip, c in self.ranked_callers()
            ],
            "global_callers_other": self.callers_other,
            "errors": self.errors,
            "queries": queries(region),
        }


def _str(record: dict[str, Any], *path: str) -> str | None:
    node: Any = record
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node if isinstance(node, str) and node else None


def normal_host(host: str | None) -> str:
    """Fold case, a trailing dot and the default port, which all name the same endpoint."""
    if not host:
        return UNKNOWN
    host = host.strip().lower()
    if host.endswith(":443"):
        host = host[:-4]
    return host.rstrip(".") or UNKNOWN


def principal_of(record: dict[str, Any]) -> str:
    """The ARN, or for web-identity and SAML callers (no ARN) their type and id."""
    arn = _str(record, "userIdentity", "arn")
    if arn:
        return arn
    kind = _str(record, "userIdentity", "type")
    ident = _str(record, "userIdentity", "principalId") or _str(record, "userIdentity", "userName")
    if kind and ident:
        return f"{kind}:{ident}"
    return ident or UNKNOWN


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


def queries(region: str) -> dict[str, str]:
    """Queries that find the same global-endpoint callers in CloudWatch Logs and Athena."""
    logs_insights = "\n".join(
        [
            f"# Callers of the global STS endpoint ({GLOBAL_HOST}). CloudTrail logs them in",
            f"# {GLOBAL_LOG_REGION}: query the log group that receives {GLOBAL_LOG_REGION} events.",
            f"# Only calls served in {region}: add",
            f'#   | filter additionalEventData.awsServingRegion = "{region}"',
            f'filter eventSource = "{STS_SOURCE}"',
            f'  and tlsDetails.clientProvidedHostHeader = "{GLOBAL_HOST}"',
            "| stats count(*) as calls, max(eventTime) as lastSeen"
            " by userIdentity.arn, sourceIPAddress",
            "| sort calls desc",
        ]
    )
    athena = "\n".join(
        [
            f"-- Callers of the global STS endpoint ({GLOBAL_HOST}); CloudTrail logs them in",
            f"-- {GLOBAL_LOG_REGION}. Replace cloudtrail_logs with your CloudTrail table.",
            f"-- Only calls served in {region}: add to WHERE",
            f"--   AND json_extract_scalar(additionaleventdata, '$.awsServingRegion') = '{region}'",
            "SELECT useridentity.arn AS principal_arn,",
            "       sourceipaddress AS source_ip,",
            "       count(*) AS calls,",
            "       max(eventtime) AS last_seen",
            "FROM cloudtrail_logs",
            f"WHERE eventsource = '{STS_SOURCE}'",
            f"  AND tlsdetails.clientprovidedhostheader = '{GLOBAL_HOST}'",
            f"  AND awsregion = '{GLOBAL_LOG_REGION}'",
            "GROUP BY useridentity.arn, sourceipaddress",
            "ORDER BY calls DESC",
        ]
    )
    return {
        "region": region,
        "logged_in": GLOBAL_LOG_REGION,
        "logs_insights": logs_insights,
        "athena": athena,
    }


def summarise(paths: Sequence[str]) -> Summary:
    """Read every source once; report each bad one on stderr as it happens and go on."""
    summary = Summary()
    for item in iter_sources(paths):
        if isinstance(item, InputProblem):
            _error(summary, item.name, item.message, 0)
            continue
        counted = 0
        try:
            for record in read_records(item):
                summary.add(record)
                counted += 1
        except SourceError as e:
            note = f" ({counted} records before it were counted)" if counted else ""
            _error(summary, item.name, f"{e}{note}", counted)
        else:
            summary.files_read += 1
    return summary


def _error(summary: Summary, source: str, message: str, counted: int) -> None:
    print(f"sts-agent: audit: {source}: {message}", file=sys.stderr)
    summary.errors.append({"source": source, "error": message, "records_counted": counted})


def _table(title: str, counter: BoundedCounter, flag: str = "") -> Iterator[str]:
    """Top rows of one counter; `flag` marks the global host where hosts are listed."""
    rows = counter.ranked()
    if not rows:
        return
    yield ""
    yield title
    width = max(30, *(len(k) for k, _ in rows[:_TOP]))
    for key, n in rows[:_TOP]:
        mark = f"  <- {flag}" if flag and key == GLOBAL_HOST else ""
        yield f"  {key:<{width}}  {n:>9}{mark}"
    rest = sum(n for _, n in rows[_TOP:]) + counter.other
    if rest:
        yield f"  … {rest} more calls under other keys (all in --json)"


def render(summary: Summary, region: str) -> str:
    """The human report; the same facts as --json, trimmed to the top rows."""
    s = summary
    lines = [
        f"CloudTrail STS audit: {s.files_read} file(s) read, {len(s.errors)} problem(s); "
        f"{s.events} events, {s.sts_events} from {STS_SOURCE}",
    ]
    if s.first_seen:
        lines.append(f"STS events from {s.first_seen} to {s.last_seen}")
    lines += _table("Called host", s.by_host, flag="global endpoint")
    if s.sts_events:
        lines.append(
            f"Through a VPC endpoint: {s.with_vpce} with vpcEndpointId, {s.without_vpce} without"
        )
    lines += _table("Endpoint type (additionalEventData)", s.by_endpoint_type)
    lines += _table("Serving region (additionalEventData)", s.by_serving_region)
    lines += _table("Event name", s.by_event_name)
    lines += _table("Principal", s.by_principal)
    lines += _table("Source IP", s.by_source_ip)
    lines.append("")
    callers = s.ranked_callers()
    if not callers:
        lines.append(f"No calls to the global endpoint {GLOBAL_HOST}.")
    else:
        lines.append(
            f"Still calling the global endpoint {GLOBAL_HOST}: {s.global_calls} calls "
            f"from {len(callers)} principal/IP pair(s), most first"
        )
        lines.append(f"  {'calls':>9}  {'last seen':<20}  {'source IP':<15}  principal")
        for arn, ip, c in callers[:_TOP_CALLERS]:
            lines.append(f"  {c.count:>9}  {c.last_seen:<20}  {ip:<15}  {arn}")
        if len(callers) > _TOP_CALLERS:
            lines.append(f"  … {len(callers) - _TOP_CALLERS} more caller(s) in --json")
        if s.callers_other:
            lines.append(f"  … {s.callers_other} calls from callers beyond the first {MAX_KEYS}")
    if s.errors:
        lines.append(f"{len(s.errors)} input(s) could not be read fully (see the lines above).")
    q = queries(region)
    lines += [
        "",
        f"To find these callers in AWS (global-endpoint calls are logged in {GLOBAL_LOG_REGION}):",
        "",
        "CloudWatch Logs Insights:",
        *(f"  {line}" for line in q["logs_insights"].splitlines()),
        "",
        "Athena:",
        *(f"  {line}" for line in q["athena"].splitlines()),
    ]
    return "\n".join(lines)


def run_cloudtrail_audit(
    paths: Sequence[str], *, as_json: bool = False, region: str | None = None
) -> int:
    """CLI entry: 0 no global-endpoint callers, 1 some found, 2 nothing readable."""
    try:
        resolved = resolve_region(region)
    except ValueError as e:
        print(f"sts-agent: audit: {e}", file=sys.stderr)
        return EXIT_ERROR
    summary = summarise(paths)
    if as_json:
        print(json.dumps(summary.as_json(resolved), indent=2))
    else:
        print(render(summary, resolved))
    if summary.files_read == 0 and summary.events == 0:
        return EXIT_ERROR
    return EXIT_FOUND if summary.global_calls else EXIT_OK
