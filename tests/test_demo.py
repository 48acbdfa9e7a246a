"""`sts-agent demo` prints a `check` command that runs the same round from another shell."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

from agent.cli import _parser
from agent.config import build
from agent.simulate.demo import _SERVE_ONLY, check_command, simulated_vpc


def test_the_printed_check_command_has_the_demo_settings(tmp_path: Path) -> None:
    with simulated_vpc(tmp_path) as vpc:
        settings = vpc.settings(interval=5.0, listen="127.0.0.1:0")
        words = shlex.split(check_command(vpc, settings, "healthy"))
    assert words[:2] == ["env", "-i"]
    at = words.index("sts-agent")
    env = dict(w.split("=", 1) for w in words[2:at])
    assert env["AWS_DEFAULT_REGION"] == "us-east-2" and env["AWS_CONFIG_FILE"] == "/dev/null"
    assert not any(k.startswith("AWS_ACCESS") or k == "AWS_PROFILE" for k in env)
    args = _parser().parse_args(words[at + 1 :])
    assert args.command == "check"
    flags = {k[4:]: v for k, v in vars(args).items() if k.startswith("set:")}
    got = build(environ=env, flags=flags).settings
    for f in dataclasses.fields(settings):
        if f.name not in _SERVE_ONLY:
            assert getattr(got, f.name) == getattr(settings, f.name), f.name
    assert got.ca_bundle == str(vpc.ca_path)
