"""Start-up: process start to ready, several times over.

The agent is ready (/-/ready answers 200) once its first round has finished:
Python start-up and imports, discovery (IMDS, resolvers, the SDK view in its
child process), then DNS and every probe, against the default simulated set
(regional + global names, three addresses each).  Its HTTP listener comes up
before that (/-/healthy).  blackbox_exporter has no round to wait for: it is
ready when it listens, and has a result when its first /probe returns, so
both times are shown for it.  Each run is a fresh process; runs alternate
between the tools.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

from bench.blackbox import binary, modules_for
from bench.procs import REPO, free_port, wait_http
from bench.report import Goal, Result, main_for, method
from bench.stats import median, ms, percentile, ratio, table
from bench.targets import DEFAULT_LAYOUT, REGIONAL, Targets, simulated_targets
from testbed.agent_proc import agent_env, vpc_config
from testbed.procs import stop_process

GOAL_S = 1.5


def _time_to(
    argv: list[str], log: Path, urls: tuple[str, str], env: dict[str, str] | None = None
) -> tuple[float, float]:
    """Start a fresh process; seconds from its start until each URL answers 200, in turn."""
    started = time.perf_counter()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
    try:
        wait_http(urls[0], proc, log)
        first = time.perf_counter() - started
        wait_http(urls[1], proc, log)
        second = time.perf_counter() - started
    finally:
        stop_process(proc)
    return first, second


def agent_once(t: Targets, tmp: Path) -> tuple[float, float]:
    """(seconds to /-/healthy, seconds to /-/ready) for one fresh agent process."""
    port = free_port()
    config = vpc_config(t.vpc, tmp / f"agent-{port}.toml", port, interval=30, timeout=5)
    base = f"http://127.0.0.1:{port}"
    return _time_to(
        [sys.executable, "-m", "agent", "serve", "--config", str(config)],
        tmp / f"agent-{port}.log",
        (f"{base}/-/healthy", f"{base}/-/ready"),
        env=agent_env(t.vpc),
    )


def blackbox_once(t: Targets, tmp: Path) -> tuple[float, float]:
    """(seconds to /-/ready, seconds until a first /probe has answered)."""
    import yaml

    config = tmp / "blackbox.yml"
    if not config.exists():
        config.write_text(yaml.safe_dump({"modules": modules_for(t)}))
    port = free_port()
    target = f"https://{DEFAULT_LAYOUT[REGIONAL][0]}:{t.port}/"
    query = urllib.parse.urlencode({"module": f"sts:{REGIONAL}", "target": target})
    base = f"http://127.0.0.1:{port}"
    return _time_to(
        [binary(), f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}"],
        tmp / f"blackbox-{port}.log",
        (f"{base}/-/ready", f"{base}/probe?{query}"),
    )


def run(quick: bool) -> Result:
    runs = 3 if quick else 10
    agent_healthy: list[float] = []
    agent_ready: list[float] = []
    bb_ready: list[float] = []
    bb_first: list[float] = []
    with tempfile.TemporaryDirectory(prefix="sts-bench-") as d:
        tmp = Path(d)
        with simulated_targets(tmp / "sim") as t:
            agent_once(t, tmp)  # page in the interpreter and libraries, untimed
            blackbox_once(t, tmp)
            for _ in range(runs):
                h, r = agent_once(t, tmp)
                agent_healthy.append(h)
                agent_ready.append(r)
                r, f = blackbox_once(t, tmp)
                bb_ready.append(r)
                bb_first.append(f)
    result = Result(
        "startup",
        "Start-up",
        method(__doc__),
    )

    def row(label: str, xs: list[float]) -> list[object]:
        return [label, len(xs), ms(median(xs), 0), ms(percentile(xs, 90), 0), ms(max(xs), 0)]

    result.tables.append(
        table(
            ("Process start to", "Runs", "median ms", "p90 ms", "max ms"),
            [
                row("sts-agent /-/healthy (listening)", agent_healthy),
                row("sts-agent /-/ready (first round done)", agent_ready),
                row("blackbox_exporter /-/ready (listening)", bb_ready),
                row("blackbox_exporter first /probe answered", bb_first),
            ],
        )
    )
    result.tables.append(
        table(
            ("Ratio (median)", ""),
            [
                [
                    "agent ready ÷ blackbox first probe",
                    ratio(median(agent_ready), median(bb_first)),
                ],
                [
                    "agent listening ÷ blackbox listening",
                    ratio(median(agent_healthy), median(bb_ready)),
                ],
            ],
        )
    )
    ready = median(agent_ready)
    first_round = ready - median(agent_healthy)
    result.goals.append(
        Goal(
            f"start → /-/ready ≤ {GOAL_S} s (median)",
            ready <= GOAL_S,
            f"{ms(ready, 0)} ms (blackbox first probe {ms(median(bb_first), 0)} ms)",
            f"{ms(median(agent_healthy), 0)} ms to start Python, import and listen, "
            f"{ms(first_round, 0)} ms for discovery and the first round",
        )
    )
    return result


def main() -> None:
    main_for("startup", __doc__, run)


if __name__ == "__main__":
    main()
