"""CloudTrail events from a CloudWatch Logs group (`logs://GROUP`), via FilterLogEvents.

A trail that delivers to CloudWatch Logs writes one event per log event. The server
gets a coarse filter (the quoted term `"sts.amazonaws.com"`, which every STS event
contains), so only candidates cross the network; the exact test (`eventSource`) is
the audit's own, on the client. botocore's paginator follows `nextToken`, and its
usual chains supply credentials, region and the endpoint URL. botocore names the
service-specific variable after the service id, `AWS_ENDPOINT_URL_CLOUDWATCH_LOGS`;
the shorter `AWS_ENDPOINT_URL_LOGS` is honoured too when that one is unset.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from typing import Any

from agent.audit.cloudtrail_read import (
    MAX_VALUE,
    InputProblem,
    RecordSource,
    SourceError,
    unwrap,
)
from agent.redact import describe_aws_error

FILTER_PATTERN = '"sts.amazonaws.com"'
DEFAULT_SINCE = "24h"
PAGE = 1000  # events per FilterLogEvents call
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_MAX_DAYS = 3660


def parse_since(text: str, now: float | None = None) -> int:
    """`24h`, `30m`, `7d`... as the start time in epoch milliseconds."""
    m = _DURATION.match(text.strip())
    if not m:
        raise ValueError(f"--since {text!r}: expected a duration like 30m, 24h or 7d")
    seconds = int(m.group(1)) * _UNIT_S[m.group(2)]
    if seconds <= 0 or seconds > _MAX_DAYS * 86400:
        raise ValueError(f"--since {text!r}: must be between 1s and {_MAX_DAYS} days")
    return int(((time.time() if now is None else now) - seconds) * 1000)


def log_group_source(url: str, since_ms: int | None) -> RecordSource | InputProblem:
    group = url[len("logs://") :].strip("/")
    if not group:
        return InputProblem(url, "no log group name; expected logs://LOG_GROUP")
    start = parse_since(DEFAULT_SINCE) if since_ms is None else since_ms
    return RecordSource(url, lambda: _events(group, start))


def _client_error(e: Any) -> SourceError:
    err = e.response.get("Error", {})
    return SourceError(f"FilterLogEvents failed: {err.get('Code', '?')} {err.get('Message', '')}")


def _endpoint_alias() -> str | None:
    if os.environ.get("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS"):
        return None
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    return os.environ.get("AWS_ENDPOINT_URL_LOGS") or None


def _events(group: str, start_ms: int) -> Iterator[dict[str, Any] | InputProblem]:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        pages = (
            boto3.client("logs", endpoint_url=_endpoint_alias())
            .get_paginator("filter_log_events")
            .paginate(
                logGroupName=group,
                startTime=start_ms,
                filterPattern=FILTER_PATTERN,
                PaginationConfig={"PageSize": PAGE},
            )
        )
        for page in pages:
            for ev in page.get("events", []):
                try:
                    yield _decode(ev.get("message", ""), ev.get("eventId", "?"))
                except SourceError as e:  # that event alone, as a bad file is for a tree
                    yield InputProblem(group, str(e))
    except ClientError as e:
        raise _client_error(e) from None
    except BotoCoreError as e:
        raise SourceError(f"FilterLogEvents failed: {describe_aws_error(e)}") from None


def _decode(message: str, event_id: str) -> dict[str, Any]:
    """One log event as a record; a message that is not one is reported and skipped."""
    if len(message) > MAX_VALUE:
        raise SourceError(f"log event {event_id}: over {MAX_VALUE >> 20} MiB")
    try:
        record = json.loads(message)
    except RecursionError:
        raise SourceError(f"log event {event_id}: JSON nested too deeply") from None
    except ValueError as e:
        raise SourceError(f"log event {event_id}: not JSON ({e})") from None
    if not isinstance(record, dict):
        raise SourceError(f"log event {event_id}: not a JSON object")
    return unwrap(record) or record
