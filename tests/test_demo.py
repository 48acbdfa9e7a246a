"""`sts-agent demo` prints a `check` command that runs the same round from another shell."""

from __future__ import annotations

import dataclasses
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import agent
from agent.cli import _parser
from agent.config import build
from agent.simulate.demo import _SERVE_ONLY, check_command, simulated_vpc


def test_the_printed_check_command_has_the_demo_settings(tmp_path: Path) -> None:
    with simulated_vpc(tmp_path) as vpc:
        settings = vpc.settings(interval=5.0, listen="127.0.0.1:0")
        words = shlex.split(check_command(vpc, settings, "healthy"))
    assert words[:2] == ["env", "-i"]
    at = words.index("check")
    env = dict(w.split("=", 1) for w in words[2:at] if "=" in w)
    assert env["AWS_DEFAULT_REGION"] == "us-east-2" and env["AWS_CONFIG_FILE"] == "/dev/null"
    assert not any(k.startswith("AWS_ACCESS") or k == "AWS_PROFILE" for k in env)
    args = _parser().parse_args(words[at:])
    assert args.command == "check"
    flags = {k[4:]: v for k, v in vars(args).items() if k.startswith("set:")}
    got = build(environ=env, flags=flags).settings
    for f in dataclasses.fields(settings):
        if f.name not in _SERVE_ONLY:
            assert getattr(got, f.name) == getattr(settings, f.name), f.name
    assert got.ca_bundle == str(vpc.ca_path)


def test_the_printed_check_command_runs_from_a_plain_shell(tmp_path: Path) -> None:
    """The installer leaves the program off PATH, so the command must not rely on it."""
    with simulated_vpc(tmp_path) as vpc:
        settings = vpc.settings(interval=5.0, listen="127.0.0.1:0")
        command = check_command(vpc, settings, "healthy")
        res = subprocess.run(
            ["bash", "-c", command],
            env={"PATH": "/usr/bin:/bin"},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert res.returncode == 0, res.stderr + res.stdout
    assert "No findings" in res.stdout


def test_a_taken_listen_address_fails_before_the_round(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        res = subprocess.run(
            [sys.executable, "-m", "agent", "demo", "--web.listen-address", address],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == (
        f"sts-agent demo: cannot serve: web.listen-address {address}: "
        "cannot listen: Address already in use"
    )
    assert "findings" not in res.stdout.lower()  # no round ran


def test_an_uninstalled_checkout_is_named_with_its_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an `sts-agent` script beside the interpreter, `python -m agent` needs the path."""
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python3"))
    with simulated_vpc(tmp_path / "vpc") as vpc:
        settings = vpc.settings(interval=5.0, listen="127.0.0.1:0")
        words = shlex.split(check_command(vpc, settings, "healthy"))
    at = words.index("check")
    root = Path(agent.__file__).resolve().parent.parent
    assert words[at - 3 : at] == [str(tmp_path / "python3"), "-m", "agent"]
    assert f"PYTHONPATH={root}" in words[2 : at - 3]
