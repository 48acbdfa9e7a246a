"""`sts-agent check`: one round, a report, and an exit code a script can use."""

from __future__ import annotations

import json
import sys
from typing import TextIO

from agent.config import Settings
from agent.results import Report
from agent.rounds import Rounds
from agent.surfaces.report_json import to_json
from agent.surfaces.report_text import render


def exit_code(report: Report) -> int:
    """0 healthy, 1 a finding at warning or worse."""
    return 1 if report.worst_severity in ("warning", "critical") else 0


def emit(report: Report, *, as_json: bool, out: TextIO | None = None) -> int:
    """The report as text or JSON on `out` (stdout), and check's exit code for it."""
    out = sys.stdout if out is None else out
    if as_json:
        json.dump(to_json(report), out, indent=2)
        out.write("\n")
    else:
        print(render(report), file=out)
    return exit_code(report)


def run_check(settings: Settings, *, as_json: bool, textfile: str | None = None) -> int:
    if textfile is not None and (err := _write_textfile(textfile, None)):
        print(f"sts-agent: error: {err}", file=sys.stderr)
        return 2
    rounds = Rounds(settings, resident=False)
    disc = rounds.discover()
    if disc.resolver_error:
        # Without resolvers every endpoint would look unresolved; name the real cause instead.
        print(f"sts-agent: config error: {disc.resolver_error}", file=sys.stderr)
        return 2
    report = rounds.run(disc)
    if textfile is not None and (err := _write_textfile(textfile, report)):
        print(f"sts-agent: error: {err}", file=sys.stderr)
        return 2
    return emit(report, as_json=as_json)


def _write_textfile(path: str, report: Report | None) -> str:
    """Writes the textfile (only checks its path while `report` is None); an error or ""."""
    from agent.surfaces.textfile import TextfileError, check_path, write_textfile

    try:
        if report is None:
            check_path(path)
        else:
            write_textfile(path, report)
    except TextfileError as e:
        return str(e)
    return ""
