"""`sts-agent audit cloudtrail` against real CloudTrail-shaped files, trees and S3 (moto)."""

from __future__ import annotations

import gzip
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.audit import cloudtrail_read
from agent.audit.cloudtrail import BoundedCounter, Summary, normal_host, queries, summarise
from agent.audit.cloudtrail_read import Source, SourceError, read_records
from testbed import ROOT
from tests.support.cloudtrail import (
    ACCOUNT,
    FAKE_KEY,
    FAKE_SECRET,
    IAM_A,
    IAM_B,
    IAM_C,
    ROLE_A,
    ROLE_B,
    SESSION_TOKEN,
    clean_env,
    event,
    run_cli,
    run_json,
    write_doc,
)
from tests.support.moto_http import moto_http_server
from tests.support.privileges import cli_as_nobody

# --- a realistic tree: us-east-1 holds the global-endpoint calls ---------------------


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    base = tmp_path / "AWSLogs" / ACCOUNT / "CloudTrail"
    write_doc(
        base / "us-east-1/2025/03/01/global.json.gz",
        [
            event(host="sts.amazonaws.com", arn=ROLE_A, ip="10.0.1.5", when="2025-03-01T09:00Z"),
            event(host="sts.amazonaws.com", arn=ROLE_A, ip="10.0.1.5", when="2025-03-01T11:00Z"),
            event(host="sts.amazonaws.com", arn=ROLE_A, ip="10.0.1.5", when="2025-03-01T10:00Z"),
            event(
                host="sts.amazonaws.com",
                arn=ROLE_B,
                ip="10.0.2.7",
                name="AssumeRole",
                when="2025-03-01T08:00Z",
                endpoint_type="global",
                serving_region="eu-west-1",
            ),
            event(host=None, source="s3.amazonaws.com", name="GetObject"),
        ],
        gz=True,
    )
    write_doc(
        base / "us-east-2/2025/03/01/regional.json",
        [
            event(host="sts.us-east-2.amazonaws.com", vpce="vpce-021345abcdef6789"),
            event(
                host="sts.us-east-2.amazonaws.com",
                vpce="vpce-021345abcdef6789",
                endpoint_type="regional",
                serving_region="us-east-2",
            ),
            event(host="sts.us-east-2.amazonaws.com", ip="203.0.113.9", when="2025-03-02T00:00Z"),
            event(host=None, name="AssumeRoleWithWebIdentity"),  # no tlsDetails at all
            event(host=None, source="ec2.amazonaws.com", name="DescribeInstances"),
        ],
    )
    # Exported one event per line, as some tools do.
    lines = base / "exports/lines.json"
    lines.parent.mkdir(parents=True)
    lines.write_text(
        json.dumps(event(host="sts.us-east-2.amazonaws.com", name="AssumeRole", vpce="vpce-9"))
        + "\n"
        + json.dumps(event(host="ec2.amazonaws.com", source="ec2.amazonaws.com"))
        + "\n"
    )
    # Neither a digest nor a foreign suffix is an event file.
    digest = base.parent / "CloudTrail-Digest/us-east-1/2025/03/01/d.json.gz"
    digest.parent.mkdir(parents=True)
    digest.write_bytes(gzip.compress(b'{"awsAccountId": "123456789012", "logFiles": []}'))
    (base / "README.txt").write_text("not a log")
    return tmp_path


