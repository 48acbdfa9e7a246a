"""`sts-agent check`: one round, a report, and an exit code a script can use."""

from __future__ import annotations

import json
import sys

from agent.audit.host import HostAudits
from agent.config import Settings
from agent.discovery import discover
from agent.results import Report
from agent.runner import Prober, run_round
from agent.surfaces.report_json import to_json
from agent.surfaces.report_text import render


def exit_code(report: Report) -> int:
    """0 healthy, 1 a finding at warning or worse."""
    return 1 if report.worst_severity in ("warning", "critical") else 0


def run_check(settings: Settings, *, as_json: bool, textfile: str | None = None) -> int:
    if textfile is not None and (err := _write_textfile(textfile, None)):
        print(f"sts-agent: error: {err}", file=sys.stderr)
        return 2
    disc = discover(settings)
    if disc.resolver_error:
        # Without resolvers every endpoint would look unresolved; name the real cause instead.
        print(f"sts-agent: config error: {disc.resolver_error}", file=sys.stderr)
        return 2
    report = run_round(settings, disc, Prober(settings))
    report = HostAudits(with_owners=True).apply(settings, report)
    if textfile is not None and (err := _write_textfile(textfile, report)):
        print(f"sts-agent: error: {err}", file=sys.stderr)
        return 2
    if as_json:
        json.dump(to_json(report), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render(report))
    return exit_code(report)


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
