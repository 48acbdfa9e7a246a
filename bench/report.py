"""One benchmark's outcome: Markdown tables plus a verdict per goal, printable and as JSON."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.machine import describe
from bench.stats import table


@dataclass
class Goal:
    goal: str
    met: bool
    figure: str
    why: str


@dataclass
class Result:
    key: str
    title: str
    method: str
    tables: list[str] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    machine: dict[str, str] = field(default_factory=dict)
    elapsed: float = 0.0

    def markdown(self, level: int = 2) -> str:
        h = "#" * level
        parts = [f"{h} {self.title}", "", self.method, ""]
        for t in self.tables:
            parts += [t, ""]
        if self.goals:
            rows = [(g.goal, "met" if g.met else "**missed**", g.figure, g.why) for g in self.goals]
            parts += [table(("Goal", "Verdict", "Measured", "Why"), rows), ""]
        parts += [f"- {n}" for n in self.notes]
        parts += [f"- Took {self.elapsed:.0f} s."]
        return "\n".join(parts).rstrip() + "\n"


def method(doc: str | None) -> str:
    """How a benchmark measures: its module docstring after the first paragraph, on one line."""
    return " ".join((doc or "").strip().split("\n\n", 1)[1].split())


def cli(
    key: str, doc: str | None, setup: Callable[[argparse.ArgumentParser], object] | None = None
) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=f"python -m bench.{key}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON to FILE")
    p.add_argument("--quick", action="store_true", help="fewer samples, for a smoke run")
    if setup is not None:
        setup(p)
    return p.parse_args()


def main_for(key: str, doc: str | None, run: Callable[[bool], Result]) -> None:
    """The scripts' shared entry point: flags, the machine (noted before the load), run, print."""
    args = cli(key, doc)
    started = time.monotonic()
    machine = describe()
    result = run(args.quick)
    result.machine = machine
    emit(result, args, started)


def machine_markdown(machine: dict[str, str]) -> str:
    return table(("Machine", ""), list(machine.items()))


def emit(result: Result, args: argparse.Namespace, started: float) -> None:
    result.elapsed = time.monotonic() - started
    result.machine = result.machine or describe()
    sys.stdout.write(machine_markdown(result.machine) + "\n\n" + result.markdown())
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(result), indent=2) + "\n")


def load(path: Path) -> Result:
    doc = json.loads(path.read_text())
    goals = [Goal(**g) for g in doc.pop("goals")]
    return Result(goals=goals, **doc)
