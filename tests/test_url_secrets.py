"""A password or token inside a URL never reaches a surface: labels, findings, pages, logs.

The SDK endpoint override and the proxy carry user info and a query with a
canary; a second process with the same environment is seen by the process
audit.  Every surface is searched for the canaries, and the redacted URL must
still be shown (so the test cannot pass by showing nothing).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.redact import UNPARSEABLE, redact_text, redact_url
from agent.simulate.demo import REGIONAL, SimulatedVpc
from testbed.agent_proc import agent_env
from tests.support.faults import live_agent

PASSWORD = "Sup3rSecretCanary"
TOKEN = "QueryTokenCanary"
PROXY_PASSWORD = "Pr0xyCanary"
ENDPOINT = f"https://svc:{PASSWORD}@{REGIONAL}/?X-Amz-Security-Token={TOKEN}#frag"
PROXY = f"http://proxyuser:{PROXY_PASSWORD}@127.0.0.1:3128"
CANARIES = (PASSWORD, TOKEN, PROXY_PASSWORD, "proxyuser", "svc:")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (ENDPOINT, f"https://{REGIONAL}/"),
        (PROXY, "http://127.0.0.1:3128"),
        ("proxy.internal:8080", "http://proxy.internal:8080"),
        ("https://user@[fd00::1]:8443/path?q=1", "https://[fd00::1]:8443/path"),
        ("https://sts.amazonaws.com", "https://sts.amazonaws.com"),
        ("http://[broken/", UNPARSEABLE),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_text_redacts_every_url_in_a_message() -> None:
    text = f"ValueError: Invalid endpoint: {ENDPOINT} (and {PROXY})"
    out = redact_text(text)
    assert not any(c in out for c in CANARIES), out
    assert f"https://{REGIONAL}/" in out and "http://127.0.0.1:3128" in out


def _env(vpc: SimulatedVpc) -> dict[str, str]:
    return agent_env(vpc, AWS_ENDPOINT_URL_STS=ENDPOINT, HTTPS_PROXY=PROXY)


@pytest.fixture
def sdk_user(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Another process with the same secrets in its environment, for the process audit."""
    env = {"AWS_ENDPOINT_URL_STS": ENDPOINT, "HTTPS_PROXY": PROXY, "AWS_REGION": "us-east-2"}
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env=env)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_no_surface_shows_a_secret_from_a_url(
    tmp_path: Path, sdk_user: subprocess.Popen[bytes]
) -> None:
    outputs: dict[str, str] = {}
    with live_agent(tmp_path, env=_env, audit__processes=True, log__level="debug") as live:
        live.wait(lambda s: "sts_agent_sdk_endpoint_info" in s.text, "the SDK view in the metrics")
        outputs["/metrics"] = live.scrape().text
        status, outputs["/"] = live.agent.get("/", timeout=10)
        assert status == 200
        for args in (["--json"], []):
            run = subprocess.run(
                [sys.executable, "-m", "agent", "check", *args, "--config", str(live.config)],
                env=_env(live.vpc),
                capture_output=True,
                text=True,
                timeout=60,
            )
            outputs[f"check {args} stdout"] = run.stdout
            outputs[f"check {args} stderr"] = run.stderr
        outputs["serve log"] = live.agent.log()
    leaks = [f"{c} in {where}" for where, text in outputs.items() for c in CANARIES if c in text]
    assert leaks == []
    # The redacted endpoint is still shown where the URL was.
    assert f"https://{REGIONAL}/" in outputs["/metrics"]
    assert f"https://{REGIONAL}/" in outputs["check ['--json'] stdout"]
    assert f"<td>{sdk_user.pid}</td>" in outputs["/"], "the process audit did not see the SDK user"
