"""No regression: this code beside the revision the cost goals were set on, in one run.

Absolute CPU figures move with the machine (blackbox_exporter's own CPU per
round has moved by half between runs on the same host), so "does not
regress" is judged side by side instead.

The revision the footprint goals were set on (BASELINE, whose BENCHMARKS.md
gave 38.3 MiB steady RSS, 18.2 ms CPU per round and a /metrics p99 of
0.98 ms) is exported with `git archive` into a temporary directory, and its
agent runs from there under this checkout's harness, against the same
simulated servers and with the same configuration file as this code's agent.
The two alternate, window by window (the footprint benchmark's window at a
1 s interval, blackbox_exporter driving its probes alongside as there), so
drift on the machine hits both alike. Each window gives the agent's CPU per
round, its median RSS, and after the window the wall time of back-to-back
/metrics scrapes (from the client's side, with rounds still running); the
figures are medians over the windows.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from bench.footprint import measure
from bench.machine import describe
from bench.procs import REPO
from bench.report import Goal, Result, cli, emit, method
from bench.stats import median, ms, ratio, table
from bench.targets import simulated_targets

#: The revision whose docs/BENCHMARKS.md set the RSS, CPU-per-round and scrape figures
#: that later work must not regress.
BASELINE = "96d422e"
#: How much worse than the baseline a median may be and still count as "no regression":
#: the spread between windows of the same code on one machine.
TOLERANCE = 0.05
FIGURES = (
    ("agent_cpu_ms", "CPU ms per round", 2),
    ("agent_rss", "steady RSS MiB", 1),
    ("scrape_p50", "/metrics scrape p50 ms", 3),
    ("scrape_p99", "/metrics scrape p99 ms", 3),
    ("scrape_lines", "/metrics lines", 0),
    ("blackbox_cpu_ms", "blackbox_exporter's CPU ms per round, alongside", 2),
)
#: The figures the goals were set on; the others say why these moved.
JUDGED = ("agent_cpu_ms", "agent_rss", "scrape_p99")


def export(revision: str, into: Path) -> Path:
    """The tree at `revision`, as files (no checkout, no change to this repository)."""
    into.mkdir(parents=True)
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", revision],
            capture_output=True,
            check=True,
        ).stdout
    except FileNotFoundError:
        raise SystemExit("bench.regress: git is not installed") from None
    except subprocess.CalledProcessError as e:
        why = e.stderr.decode(errors="replace").strip().splitlines()
        raise SystemExit(
            f"bench.regress: revision {revision!r} not in {REPO}: {why[-1] if why else e}"
        ) from None
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _shown(key: str, v: float, digits: int) -> str:
    return ms(v, digits) if key.endswith(("_p50", "_p99")) else f"{v:.{digits}f}"


def run(quick: bool, revision: str = BASELINE) -> Result:
    pairs, warmup, window, scrapes = (1, 5.0, 20.0, 100) if quick else (3, 8.0, 30.0, 300)
    windows: dict[str, list[dict[str, float]]] = {"baseline": [], "this code": []}
    with tempfile.TemporaryDirectory(prefix="sts-bench-") as d:
        tmp = Path(d)
        trees = {"baseline": export(revision, tmp / "baseline"), "this code": REPO}
        with simulated_targets(tmp / "sim") as t:
            for i in range(pairs):
                order = ("baseline", "this code") if i % 2 == 0 else ("this code", "baseline")
                for who in order:
                    windows[who].append(
                        measure(t, tmp, warmup, window, {}, source=trees[who], scrapes=scrapes)
                    )
    med = {
        who: {k: median([w[k] for w in ws]) for k, _, _ in FIGURES} for who, ws in windows.items()
    }
    base, now = med["baseline"], med["this code"]
    result = Result("regress", "No regression beside the baseline revision", method(__doc__))
    rows = []
    for key, label, digits in FIGURES:
        per_window = " / ".join(
            f"{_shown(key, w[key], digits)} · {_shown(key, v[key], digits)}"
            for w, v in zip(windows["baseline"], windows["this code"], strict=True)
        )
        rows.append(
            [
                label,
                _shown(key, base[key], digits),
                _shown(key, now[key], digits),
                ratio(now[key], base[key]),
                per_window,
            ]
        )
    result.tables.append(
        table(
            (
                "Median over the windows",
                f"baseline ({revision})",
                "this code",
                "this ÷ baseline",
                "each pair of windows (baseline · this)",
            ),
            rows,
        )
    )
    for key, label, digits in FIGURES:
        if key not in JUDGED:
            continue
        limit = base[key] * (1 + TOLERANCE)
        result.goals.append(
            Goal(
                f"{label}: no worse than {revision}'s, side by side (within {TOLERANCE:.0%})",
                now[key] <= limit,
                f"{_shown(key, now[key], digits)} vs {_shown(key, base[key], digits)} "
                f"({ratio(now[key], base[key])})",
                f"medians of {pairs} window(s) each, alternating; blackbox_exporter's CPU per "
                f"round alongside was {base['blackbox_cpu_ms']:.2f} ms in the baseline's "
                f"windows and {now['blackbox_cpu_ms']:.2f} ms in this code's",
            )
        )
    result.notes.append(
        f"{pairs} pair(s) of windows, {window:.0f} s each after {warmup:.0f} s of warm-up; "
        f"{scrapes} scrapes after each window. The baseline's agent reads the same "
        "configuration file as this code's (written by this checkout's harness)."
    )
    result.notes.append(
        "The scrape figures here are for a healthy VPC with rounds running (the scrape-latency "
        "benchmark's goal is set with one target hanging); a scrape's cost follows its "
        "lines, given above for each."
    )
    return result


def main() -> None:
    def setup(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--base",
            default=BASELINE,
            metavar="REV",
            help=f"the revision to compare against (default {BASELINE})",
        )

    args = cli("regress", __doc__, setup)
    started = time.monotonic()
    machine = describe()
    result = run(args.quick, args.base)
    result.machine = machine
    emit(result, args, started)


if __name__ == "__main__":
    main()
