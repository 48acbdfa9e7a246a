"""Peak memory of `audit cloudtrail` on hostile files, beside an ordinary file.

Each file is audited in a fresh interpreter (testbed/hostile_cloudtrail.py) that
reports VmHWM, its own peak resident set, and the growth over its RSS just before the
audit started; ru_maxrss of the same child is printed as a cross-check. Goal: every
hostile file is a per-file error (or, for long values, cut keys) and grows the
process by no more than the documented bound (48 MiB).
"""

from __future__ import annotations

import resource
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.report import Goal, Result
from bench.stats import table
from testbed.hostile_cloudtrail import (
    audit_in_child,
    write_control,
    write_deep,
    write_fifo,
    write_long_values,
    write_no_records,
    write_plain,
)

BOUND_MIB = 48
CASES: tuple[tuple[str, str, Callable[[Path], Path]], ...] = (
    ("ordinary: 300 records", "plain.json", write_plain),
    ("object without Records, 300 x 0.9 MB values", "norec.json.gz", write_no_records),
    ("300 records with unique 1 MB sourceIPAddress", "long.json.gz", write_long_values),
    ("200 KB of nested [", "deep.json", write_deep),
    ("FIFO named *.json", "pipe.json", write_fifo),
    ("terminal escapes in caller and IP", "ctl.json", write_control),
)


def _mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def run(quick: bool) -> Result:
    rows = []
    goals = []
    with tempfile.TemporaryDirectory(prefix="ct-hostile-") as tmp:
        for title, name, write in CASES:
            path = write(Path(tmp) / name)
            disk = path.stat().st_size if path.is_file() else 0
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            doc = audit_in_child(path, timeout=120)
            after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            outcome = doc["errors"][0]["error"] if doc["errors"] else f"{doc['events']} events"
            if doc["key_chars"] > 100:
                outcome += f", longest key {doc['key_chars']} chars"
            rows.append(
                (
                    title,
                    f"{disk / 1024:.0f} KiB",
                    outcome[:70],
                    _mib(doc["peak_kib"]),
                    _mib(doc["growth_kib"]),
                    _mib(max(after, before)) if after > before else "(below earlier child)",
                )
            )
            met = doc["growth_kib"] / 1024 <= BOUND_MIB
            goals.append(Goal(title, met, f"{_mib(doc['growth_kib'])} MiB", f"<= {BOUND_MIB} MiB"))
    headers = ("Input", "On disk", "Outcome", "Peak RSS MiB", "Growth MiB", "ru_maxrss MiB")
    return Result(
        key="cloudtrail_hostile",
        title="CloudTrail audit on hostile files: peak memory",
        method=__doc__ or "",
        tables=[table(headers, rows)],
        goals=goals,
        notes=[
            "ru_maxrss (RUSAGE_CHILDREN) is the largest child so far and includes the RSS "
            "the child inherited at fork, so it reads higher than VmHWM and only moves "
            "when a child peaks above the earlier ones."
        ],
    )


def main() -> None:
    """No blackbox_exporter here, so not bench.report's main: print the result alone."""
    import platform
    import sys
    import time

    started = time.monotonic()
    result = run(quick="--quick" in sys.argv)
    result.elapsed = time.monotonic() - started
    print(f"Python {platform.python_version()} on {platform.machine()}\n")
    print(result.markdown())
    sys.exit(0 if all(g.met for g in result.goals) else 1)


if __name__ == "__main__":
    main()