def test_tree_summary_over_cli(tree: Path) -> None:
    code, doc, stderr = run_json(str(tree))
    assert code == 1, stderr
    assert doc["errors"] == [] and stderr == ""
    assert doc["files_read"] == 3
    assert doc["events"] == 12
    assert doc["sts_events"] == 9
    assert doc["by_host"] == {
        "sts.us-east-2.amazonaws.com": 4,
        "sts.amazonaws.com": 4,
        "(unknown)": 1,
    }
    assert next(iter(doc["by_host"])) == "sts.amazonaws.com"  # ties rank by name
    assert doc["by_vpc_endpoint"] == {"with": 3, "without": 6}
    assert doc["by_endpoint_type"] == {"global": 1, "regional": 1}
    assert doc["by_serving_region"] == {"eu-west-1": 1, "us-east-2": 1}
    assert doc["by_principal"] == {IAM_C: 5, IAM_A: 3, IAM_B: 1}
    assert doc["by_identity_type"] == {"AssumedRole": 9}
    assert doc["by_source_ip"]["10.0.1.5"] == 3
    assert doc["by_event_name"] == {
        "GetCallerIdentity": 6,
        "AssumeRole": 2,
        "AssumeRoleWithWebIdentity": 1,
    }
    assert doc["global_calls"] == 4
    assert doc["global_by_signal"] == {
        "endpoint_type_and_host": 1,
        "endpoint_type": 0,
        "host_header": 3,
    }
    assert doc["global_served"] == {"in_region": 1, "us_east_1": 0, "unknown": 3}
    assert doc["global_callers"] == [
        {
            "caller": IAM_A,
            "identity_type": "AssumedRole",
            "principal_arn": IAM_A,
            "sessions": ["i-0aaa"],
            "source_ips": ["10.0.1.5"],
            "count": 3,
            "last_seen": "2025-03-01T11:00Z",
            "signals": {"host_header": 3},
            "served": {"unknown": 3},
        },
        {
            "caller": IAM_B,
            "identity_type": "AssumedRole",
            "principal_arn": IAM_B,
            "sessions": ["i-0bbb"],
            "source_ips": ["10.0.2.7"],
            "count": 1,
            "last_seen": "2025-03-01T08:00Z",
            "signals": {"endpoint_type_and_host": 1},
            "served": {"in_region": 1},
        },
    ]
    assert doc["time_range"] == {"first": "2025-03-01T08:00Z", "last": "2025-03-02T00:00Z"}
    assert set(doc["queries"]) >= {"logs_insights", "athena", "region", "logged_in"}
    assert doc["queries"]["logged_in"] == "us-east-1"
    assert doc["queries"]["region"] == "<region>"
    # Credentials present in the records never leave the tool.
    assert "ASIAEXAMPLEKEYID0000" not in json.dumps(doc)
    assert SESSION_TOKEN not in json.dumps(doc)


def test_regional_only_exits_0_and_human_report(tmp_path: Path) -> None:
    f = write_doc(
        tmp_path / "r.json.gz",
        [event(host="STS.US-EAST-2.AMAZONAWS.COM.", vpce="vpce-1")],
        gz=True,
    )
    proc = run_cli(str(f), "--region", "eu-central-1")
    assert proc.returncode == 0, proc.stderr
    assert "No calls to the global endpoint sts.amazonaws.com." in proc.stdout
    assert "sts.us-east-2.amazonaws.com" in proc.stdout
    assert "1 with vpcEndpointId, 0 without" in proc.stdout
    assert "logged in us-east-1" in proc.stdout
    assert "awsServingRegion') = 'eu-central-1'" in proc.stdout


def test_human_report_lists_global_callers(tree: Path) -> None:
    proc = run_cli(str(tree), env=clean_env(AWS_DEFAULT_REGION="ap-southeast-2"))
    assert proc.returncode == 1
    out = proc.stdout
    assert "Still calling the global endpoint: 4 calls from 2 caller(s)" in out
    assert "Served in us-east-1 (cross-region dependency): 0; in-region" in out
    lines = out.splitlines()
    rows = [i for i, ln in enumerate(lines) if ln.endswith((IAM_A, IAM_B))]
    assert len(rows) == 2
    assert "2025-03-01T11:00Z" in lines[rows[0]] and "unrecorded 3" in lines[rows[0]]
    assert "sessions i-0aaa; from 10.0.1.5; by host_header" in lines[rows[0] + 1]
    assert "in-region 1" in lines[rows[1]]
    assert "sts.amazonaws.com                " in out and "<- global endpoint" in out
    assert "ap-southeast-2" in out  # region from the SDK's variable


def test_bad_region_is_a_one_line_usage_error(tree: Path) -> None:
    proc = run_cli(str(tree), "--region", "eu west 1")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0
    assert "--region 'eu west 1'" in proc.stderr


