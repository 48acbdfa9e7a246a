"""A reader that stops early (`sts-agent check | head -1`) ends the command quietly.

The command runs as a real subprocess whose stdout pipe the test closes: at
once (so every write fails, as when `head` has already exited) or after one
line (as `head -1` does).  Either way stderr holds no traceback and no
"Exception ignored" from the interpreter's flush at exit.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli import EXIT_BROKEN_PIPE
from agent.simulate.demo import SimulatedVpc, simulated_vpc
from testbed.agent_proc import agent_env, vpc_config
from testbed.ports import free_port

COMMANDS = {
    "check": ["check"],
    "check --json": ["check", "--json"],
    "config check": ["config", "check"],
    "config check --json": ["config", "check", "--json"],
    "--help": ["--help"],
}


@pytest.fixture(scope="module")
def vpc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimulatedVpc, Path]]:
    tmp = tmp_path_factory.mktemp("pipe")
    with simulated_vpc(tmp / "vpc") as vpc:
        yield vpc, vpc_config(vpc, tmp / "agent.toml", free_port(), interval=1, timeout=0.8)


def _start(args: list[str], vpc: tuple[SimulatedVpc, Path]) -> subprocess.Popen[str]:
    sim, config = vpc
    if args[0] == "check":
        args = [*args, "--config", str(config)]
    elif args[0] == "config":
        args = [*args, str(config)]
    return subprocess.Popen(
        [sys.executable, "-m", "agent", *args],
        env=agent_env(sim),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _quiet(stderr: str) -> None:
    for sign in ("Traceback", "BrokenPipeError", "Exception ignored"):
        assert sign not in stderr, stderr


@pytest.mark.parametrize("args", COMMANDS.values(), ids=COMMANDS.keys())
def test_a_reader_gone_before_any_output(args: list[str], vpc: tuple[SimulatedVpc, Path]) -> None:
    proc = _start(args, vpc)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # Python takes well over this long to start, so every write fails
    stderr = proc.stderr.read()
    code = proc.wait(60)
    _quiet(stderr)
    # argparse drops a help text it cannot write (and exits 0); the rest say what happened.
    assert code == EXIT_BROKEN_PIPE or (args == ["--help"] and code == 0), stderr


@pytest.mark.parametrize("args", COMMANDS.values(), ids=COMMANDS.keys())
def test_a_reader_gone_after_one_line(args: list[str], vpc: tuple[SimulatedVpc, Path]) -> None:
    proc = _start(args, vpc)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read()
    code = proc.wait(60)
    assert first.strip(), stderr
    _quiet(stderr)
    # All of it may have fit in the pipe before the close; then the command's own code.
    assert code in (0, 1, EXIT_BROKEN_PIPE), stderr
