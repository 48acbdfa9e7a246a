"""Credentials never leak: not in logs (even at debug), metrics, the status page, or check output.

The simulated instance profile serves distinctive fake credentials; the agent
really signs with them (the simulated STS sees SigV4 headers), and STS error
answers are switched on so the error paths render too.  Then every surface is
searched for the key id, the secret, the session token and any signature.
A failing `credential_process` is run by botocore's real chain too: what it
printed must show nowhere either.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from agent.simulate.demo import ENI_ADDRESSES, REGIONAL, SimulatedVpc
from testbed.agent_proc import agent_env
from tests.support.faults import REQ_FAILURES, SUCCESS, live_agent

ACCESS_KEY_ID = "ASIAQLEAKCANARY7KEY0"
SECRET_KEY = "lEaKcAnArY/SecretKey+Zq8vR2mW5nT1xY4bH7jK0pL3dF6gS9aC"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjELeakCanarySessionToken//" + "Zm9vYmFyYmF6" * 20
# Fragments too, so a truncated or re-wrapped value is caught as well as the whole.
NEEDLES = {
    "access key id": [ACCESS_KEY_ID, ACCESS_KEY_ID[4:16]],
    "secret key": [SECRET_KEY, SECRET_KEY[10:30]],
    "session token": [SESSION_TOKEN, "LeakCanarySessionToken", SESSION_TOKEN[-40:]],
    "signature": ["Signature=", "X-Amz-Security-Token"],
}


def _canary_credentials(vpc: SimulatedVpc) -> None:
    vpc.imds.credentials = {
        "AccessKeyId": ACCESS_KEY_ID,
        "SecretAccessKey": SECRET_KEY,
        "Token": SESSION_TOKEN,
    }
    vpc.sts[ENI_ADDRESSES[1]].fault = "error:SignatureDoesNotMatch"


def _leaks(outputs: dict[str, str]) -> list[str]:
    return [
        f"{what} in {where}"
        for where, text in outputs.items()
        for what, needles in NEEDLES.items()
        if any(n.lower() in text.lower() for n in needles)
    ]


def _check_and_stop(live: Any, env: dict[str, str], outputs: dict[str, str]) -> None:
    """`check` and `check --json` beside the running daemon, then the daemon's whole log."""
    for args in (["--json"], []):
        run = subprocess.run(
            [sys.executable, "-m", "agent", "check", *args, "--config", str(live.config)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        name = "check " + " ".join(args)
        outputs[f"{name} stdout"] = run.stdout
        outputs[f"{name} stderr"] = run.stderr
    live.agent.signal(signal.SIGTERM)
    live.agent.proc.wait(10)
    outputs["serve log"] = live.agent.log()


def test_no_surface_ever_shows_a_credential(tmp_path: Path) -> None:
    outputs: dict[str, str] = {}
    with live_agent(tmp_path, before_start=_canary_credentials, log__level="debug") as live:
        s = live.wait(
            lambda s: (
                s.value(SUCCESS, endpoint=REGIONAL, address=ENI_ADDRESSES[0]) == 1
                and s.total(REQ_FAILURES, address=ENI_ADDRESSES[1], reason="signature") >= 2
            ),
            "signed calls, and signature errors from the second ENI",
        )
        outputs["/metrics"] = live.scrape().text
        for path in ("/", "/probe?endpoint=regional", "/-/ready"):
            status, body = live.agent.get(path, timeout=10)
            assert status == 200, (path, body[:300])
            outputs[path] = body
        _check_and_stop(live, agent_env(live.vpc), outputs)
        signed = [r for srv in live.vpc.sts.values() for r in list(srv.requests)]

    # The agent really held and used the credentials, and every surface had content.
    assert signed and all(r["had_authorization"] for r in signed)
    assert s.total(REQ_FAILURES, reason="credentials_missing") == 0
    doc = json.loads(outputs["check --json stdout"])
    probes = {p["address"]: p for e in doc["endpoints"] for p in e["probes"]}
    assert probes[ENI_ADDRESSES[0]]["signed"] is True
    assert probes[ENI_ADDRESSES[1]]["sts_error_code"] == "SignatureDoesNotMatch"
    assert "SignatureDoesNotMatch" in outputs["check  stdout"]
    assert (
        REGIONAL in outputs["/"]
        and "sts_agent_probe_success" in outputs["/probe?endpoint=regional"]
    )
    assert "DEBUG" in outputs["serve log"], "debug logging did not take effect"

    assert _leaks({"control": f"key={SECRET_KEY[10:30]}"}) == ["secret key in control"]
    assert _leaks(outputs) == []


#: What a failing credential helper prints (a token, say); botocore quotes it in its error.
HELPER_SECRET = "SECRETLEAK123"
HELPER_ERROR = "CredentialRetrievalError (provider custom-process, profile default)"


def test_a_failing_credential_helper_is_named_but_never_quoted(tmp_path: Path) -> None:
    aws_config = tmp_path / "aws-config"
    helper = f'/bin/sh -c "echo token={HELPER_SECRET} >&2; exit 1"'
    aws_config.write_text(f"[default]\ncredential_process = {helper}\n")

    def env(vpc: SimulatedVpc) -> dict[str, str]:
        return agent_env(vpc, AWS_CONFIG_FILE=str(aws_config))

    outputs: dict[str, str] = {}
    with live_agent(tmp_path, env=env, log__level="debug") as live:
        s = live.wait(
            lambda s: s.total(REQ_FAILURES, reason="credentials_missing") >= 1,
            "unsigned calls for want of credentials",
        )
        outputs["/metrics"] = live.scrape().text
        status, outputs["/"] = live.agent.get("/", timeout=10)
        assert status == 200
        _check_and_stop(live, env(live.vpc), outputs)

    assert [where for where, text in outputs.items() if HELPER_SECRET in text] == []
    # The helper really ran and failed, and both the daemon and check said so by name.
    assert s.total(REQ_FAILURES, reason="credentials_missing") >= 1
    assert HELPER_ERROR in outputs["serve log"]
    assert HELPER_ERROR in outputs["check  stderr"]
    assert json.loads(outputs["check --json stdout"])["endpoints"]
