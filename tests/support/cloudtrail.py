"""CloudTrail records, and the audit CLI run as a user would: shared by the CloudTrail tests."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from testbed import ROOT

ACCOUNT = "123456789012"
ROLE_A = f"arn:aws:sts::{ACCOUNT}:assumed-role/legacy-app/i-0aaa"
ROLE_B = f"arn:aws:sts::{ACCOUNT}:assumed-role/batch/i-0bbb"
ROLE_C = f"arn:aws:sts::{ACCOUNT}:assumed-role/web/i-0ccc"
IAM_A = f"arn:aws:iam::{ACCOUNT}:role/legacy-app"
IAM_B = f"arn:aws:iam::{ACCOUNT}:role/batch"
IAM_C = f"arn:aws:iam::{ACCOUNT}:role/web"
FAKE_KEY = "AKIAIOSFODNN7EXAMPLE"
FAKE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLEsessiontoken"


def event(
    *,
    host: str | None,
    arn: str = ROLE_C,
    ip: str = "10.120.136.166",
    name: str = "GetCallerIdentity",
    when: str = "2025-03-01T10:00:00Z",
    source: str = "sts.amazonaws.com",
    vpce: str | None = None,
    endpoint_type: str | None = None,
    serving_region: str | None = None,
    region: str = "us-east-2",
) -> dict[str, Any]:
    """One record in the documented CloudTrail shape."""
    ev: dict[str, Any] = {
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "AssumedRole",
            "principalId": "AROAEXAMPLE:i-0",
            "arn": arn,
            "accountId": ACCOUNT,
            "accessKeyId": "ASIAEXAMPLEKEYID0000",
        },
        "eventTime": when,
        "eventSource": source,
        "eventName": name,
        "awsRegion": region,
        "sourceIPAddress": ip,
        "userAgent": "aws-sdk-go/1.44.0",
        "requestParameters": None,
        "responseElements": {"credentials": {"sessionToken": SESSION_TOKEN}},
        "requestID": "0f0e0d0c-0000-4000-8000-000000000000",
        "eventID": "1a2b3c4d-0000-4000-8000-000000000000",
        "readOnly": True,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Management",
    }
    if host is not None:
        ev["tlsDetails"] = {
            "tlsVersion": "TLSv1.2",
            "cipherSuite": "ECDHE-RSA-AES128-GCM-SHA256",
            "clientProvidedHostHeader": host,
        }
    if vpce:
        ev["vpcEndpointId"] = vpce
    extra = {}
    if endpoint_type:
        extra["endpointType"] = endpoint_type
    if serving_region:
        extra["awsServingRegion"] = serving_region
    if extra:  # nested as CloudTrail writes it today
        ev["additionalEventData"] = {"RequestDetails": extra}
    return ev


def write_doc(path: Path, records: list[dict[str, Any]], *, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps({"Records": records}).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "agent", "audit", "cloudtrail", *args]
    return subprocess.run(
        cmd, cwd=ROOT, env=env or clean_env(), capture_output=True, text=True, timeout=120
    )


def run_json(*args: str, **kw: Any) -> tuple[int, dict[str, Any], str]:
    proc = run_cli(*args, "--json", **kw)
    return proc.returncode, json.loads(proc.stdout), proc.stderr
