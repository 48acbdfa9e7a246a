"""Endpoint URLs with user info in them never reach the audit's errors or output."""

from __future__ import annotations

import pytest

from tests.support.cloudtrail import FAKE_KEY, FAKE_SECRET, clean_env, run_cli

# Loopback port 1: nothing listens, so botocore fails at once with the URL in its message.
SECRET_URL = "http://audit-user:s3cr3t-pw@127.0.0.1:1"


@pytest.mark.parametrize(
    ("variable", "args"),
    [
        ("AWS_ENDPOINT_URL_LOGS", ["logs://trail"]),
        ("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", ["logs://trail"]),
        ("AWS_ENDPOINT_URL_ATHENA", ["--athena-table", "cloudtrail_logs"]),
        ("AWS_ENDPOINT_URL_S3", ["s3://bucket/AWSLogs/"]),
    ],
)
def test_password_in_endpoint_url_is_not_shown(variable: str, args: list[str]) -> None:
    env = clean_env(
        AWS_ACCESS_KEY_ID=FAKE_KEY,
        AWS_SECRET_ACCESS_KEY=FAKE_SECRET,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_MAX_ATTEMPTS="1",
        AWS_ENDPOINT_URL="http://127.0.0.1:9",  # anything not redirected stays on loopback
        **{variable: SECRET_URL},
    )
    for extra in ([], ["--json"]):
        proc = run_cli(*args, *extra, env=env)
        assert proc.returncode == 2, proc.stderr
        both = proc.stdout + proc.stderr
        assert "127.0.0.1:1" in proc.stderr  # the endpoint is still named...
        assert "s3cr3t-pw" not in both and "audit-user" not in both  # ...without its user info
