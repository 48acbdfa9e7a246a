"""The CloudTrail audit on events in today's format, from a file, a CloudWatch Logs group
and Athena, the last two served by moto's server on loopback."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.audit.cloudtrail_athena import ROW_COLUMNS
from tests.support.cloudtrail import (
    ACCOUNT,
    FAKE_KEY,
    FAKE_SECRET,
    IAM_A,
    clean_env,
    event,
    run_cli,
    run_json,
    write_doc,
)
from tests.support.moto_http import moto_http_server

OIDC = f"arn:aws:iam::{ACCOUNT}:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE0D1"
SAML = f"arn:aws:iam::{ACCOUNT}:saml-provider/Corp"
LEGACY = IAM_A  # arn:aws:iam::<account>:role/legacy-app
IRSA = f"system:serviceaccount:payments:api via {OIDC}"
SAML_USER = f"alice@example.com via {SAML}"
CI_BOT = f"arn:aws:iam::{ACCOUNT}:user/ci-bot"
BOB = f"arn:aws:sts::{ACCOUNT}:federated-user/bob"
ROOT = f"arn:aws:iam::{ACCOUNT}:root"


def _as(ev: dict[str, Any], ident: dict[str, Any]) -> dict[str, Any]:
    ev["userIdentity"] = {"accountId": ACCOUNT, **ident}
    return ev


def today_sample() -> list[dict[str, Any]]:
    """Every userIdentity type, global and regional calls, written as CloudTrail does now."""
    glob: dict[str, Any] = {"endpoint_type": "global"}
    role = {
        "type": "AssumedRole",
        "principalId": "AROAEXAMPLE:i-0aaa",
        "sessionContext": {"sessionIssuer": {"type": "Role", "arn": LEGACY}},
    }
    return [
        # An assumed role, two sessions, served in us-east-1 (an opt-in region's caller).
        _as(
            event(host="sts.amazonaws.com", serving_region="us-east-1", **glob),
            {**role, "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/legacy-app/i-0aaa"},
        ),
        _as(
            event(host="sts.amazonaws.com", ip="10.0.9.9", serving_region="us-east-1", **glob),
            {**role, "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/legacy-app/i-0abb"},
        ),
        # EKS IRSA: no arn; served in-region, host header in the sts-global form.
        _as(
            event(
                host="sts-global.eu-west-1.amazonaws.com",
                name="AssumeRoleWithWebIdentity",
                serving_region="eu-west-1",
                **glob,
            ),
            {
                "type": "WebIdentityUser",
                "principalId": f"{OIDC}:sts.amazonaws.com:system:serviceaccount:payments:api",
                "userName": "system:serviceaccount:payments:api",
                "identityProvider": OIDC,
            },
        ),
        # SAML, endpointType alone (no tlsDetails at all).
        _as(
            event(host=None, name="AssumeRoleWithSAML", serving_region="us-east-1", **glob),
            {
                "type": "SAMLUser",
                "principalId": "SAMPLEabcd/alice@example.com",
                "userName": "alice@example.com",
                "identityProvider": SAML,
            },
        ),
        # An older event: host header only, no RequestDetails.
        _as(
            event(host="sts.amazonaws.com", name="GetSessionToken"),
            {"type": "IAMUser", "arn": CI_BOT, "userName": "ci-bot"},
        ),
        _as(
            event(host="sts-global.ap-southeast-2.amazonaws.com", serving_region="ap-southeast-2"),
            {"type": "FederatedUser", "arn": BOB, "principalId": f"{ACCOUNT}:bob"},
        ),
        _as(
            event(host="sts.amazonaws.com", serving_region="eu-west-1", **glob),
            {"type": "Root", "arn": ROOT, "principalId": ACCOUNT},
        ),
        _as(
            event(host=None, ip="ec2.amazonaws.com", serving_region="us-east-1", **glob),
            {"type": "AWSService", "invokedBy": "ec2.amazonaws.com"},
        ),
        _as(
            event(host="sts.amazonaws.com", serving_region="eu-west-1", **glob),
            {"type": "AWSAccount", "accountId": "111122223333", "principalId": "AIDAEXAMPLE"},
        ),
        # Regional calls: none of these callers may be listed as global.
        _as(
            event(
                host="sts.eu-west-1.amazonaws.com",
                endpoint_type="regional",
                serving_region="eu-west-1",
                vpce="vpce-0abc",
            ),
            {"type": "IAMUser", "arn": f"arn:aws:iam::{ACCOUNT}:user/regional-only"},
        ),
        _as(
            event(host="sts.eu-west-1.amazonaws.com", endpoint_type="regional"),
            {
                "type": "WebIdentityUser",
                "userName": "system:serviceaccount:ok:good",
                "identityProvider": OIDC,
            },
        ),
    ]


def check_today(doc: dict[str, Any]) -> None:
    """What every source must report for today_sample()."""
    callers = {c["caller"]: c for c in doc["global_callers"]}
    assert set(callers) == {
        LEGACY,
        IRSA,
        SAML_USER,
        CI_BOT,
        BOB,
        ROOT,
        "service ec2.amazonaws.com",
        "account 111122223333",
    }
    assert not any("regional-only" in c or "ok:good" in c for c in callers)
    assert callers[LEGACY]["count"] == 2
    assert sorted(callers[LEGACY]["sessions"]) == ["i-0aaa", "i-0abb"]
    assert callers[LEGACY]["served"] == {"us_east_1": 2}
    assert callers[IRSA]["identity_type"] == "WebIdentityUser"
    assert callers[IRSA]["served"] == {"in_region": 1}
    assert callers[IRSA]["signals"] == {"endpoint_type_and_host": 1}
    assert callers[SAML_USER]["signals"] == {"endpoint_type": 1}
    assert callers[CI_BOT]["signals"] == {"host_header": 1}
    assert callers[CI_BOT]["served"] == {"unknown": 1}
    assert callers[BOB]["signals"] == {"host_header": 1}
    assert doc["global_served"] == {"in_region": 4, "us_east_1": 4, "unknown": 1}
    assert doc["global_by_signal"] == {
        "endpoint_type_and_host": 5,
        "endpoint_type": 2,
        "host_header": 2,
    }


def test_today_format_from_a_file(tmp_path: Path) -> None:
    f = write_doc(tmp_path / "today.json", today_sample())
    code, doc, stderr = run_json(str(f))
    assert code == 3, stderr  # some global calls were served in us-east-1
    check_today(doc)
    assert doc["global_calls"] == 9
    assert doc["by_endpoint_type"] == {"global": 7, "regional": 2}
    assert doc["by_serving_region"]["us-east-1"] == 4
    proc = run_cli(str(f))
    assert proc.returncode == 3
    out = proc.stdout
    assert "Served in us-east-1 (cross-region dependency): 4; in-region" in out
    assert IRSA in out and SAML_USER in out and "service ec2.amazonaws.com" in out
    assert "sessions i-0aaa, i-0abb" in out


def test_exit_1_when_every_global_call_was_served_in_region(tmp_path: Path) -> None:
    ev = event(host="sts.amazonaws.com", endpoint_type="global", serving_region="eu-west-1")
    code, doc, _ = run_json(str(write_doc(tmp_path / "a.json", [ev])))
    assert code == 1 and doc["global_served"]["in_region"] == 1


# --- CloudWatch Logs -----------------------------------------------------------------


@pytest.fixture()
def moto_url() -> Iterator[str]:
    with moto_http_server() as url:
        # moto keeps its backends per process: start each test from an empty account.
        req = urllib.request.Request(f"{url}/moto-api/reset", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass
        yield url


def _env(url: str, **extra: str) -> dict[str, str]:
    return clean_env(
        AWS_ACCESS_KEY_ID=FAKE_KEY,
        AWS_SECRET_ACCESS_KEY=FAKE_SECRET,
        AWS_DEFAULT_REGION="us-east-1",
        # Any client the variable under test fails to redirect lands on a closed loopback
        # port, never on AWS.
        AWS_ENDPOINT_URL="http://127.0.0.1:9",
        **extra,
    )


def _client(service: str, url: str) -> Any:
    import boto3

    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=FAKE_KEY,
        aws_secret_access_key=FAKE_SECRET,
    )


def test_logs_group_in_today_format(moto_url: str) -> None:
    logs = _client("logs", moto_url)
    logs.create_log_group(logGroupName="trail")
    logs.create_log_stream(logGroupName="trail", logStreamName=f"{ACCOUNT}_CloudTrail_us-east-1")
    now = int(time.time() * 1000)
    records = today_sample()
    noise = [
        event(host=None, source="ec2.amazonaws.com", name="DescribeInstances"),
        # Mentions the STS name, so the coarse server filter passes it; the client drops it.
        _as(event(host=None, source="iam.amazonaws.com"), {"invokedBy": "sts.amazonaws.com"}),
    ]
    old = event(host="sts.amazonaws.com", arn=f"arn:aws:iam::{ACCOUNT}:user/too-old")
    batch = [
        {"timestamp": now - 3600_000 + i, "message": json.dumps(r)}
        for i, r in enumerate(records + noise)
    ]
    batch.insert(0, {"timestamp": now - 48 * 3600_000, "message": json.dumps(old)})
    logs.put_log_events(
        logGroupName="trail", logStreamName=f"{ACCOUNT}_CloudTrail_us-east-1", logEvents=batch
    )
    env = _env(moto_url, AWS_ENDPOINT_URL_CLOUDWATCH_LOGS=moto_url)
    code, doc, stderr = run_json("logs://trail", "--since", "24h", env=env)
    assert code == 3, stderr
    assert doc["errors"] == []
    check_today(doc)
    short = _env(moto_url, AWS_ENDPOINT_URL_LOGS=moto_url)
    assert run_json("logs://trail", env=short)[1]["global_callers"] == doc["global_callers"]
    assert doc["global_calls"] == 9
    assert doc["events"] == len(records) + 1  # the EC2 event never matched the filter
    assert doc["sts_events"] == len(records)
    assert not any("too-old" in c["caller"] for c in doc["global_callers"])

    code, doc, _ = run_json("logs://no-such-group", env=env)
    assert code == 2
    assert "ResourceNotFoundException" in doc["errors"][0]["error"]


def test_logs_pages_are_followed(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.audit import cloudtrail_logs
    from agent.audit.cloudtrail import summarise

    logs = _client("logs", moto_url)
    logs.create_log_group(logGroupName="g")
    logs.create_log_stream(logGroupName="g", logStreamName="s")
    now = int(time.time() * 1000)
    records = today_sample()
    batch = [{"timestamp": now - 1000 + i, "message": json.dumps(r)} for i, r in enumerate(records)]
    logs.put_log_events(logGroupName="g", logStreamName="s", logEvents=batch)
    for k, v in _env(moto_url, AWS_ENDPOINT_URL_CLOUDWATCH_LOGS=moto_url).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(cloudtrail_logs, "PAGE", 2)  # 11 events: six pages
    s = summarise(["logs://g"], cloudtrail_logs.parse_since("1h"))
    assert s.errors == [] and s.sts_events == len(records)
    assert s.global_calls == 9


def test_since_must_be_a_duration() -> None:
    proc = run_cli("logs://trail", "--since", "yesterday")
    assert proc.returncode == 2
    assert "--since 'yesterday'" in proc.stderr and proc.stdout == ""


# --- Athena --------------------------------------------------------------------------


def _athena_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Result rows as Athena would return for the summary query on these records."""
    rows = [{"Data": [{"VarCharValue": c} for c in ROW_COLUMNS]}]  # header row first
    for r in records:
        ident, details = (
            r["userIdentity"],
            r.get("additionalEventData", {}).get("RequestDetails", {}),
        )
        issuer = ident.get("sessionContext", {}).get("sessionIssuer", {}).get("arn")
        values = {
            "identity_type": ident.get("type"),
            "caller": issuer
            or ident.get("arn")
            or ident.get("userName")
            or ident.get("invokedBy")
            or ident.get("principalId"),
            "arn": ident.get("arn"),
            "issuer_arn": issuer,
            "user_name": ident.get("userName"),
            "identity_provider": ident.get("identityProvider"),
            "invoked_by": ident.get("invokedBy"),
            "account_id": ident.get("accountId"),
            "host": r.get("tlsDetails", {}).get("clientProvidedHostHeader"),
            "endpoint_type": details.get("endpointType"),
            "served_in": details.get("awsServingRegion"),
            "source_ip": r["sourceIPAddress"],
            "event_name": r["eventName"],
            "calls": "1",
            "first_seen": r["eventTime"],
            "last_seen": r["eventTime"],
        }
        # Athena leaves a NULL cell without VarCharValue.
        rows.append(
            {
                "Data": [
                    {} if values[c] is None else {"VarCharValue": values[c]} for c in ROW_COLUMNS
                ]
            }
        )
    return rows