def test_sts_global_host_names_the_serving_region(tmp_path: Path) -> None:
    """Without awsServingRegion, an `sts-global.<region>` host header says where it was
    served: in-region, or us-east-1 for `sts-global.us-east-1`."""
    here = event(host="sts-global.eu-west-1.amazonaws.com", arn=ROLE_A)
    east = event(host="sts-global.us-east-1.amazonaws.com", arn=ROLE_B)
    write_doc(tmp_path / "a.json", [here, east])
    _, doc, _ = run_json(str(tmp_path))
    assert doc["global_served"] == {"in_region": 1, "us_east_1": 1, "unknown": 0}
    assert doc["by_serving_region"] == {}  # that table stays what CloudTrail recorded


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_reader_going_away_ends_quietly(tree: Path, as_json: bool) -> None:
    """`... | head -1`: the pipe is closed before the report is written."""
    cmd = [sys.executable, "-m", "agent", "audit", "cloudtrail", str(tree)]
    proc = subprocess.Popen(
        cmd + ["--json"] * as_json,
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before the first byte
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert proc.returncode == 128 + 13  # as a shell reports a process SIGPIPE ended


def test_since_applies_to_file_events_too(tmp_path: Path) -> None:
    import time

    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    recent = event(host="sts.amazonaws.com", arn=ROLE_A, when=now)
    old = event(host="sts.amazonaws.com", arn=ROLE_B, when="2020-01-01T00:00:00Z")
    write_doc(tmp_path / "a.json", [recent, old, event(host="sts.amazonaws.com", when="?")])
    _, doc, _ = run_json(str(tmp_path), "--since", "1h")
    assert doc["global_calls"] == 2  # the recent one, and the one without a readable time
    assert ROLE_B not in json.dumps(doc["global_callers"])
    _, every, _ = run_json(str(tmp_path))
    assert every["global_calls"] == 3
    assert "only events this recent" in run_cli("--help").stdout


REGIONS3 = ("us-east-1", "eu-west-1", None)


def test_text_columns_line_up_with_their_header(tmp_path: Path) -> None:
    """A caller served in all three ways has the longest `served` text."""
    events = [event(host="sts.amazonaws.com", arn=ROLE_A, serving_region=r) for r in REGIONS3]
    write_doc(tmp_path / "a.json", [*events, event(host="sts.amazonaws.com", arn=ROLE_B)])
    lines = run_cli(str(tmp_path)).stdout.splitlines()
    header = next(x for x in lines if x.strip().startswith("calls") and "served" in x)
    rows = [x for x in lines if x.rstrip().endswith(("legacy-app", "batch"))]
    assert len(rows) == 2
    for row in rows:
        assert row.index("arn:aws:") == header.index("caller")
        assert row[: header.index("served")].rstrip().endswith(("Z", "-"))


@pytest.mark.parametrize("value", ["inf", "nan", "-5", "0"])
def test_athena_timeout_must_be_a_positive_number(tree: Path, value: str) -> None:
    proc = run_cli(str(tree), f"--athena-timeout={value}")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0
    assert "--athena-timeout" in proc.stderr and value in proc.stderr


# --- bad input ---------------------------------------------------------------------


def test_bad_files_are_reported_and_skipped(tmp_path: Path) -> None:
    d = tmp_path / "logs"
    good = write_doc(d / "a-good.json", [event(host="sts.amazonaws.com", arn=ROLE_A)])
    (d / "b-garbage.json").write_text("this is not json\n")
    full = gzip.compress(json.dumps({"Records": [event(host="sts.amazonaws.com")] * 50}).encode())
    (d / "c-truncated.json.gz").write_bytes(full[: len(full) // 2])
    (d / "d-list.json").write_text(json.dumps([event(host="sts.amazonaws.com")]))
    (d / "e-empty.json").write_text("")
    (d / "f-binary.json").write_bytes(bytes(range(255, 127, -1)) * 4)
    (d / "g-cut.json").write_text('{"Records": [' + json.dumps(event(host="x")) + ', {"eventS')
    (d / "h-notevent.json").write_text('{"hello": 1}')
    (d / "i-gzgarbage.json.gz").write_bytes(b"\x1f\x8b" + b"nonsense" * 10)

    code, doc, stderr = run_json(str(d))
    assert code == 1
    assert doc["files_read"] == 1
    assert [g["principal_arn"] for g in doc["global_callers"]] == [IAM_A]
    errors = {Path(e["source"]).name: e["error"] for e in doc["errors"]}
    assert set(errors) == {
        "b-garbage.json",
        "c-truncated.json.gz",
        "d-list.json",
        "e-empty.json",
        "f-binary.json",
        "g-cut.json",
        "h-notevent.json",
        "i-gzgarbage.json.gz",
    }
    assert errors["b-garbage.json"].startswith("not JSON")
    assert "bad gzip data" in errors["c-truncated.json.gz"]
    assert "JSON array" in errors["d-list.json"]
    assert errors["e-empty.json"] == "empty file"
    assert "not UTF-8" in errors["f-binary.json"]
    assert errors["g-cut.json"].startswith("truncated")
    assert "1 records before it were counted" in errors["g-cut.json"]
    assert "no Records array" in errors["h-notevent.json"]
    assert "bad gzip data" in errors["i-gzgarbage.json.gz"]
    # One stderr line per bad file, each naming it.
    lines = stderr.strip().splitlines()
    assert len(lines) == 8
    for name in errors:
        assert sum(name in ln for ln in lines) == 1
    assert str(good) not in stderr


def test_nothing_readable_exits_2(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("[]")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, doc, stderr = run_json(str(tmp_path / "x.json"), str(empty), str(tmp_path / "nope"))
    assert code == 2
    assert doc["files_read"] == 0
    assert [e["error"] for e in doc["errors"]] == [
        'wrong shape: top level is a JSON array, expected {"Records": [...]}',
        "no .json or .json.gz files in this directory tree",
        "no such file or directory",
    ]
    assert len(stderr.strip().splitlines()) == 3


def test_unreadable_file_is_reported(tmp_path: Path) -> None:
    """Root reads anything, so the audit runs as `nobody` to meet a real EACCES."""
    d = Path(tempfile.mkdtemp(prefix="ct-perm-"))
    try:
        d.chmod(0o755)
        write_doc(d / "a.json", [event(host="sts.amazonaws.com")]).chmod(0o644)
        write_doc(d / "b.json", [event(host="sts.amazonaws.com")]).chmod(0o000)
        if os.geteuid() == 0:
            # Root reads both files; the run also loads the codecs and modules the
            # forked child could no longer load from a directory it cannot enter.
            assert summarise([str(d)]).files_read == 2
            for lazy in ("agent.audit.cloudtrail_cli", "agent.audit.cloudtrail_athena"):
                importlib.import_module(lazy)  # what the CLI imports only when it runs
            code, out, stderr = cli_as_nobody(
                ["audit", "cloudtrail", str(d), "--json"], env=clean_env()
            )
            doc = json.loads(out)
        else:
            code, doc, stderr = run_json(str(d))
        assert code == 1
        assert doc["files_read"] == 1
        assert doc["errors"] == [
            {"source": str(d / "b.json"), "error": "permission denied", "records_counted": 0}
        ]
        assert f"{d / 'b.json'}: permission denied" in stderr
    finally:
        shutil.rmtree(d)


# --- the stream reader on its own ---------------------------------------------------


class Trickle:
    """Hands out at most `step` bytes per read, like a slow network body."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step, self.pos = data, step, 0

    def read(self, n: int = -1, /) -> bytes:
        size = self.step if n < 0 else min(n, self.step)
        out = self.data[self.pos : self.pos + size]
        self.pos += len(out)
        return out


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("step", [1, 3, 7, 64])
def test_records_survive_any_chunk_boundary(
    monkeypatch: pytest.MonkeyPatch, gz: bool, step: int
) -> None:
    monkeypatch.setattr(cloudtrail_read, "CHUNK", 5)
    records = [event(host="sts.amazonaws.com", when=f"2025-01-0{i}T00:00:00Z") for i in range(1, 4)]
    records[1]["n"] = -12345.678e-3  # a number that straddles chunks
    records[2]["s"] = 'snow ☃ and "quotes" and \\u escapes \u00e9'
    text = (
        '\ufeff  {"Other": [1, 2], "Records": [\n'
        + ",\n".join(json.dumps(r, ensure_ascii=False) for r in records)
        + '\n], "tail": 7}\n'
    )
    data = text.encode()  # with a byte-order mark, as some exporters write
    if gz:
        data = gzip.compress(data)
    got = list(read_records(Source("mem", lambda: Trickle(data, step))))
    assert got == records


def test_huge_garbage_fails_fast_without_buffering_it_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cloudtrail_read, "MAX_VALUE", 1000)
    data = b'{"Records": [' + b'"' + b"x" * 5000  # an endless string
    with pytest.raises(SourceError, match="exceeds"):
        list(read_records(Source("mem", lambda: Trickle(data, 100))))


def test_record_that_is_not_an_object_is_a_shape_error() -> None:
    data = b'{"Records": [{"eventSource": "sts.amazonaws.com"}, 42]}'
    with pytest.raises(SourceError, match="not a JSON object"):
        list(read_records(Source("mem", lambda: Trickle(data, 4096))))


def test_bounded_counter_caps_distinct_keys() -> None:
    c = BoundedCounter(cap=2)
    for key in ["a", "b", "a", "c", "d", "b", "a"]:
        c.add(key)
    assert c.as_json() == {"a": 3, "b": 2, "(other)": 2}
    assert list(c.as_json())[-1] == "(other)"


def test_host_normalisation_and_unknown_principal() -> None:
    assert normal_host("STS.AmazonAWS.com.:443") == "sts.amazonaws.com"
    assert normal_host(None) == "(unknown)"
    s = Summary()
    ev = event(host="sts.amazonaws.com:443")
    ev["userIdentity"] = {"type": "WebIdentityUser", "principalId": "oidc:sub-1"}
    s.add(ev)
    assert s.global_calls == 1
    assert s.by_principal.as_json() == {"WebIdentityUser:oidc:sub-1": 1}


def test_queries_target_the_global_host_and_region() -> None:
    q = queries("eu-north-1")
    assert q["region"] == "eu-north-1" and q["logged_in"] == "us-east-1"
    # AWS's own queries, kept as published (host header only).
    assert q["logs_insights_seed"].startswith(
        'filter eventSource="sts.amazonaws.com" and '
        'tlsDetails.clientProvidedHostHeader="sts.amazonaws.com"'
    )
    assert "tlsdetails.clientProvidedHostHeader = 'sts.amazonaws.com'" in q["athena_seed"]
    # Today's fields, nested under RequestDetails, plus both host-header forms.
    for key in ("logs_insights", "logs_insights_us_east_1"):
        assert 'additionalEventData.RequestDetails.endpointType = "global"' in q[key]
        assert "/^sts-global\\./" in q[key]
        assert "additionalEventData.RequestDetails.awsServingRegion" in q[key]
    assert 'awsServingRegion = "us-east-1"' in q["logs_insights_us_east_1"]
    for key in ("athena", "athena_in_region"):
        assert "'$.RequestDetails.endpointType') = 'global'" in q[key]
        assert "LIKE 'sts-global.%'" in q[key]
    assert "'$.RequestDetails.awsServingRegion') = 'us-east-1' THEN 'us-east-1'" in q["athena"]
    assert "'$.RequestDetails.awsServingRegion') = 'eu-north-1'" in q["athena_in_region"]
    assert "additionalEventData.endpointType" not in json.dumps(q)


# --- memory stays flat on a large file ------------------------------------------------


def _big_records(target_bytes: int) -> Iterator[bytes]:
    hosts = ["sts.amazonaws.com", "sts.us-east-2.amazonaws.com"]
    written = 0
    i = 0
    while written < target_bytes:
        ev = event(
            host=hosts[i % 2],
            arn=f"{ROLE_A}-{i % 500}",
            ip=f"10.{i % 200}.{(i // 200) % 250}.{i % 7}",
            when=f"2025-03-{1 + i % 28:02d}T00:00:00Z",
        )
        ev["requestParameters"] = {"padding": "p" * 400}
        blob = json.dumps(ev).encode()
        written += len(blob) + 1
        i += 1
        yield blob


def test_peak_memory_stays_flat_on_a_100mb_file(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    count = 0
    with path.open("wb") as f:
        f.write(b'{"Records": [\n')
        for n, blob in enumerate(_big_records(100 << 20)):
            if n:
                f.write(b",\n")
            f.write(blob)
            count += 1
        f.write(b"\n]}\n")
    size = path.stat().st_size
    assert size > 100 << 20
    # ru_maxrss survives fork+exec on Linux and would report pytest's own peak, so the
    # child reads VmHWM, the peak of its own address space, from /proc instead.
    child = (
        "import json, sys\n"
        "def kib(field):\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith(field + ':'):\n"
        "            return int(line.split()[1])\n"
        "from agent.audit.cloudtrail import summarise\n"
        "import botocore.exceptions\n"
        "before = kib('VmRSS')\n"
        "s = summarise([sys.argv[1]])\n"
        "print(json.dumps({'growth_kib': kib('VmHWM') - before, 'events': s.events,\n"
        "                  'global': s.global_calls, 'files': s.files_read}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", child, str(path)],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=170,
    )
    path.unlink()
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["files"] == 1 and result["events"] == count
    assert result["global"] == (count + 1) // 2
    growth_mib = result["growth_kib"] / 1024
    assert growth_mib < 60, f"peak RSS grew {growth_mib:.0f} MiB reading {size >> 20} MiB"


# --- S3 through moto's server on loopback ----------------------------------------------


@pytest.fixture()
def s3_endpoint() -> Iterator[str]:
    with moto_http_server() as url:
        yield url


def test_s3_prefix_is_listed_and_streamed(s3_endpoint: str) -> None:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=FAKE_KEY,
        aws_secret_access_key=FAKE_SECRET,
    )
    s3.create_bucket(Bucket="trail")
    prefix = f"AWSLogs/{ACCOUNT}/CloudTrail/us-east-1/2025/03/01/"
    glob_doc = {"Records": [event(host="sts.amazonaws.com", arn=ROLE_A, ip="10.0.1.5")] * 3}
    reg_doc = {"Records": [event(host="sts.us-east-1.amazonaws.com", vpce="vpce-1")]}
    s3.put_object(
        Bucket="trail", Key=prefix + "a.json.gz", Body=gzip.compress(json.dumps(glob_doc).encode())
    )
    s3.put_object(Bucket="trail", Key=prefix + "b.json", Body=json.dumps(reg_doc).encode())
    s3.put_object(Bucket="trail", Key=prefix + "c.json", Body=b"garbage")
    s3.put_object(Bucket="trail", Key=prefix + "notes.txt", Body=b"ignored")
    s3.put_object(
        Bucket="trail",
        Key=f"AWSLogs/{ACCOUNT}/CloudTrail-Digest/us-east-1/d.json.gz",
        Body=gzip.compress(b'{"logFiles": []}'),
    )
    s3.put_object(Bucket="trail", Key="elsewhere/x.json", Body=json.dumps(glob_doc).encode())

    env = clean_env(
        AWS_ENDPOINT_URL_S3=s3_endpoint,
        AWS_ACCESS_KEY_ID=FAKE_KEY,
        AWS_SECRET_ACCESS_KEY=FAKE_SECRET,
        AWS_DEFAULT_REGION="us-east-1",
    )
    code, doc, stderr = run_json(f"s3://trail/AWSLogs/{ACCOUNT}/", "s3://no-such-bucket/x", env=env)
    assert code == 1, stderr
    assert doc["files_read"] == 2
    assert doc["sts_events"] == 4
    assert doc["by_host"] == {"sts.amazonaws.com": 3, "sts.us-east-1.amazonaws.com": 1}
    assert doc["global_callers"][0]["count"] == 3
    sources = [e["source"] for e in doc["errors"]]
    assert sources == [f"s3://trail/{prefix}c.json", "s3://no-such-bucket/x"]
    assert "NoSuchBucket" in doc["errors"][1]["error"]
    assert FAKE_SECRET not in stderr + json.dumps(doc)
