"""`--athena-table`: the global-caller summary computed by Athena, where the logs live.

At organisation scale CloudTrail is terabytes in S3; Athena aggregates it there and
only the summary rows come back: one per caller (an assumed role's sessions under its
role, as in the report), host, serving region and source IP. Each row is folded into
the same Summary as a local file would be, weighted by its `calls`, so the report, its
caller grouping and the exit code are the same.
The wait is a bounded poll (growing sleeps, a deadline, then StopQueryExecution).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.audit.cloudtrail_queries import STS_SOURCE, athena_summary_sql
from agent.audit.cloudtrail_read import SourceError
from agent.redact import describe_aws_error

#: The SELECT's columns, by name (rows are read by the names Athena reports).
ROW_COLUMNS = (
    "identity_type",
    "caller",
    "identity_provider",
    "account_id",
    "host",
    "endpoint_type",
    "served_in",
    "source_ip",
    "event_name",
    "arn",
    "issuer_arn",
    "user_name",
    "invoked_by",
    "calls",
    "first_seen",
    "last_seen",
)
MAX_ROWS = 100_000
_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_RUNNING = ("QUEUED", "RUNNING")


@dataclass(frozen=True)
class AthenaOptions:
    table: str
    workgroup: str | None = None
    database: str | None = None
    output: str | None = None  # s3://bucket/prefix/ for results (else the workgroup's)
    timeout: float = 300.0
    first_poll: float = 0.2


def check_table(table: str) -> str:
    """A table name safe to put into SQL: `name` or `database.name`."""
    if not _TABLE_RE.match(table):
        raise ValueError(f"--athena-table {table!r}: expected NAME or DATABASE.NAME")
    return table


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _start(client: Any, opts: AthenaOptions, sql: str) -> str:
    args: dict[str, Any] = {"QueryString": sql}
    if opts.workgroup:
        args["WorkGroup"] = opts.workgroup
    if opts.database:
        args["QueryExecutionContext"] = {"Database": opts.database}
    if opts.output:
        args["ResultConfiguration"] = {"OutputLocation": opts.output}
    qid: str = client.start_query_execution(**args)["QueryExecutionId"]
    return qid


def _wait(client: Any, qid: str, opts: AthenaOptions) -> None:
    deadline = time.monotonic() + opts.timeout
    pause = opts.first_poll
    while True:
        status = client.get_query_execution(QueryExecutionId=qid)["QueryExecution"]["Status"]
        state = status.get("State", "?")
        if state == "SUCCEEDED":
            return
        if state not in _RUNNING:
            reason = status.get("StateChangeReason", "")
            raise SourceError(f"query {qid} {state}" + (f": {reason}" if reason else ""))
        if time.monotonic() + pause > deadline:
            client.stop_query_execution(QueryExecutionId=qid)
            raise SourceError(f"query {qid} still {state} after {opts.timeout:.0f} s; stopped")
        time.sleep(pause)
        pause = min(pause * 2, 5.0)


def _rows(client: Any, qid: str) -> Iterator[dict[str, str | None]]:
    names: list[str] | None = None
    pages = client.get_paginator("get_query_results").paginate(QueryExecutionId=qid)
    for page in pages:
        result = page["ResultSet"]
        if names is None:
            names = [c["Name"] for c in result["ResultSetMetadata"]["ColumnInfo"]]
            missing = [c for c in ROW_COLUMNS if c not in names]
            if missing:
                raise SourceError(f"query {qid}: result lacks column(s) {', '.join(missing)}")
        for row in result["Rows"]:
            values = [d.get("VarCharValue") for d in row["Data"]]
            if values == names:  # Athena repeats the header as the first row
                continue
            yield dict(zip(names, values, strict=False))


def record_of(row: dict[str, str | None]) -> dict[str, Any]:
    """A result row as the CloudTrail record it stands for.

    `caller` decided the grouping; `arn` and the other samples let
    agent.audit.cloudtrail_identity name it as it names a record from a file.
    """
    ident: dict[str, Any] = {
        "type": row["identity_type"],
        "arn": row["arn"],
        "userName": row["user_name"],
        "identityProvider": row["identity_provider"],
        "invokedBy": row["invoked_by"],
        "accountId": row["account_id"],
        "sessionContext": {"sessionIssuer": {"arn": row["issuer_arn"]}},
        "principalId": row["caller"],
    }
    return {
        "eventSource": STS_SOURCE,
        "eventName": row["event_name"],
        "eventTime": row["last_seen"],
        "sourceIPAddress": row["source_ip"],
        "userIdentity": ident,
        "tlsDetails": {"clientProvidedHostHeader": row["host"]},
        "additionalEventData": {
            "RequestDetails": {
                "endpointType": row["endpoint_type"],
                "awsServingRegion": row["served_in"],
            }
        },
    }


def summarise_athena(
    opts: AthenaOptions,
    summary: Any,
    since_ms: int | None,
    report_error: Callable[[Any, str, str, int], None],
) -> None:
    """Run the query, wait, and fold its rows into `summary`; failures are reported."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    name = f"athena:{opts.table}"
    counted = 0
    try:
        client = boto3.client("athena")
        sql = athena_summary_sql(check_table(opts.table), _iso(since_ms) if since_ms else None)
        qid = _start(client, opts, sql)
        _wait(client, qid, opts)
        for row in _rows(client, qid):
            if counted >= MAX_ROWS:
                raise SourceError(f"more than {MAX_ROWS} result rows; the first were counted")
            try:
                calls = int(row["calls"] or "")
            except ValueError:
                bad = f"row {counted + 1}: calls={row['calls']!r} is not a number"
                raise SourceError(bad) from None
            summary.add(record_of(row), n=calls, first=row["first_seen"])
            counted += 1
        summary.files_read += 1
    except SourceError as e:
        report_error(summary, name, str(e), counted)
    except ClientError as e:
        err = e.response.get("Error", {})
        message = f"Athena failed: {err.get('Code', '?')} {err.get('Message', '')}"
        report_error(summary, name, message, counted)
    except (BotoCoreError, ValueError) as e:
        report_error(summary, name, f"Athena failed: {describe_aws_error(e)}", counted)