def _seed_athena(url: str, rows: list[dict[str, Any]]) -> None:
    body = {
        "region": "us-east-1",
        "results": [
            {"rows": rows, "column_info": [{"Name": c, "Type": "varchar"} for c in ROW_COLUMNS]}
        ],
    }
    req = urllib.request.Request(
        f"{url}/moto-api/static/athena/query-results",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 201


def test_athena_query_and_rows(moto_url: str) -> None:
    global_only = [r for r in today_sample() if "regional" not in json.dumps(r)]
    rows = _athena_rows(global_only)
    rows[1]["Data"][ROW_COLUMNS.index("calls")] = {"VarCharValue": "40"}  # one aggregated row
    _seed_athena(moto_url, rows)
    env = _env(moto_url, AWS_ENDPOINT_URL_ATHENA=moto_url)
    code, doc, stderr = run_json(
        "--athena-table",
        "trails.cloudtrail_logs",
        "--athena-workgroup",
        "primary",
        "--athena-database",
        "trails",
        "--athena-output",
        "s3://athena-results/sts/",
        "--since",
        "7d",
        env=env,
    )
    assert code == 3, stderr
    assert doc["errors"] == [] and doc["files_read"] == 1
    callers = {c["caller"]: c for c in doc["global_callers"]}
    assert callers[f"arn:aws:iam::{ACCOUNT}:role/legacy-app"]["count"] == 41
    assert doc["global_calls"] == 9 + 39
    assert callers[IRSA]["served"] == {"in_region": 1}
    assert callers[SAML_USER]["signals"] == {"endpoint_type": 1}

    athena = _client("athena", moto_url)
    (qid,) = athena.list_query_executions(WorkGroup="primary")["QueryExecutionIds"]
    q = athena.get_query_execution(QueryExecutionId=qid)["QueryExecution"]
    sql = q["Query"]
    assert q["QueryExecutionContext"]["Database"] == "trails"
    assert q["ResultConfiguration"]["OutputLocation"].startswith("s3://athena-results/sts/")
    assert "FROM trails.cloudtrail_logs" in sql
    assert (
        "json_extract_scalar(additionaleventdata, '$.RequestDetails.endpointType') = 'global'"
        in sql
    )
    assert "'$.RequestDetails.awsServingRegion') AS served_in" in sql
    assert "LIKE 'sts-global.%'" in sql
    assert "AND eventtime >= '20" in sql
    assert [ln.split(" AS ")[-1].rstrip(",") for ln in sql.splitlines() if " AS " in ln] == list(
        ROW_COLUMNS
    )


def test_athena_bad_table_and_bad_rows(moto_url: str) -> None:
    env = _env(moto_url, AWS_ENDPOINT_URL_ATHENA=moto_url)
    code, doc, _ = run_json("--athena-table", "x; DROP TABLE y", env=env)
    assert code == 2 and "expected NAME or DATABASE.NAME" in doc["errors"][0]["error"]
    rows = _athena_rows([today_sample()[0]])
    rows[1]["Data"][ROW_COLUMNS.index("calls")] = {"VarCharValue": "many"}
    _seed_athena(moto_url, rows)
    code, doc, _ = run_json("--athena-table", "cloudtrail_logs", env=env)
    assert code == 2
    assert doc["errors"][0]["error"] == "row 1: calls='many' is not a number"


def test_readme_shows_the_generated_queries() -> None:
    """The README's Audits section prints every query the audit generates, verbatim."""
    from agent.audit.cloudtrail_queries import (
        TABLE_PLACEHOLDER,
        TITLES,
        athena_summary_sql,
        queries,
    )
    from testbed import ROOT

    readme = (ROOT / "README.md").read_text()
    audits = readme[readme.index("## Audits") : readme.index("## Security")]
    dedented = "\n".join(line.removeprefix("  ") for line in audits.splitlines())
    q = queries("<region>")
    for key, title in TITLES.items():
        assert f"<summary>{title}</summary>\n\n```\n{q[key]}\n```" in dedented, key
    summary = athena_summary_sql(TABLE_PLACEHOLDER)
    assert f"<summary>{SUMMARY_TITLE}</summary>\n\n```\n{summary}\n```" in dedented
    for code in ("**0**", "**1**", "**2**", "**3**"):
        assert code in audits


SUMMARY_TITLE = "Athena: the summary `--athena-table` runs (TABLE in place of cloudtrail_logs)"


def test_athena_summary_is_one_row_per_caller() -> None:
    """Sessions of one role are one group: the GROUP BY holds the caller, never the ARN."""
    from agent.audit.cloudtrail_queries import athena_summary_sql

    sql = athena_summary_sql("t")
    names = [ln.split(" AS ")[-1].rstrip(",") for ln in sql.splitlines() if " AS " in ln]
    group = sql.split("GROUP BY ")[1].splitlines()[0]
    grouped = {names[int(i) - 1] for i in group.split(", ")}
    assert "caller" in grouped and not grouped & {"arn", "issuer_arn", "user_name"}
    assert "arbitrary(useridentity.arn) AS arn" in sql
    assert "useridentity.invokedby, useridentity.principalid) AS caller" in sql


def test_exports_that_wrap_the_event(tmp_path: Path) -> None:
    """`aws cloudtrail lookup-events` output and EventBridge events, one per line."""
    sample = today_sample()
    lookup = {
        "Events": [
            {"EventId": f"e{i}", "EventName": r["eventName"], "CloudTrailEvent": json.dumps(r)}
            for i, r in enumerate(sample)
        ],
        "NextToken": "x",
    }
    (tmp_path / "lookup.json").write_text(json.dumps(lookup))
    bridge = [
        {
            "version": "0",
            "detail-type": "AWS API Call via CloudTrail",
            "source": "aws.sts",
            "detail": r,
        }
        for r in sample
    ]
    (tmp_path / "bridge.json").write_text("\n".join(json.dumps(b) for b in bridge) + "\n")
    for name in ("lookup.json", "bridge.json"):
        code, doc, stderr = run_json(str(tmp_path / name))
        assert code == 3 and doc["errors"] == [], (name, stderr)
        check_today(doc)


def _moto_api(url: str, path: str, body: dict[str, Any]) -> None:
    req = urllib.request.Request(
        f"{url}/moto-api/{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10):
        pass


def test_athena_wait_is_bounded(moto_url: str) -> None:
    """A query that never leaves QUEUED is stopped at the deadline, not waited on forever."""
    model = "athena::execution"
    _moto_api(
        moto_url,
        "state-manager/set-transition",
        {"model_name": model, "transition": {"progression": "manual", "times": 10_000}},
    )
    try:
        env = _env(moto_url, AWS_ENDPOINT_URL_ATHENA=moto_url)
        # run_cli's own timeout turns an unbounded wait into a failure.
        code, doc, _ = run_json(
            "--athena-table", "cloudtrail_logs", "--athena-timeout", "2", env=env
        )
    finally:
        _moto_api(moto_url, "state-manager/unset-transition", {"model_name": model})
    assert code == 2
    assert doc["errors"][0]["error"].endswith("still QUEUED after 2 s; stopped")
    athena = _client("athena", moto_url)
    (qid,) = athena.list_query_executions()["QueryExecutionIds"]
    state = athena.get_query_execution(QueryExecutionId=qid)["QueryExecution"]["Status"]["State"]
    assert state == "CANCELLED"


def test_identity_fallbacks() -> None:
    from agent.audit.cloudtrail_identity import identity_of

    def caller(ident: dict[str, Any]) -> str:
        return identity_of({"userIdentity": ident}).caller

    # No sessionIssuer: the role comes from the assumed-role ARN, path-less.
    assert (
        caller(
            {
                "type": "AssumedRole",
                "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/AWSReservedSSO_A/x@y",
            }
        )
        == f"arn:aws:iam::{ACCOUNT}:role/AWSReservedSSO_A"
    )
    assert caller({"type": "IdentityCenterUser", "onBehalfOf": {"userId": "u-1"}}) == (
        "IdentityCenterUser:u-1"
    )
    assert caller({"type": "WebIdentityUser", "principalId": "oidc:sub"}) == (
        "WebIdentityUser:oidc:sub"
    )
    assert caller({"type": "Root", "accountId": ACCOUNT}) == f"root of account {ACCOUNT}"
    assert caller({"type": "AWSAccount", "accountId": "1", "invokedBy": "x.amazonaws.com"}) == (
        "account 1 via x.amazonaws.com"
    )
    assert caller({}) == "(unknown)"
    assert identity_of({"userIdentity": "not an object"}).caller == "(unknown)"


def test_one_malformed_log_event_is_skipped_not_the_group(
    moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.audit import cloudtrail_logs
    from agent.audit.cloudtrail import summarise

    logs = _client("logs", moto_url)
    logs.create_log_group(logGroupName="bad-one")
    logs.create_log_stream(logGroupName="bad-one", logStreamName="s")
    now = int(time.time() * 1000)
    records = today_sample()
    bad = ['{"eventSource": "sts.amazonaws.com", cut', '["sts.amazonaws.com"]']
    messages = [bad[0], *(json.dumps(r) for r in records), bad[1]]
    batch = [{"timestamp": now - 1000 + i, "message": m} for i, m in enumerate(messages)]
    logs.put_log_events(logGroupName="bad-one", logStreamName="s", logEvents=batch)
    for k, v in _env(moto_url, AWS_ENDPOINT_URL_CLOUDWATCH_LOGS=moto_url).items():
        monkeypatch.setenv(k, v)
    s = summarise(["logs://bad-one"], cloudtrail_logs.parse_since("1h"))
    assert s.sts_events == len(records) and s.global_calls == 9
    assert [e["source"] for e in s.errors] == ["logs://bad-one"] * 2
    assert "not JSON" in s.errors[0]["error"]
    assert "not a JSON object" in s.errors[1]["error"]
