"""`sts-agent audit cloudtrail`: the human report and the command's run, apart from the
counting in agent.audit.cloudtrail. Printing stops quietly when the reader goes away
(`... | head`), with the exit status of a process a closed pipe ended."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from agent.audit.cloudtrail import (
    EXIT_ERROR,
    MAX_KEYS,
    BoundedCounter,
    Summary,
    _error,
    global_signal,
    printable,
    resolve_region,
    summarise,
)
from agent.audit.cloudtrail_logs import parse_since
from agent.audit.cloudtrail_queries import (
    GLOBAL_HOST,
    GLOBAL_LOG_REGION,
    STS_SOURCE,
    TITLES,
    queries,
)

_TOP = 15  # rows per table in the human report
_TOP_CALLERS = 50
EXIT_PIPE_CLOSED = 128 + 13  # what a shell reports for a process SIGPIPE ended


def _table(title: str, counter: BoundedCounter, flag: str = "") -> Iterator[str]:
    """Top rows of one counter; `flag` marks the global host where hosts are listed."""
    rows = [(printable(k), n, k) for k, n in counter.ranked()]
    if not rows:
        return
    yield ""
    yield title
    width = min(60, max(30, *(len(k) for k, _, _ in rows[:_TOP])))  # long keys overflow
    for key, n, raw in rows[:_TOP]:
        mark = f"  <- {flag}" if flag and global_signal(None, raw) else ""
        yield f"  {key:<{width}}  {n:>9}{mark}"
    rest = sum(n for _, n, _ in rows[_TOP:]) + counter.other
    if rest:
        yield f"  … {rest} more calls under other keys (all in --json)"


def _split(counts: dict[str, int]) -> str:
    names = {"us_east_1": "us-east-1", "in_region": "in-region", "unknown": "unrecorded"}
    return ", ".join(f"{names[k]} {n}" for k, n in counts.items() if n) or "-"


def _caller_lines(s: Summary) -> Iterator[str]:
    callers = s.ranked_callers()
    if not callers:
        yield f"No calls to the global endpoint {GLOBAL_HOST}."
        return
    served = s.global_served
    yield (
        f"Still calling the global endpoint: {s.global_calls} calls from {len(callers)} "
        f"caller(s). Served in us-east-1 (cross-region dependency): {served['us_east_1']}; "
        f"in-region (fine for now, still to move): {served['in_region']}; "
        f"serving region not recorded: {served['unknown']}"
    )
    sig = s.global_by_signal
    yield (
        f"Recognised by: endpointType and host header {sig['endpoint_type_and_host']}, "
        f"endpointType alone {sig['endpoint_type']}, host header alone {sig['host_header']}"
    )
    shown = callers[:_TOP_CALLERS]
    w = max(26, *(len(_split(c.served)) for _, c in shown))  # the caller column lines up
    yield f"  {'calls':>9}  {'last seen':<20}  {'served':<{w}}  caller"
    for name, c in shown:
        seen = printable(c.last_seen)
        yield f"  {c.count:>9}  {seen:<20}  {_split(c.served):<{w}}  {printable(name)}"
        detail = [f"type {printable(c.kind)}"]
        if c.sessions:
            detail.append("sessions " + ", ".join(printable(x) for x in c.sessions))
        detail.append("from " + ", ".join(printable(x) for x in c.ips))
        detail.append("by " + ", ".join(k for k, n in c.signals.items() if n))
        yield f"  {'':>9}  {'':<20}  {'':<{w}}    {'; '.join(detail)}"
    if len(callers) > _TOP_CALLERS:
        yield f"  … {len(callers) - _TOP_CALLERS} more caller(s) in --json"
    if s.callers_other:
        yield f"  … {s.callers_other} calls from callers beyond the first {MAX_KEYS}"


def render(summary: Summary, region: str) -> str:
    """The human report; the same facts as --json, trimmed to the top rows."""
    s = summary
    lines = [
        f"CloudTrail STS audit: {s.files_read} source(s) read, {len(s.errors)} problem(s); "
        f"{s.events} events, {s.sts_events} from {STS_SOURCE}",
    ]
    if s.first_seen:
        lines.append(f"STS events from {printable(s.first_seen)} to {printable(s.last_seen)}")
    lines += _table("Called host", s.by_host, flag="global endpoint")
    if s.sts_events:
        lines.append(
            f"Through a VPC endpoint: {s.with_vpce} with vpcEndpointId, {s.without_vpce} without"
        )
    lines += _table("Endpoint type (RequestDetails.endpointType)", s.by_endpoint_type)
    lines += _table("Serving region (RequestDetails.awsServingRegion)", s.by_serving_region)
    lines += _table("Event name", s.by_event_name)
    lines += _table("Identity type", s.by_identity_type)
    lines += _table("Caller", s.by_principal)
    lines += _table("Source IP", s.by_source_ip)
    lines.append("")
    lines += _caller_lines(s)
    if s.errors:
        lines.append(f"{len(s.errors)} input(s) could not be read fully (see the lines above).")
    q = queries(region)
    lines += ["", f"To find these callers in AWS (global calls are logged in {GLOBAL_LOG_REGION}):"]
    for key, title in TITLES.items():
        lines += ["", f"{title}:", *(f"  {line}" for line in q[key].splitlines())]
    return "\n".join(lines)


def run_cloudtrail_audit(
    paths: Sequence[str],
    *,
    as_json: bool = False,
    region: str | None = None,
    since: str | None = None,
    athena: Any = None,
) -> int:
    """CLI entry; see the module docstring for the exit codes."""
    try:
        resolved = resolve_region(region)
        since_ms = parse_since(since) if since is not None else None
    except ValueError as e:
        print(f"sts-agent: audit: {e}", file=sys.stderr)
        return EXIT_ERROR
    summary = summarise(paths, since_ms)
    if athena is not None:
        from agent.audit.cloudtrail_athena import summarise_athena

        summarise_athena(athena, summary, since_ms, _error)
    text = json.dumps(summary.as_json(resolved), indent=2) if as_json else render(summary, resolved)
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Nothing more can be written; point stdout at /dev/null so the interpreter's
        # final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE_CLOSED
    return summary.exit_code()
