"""Status page render time and history memory with a full window.

The page is rendered on every request, from the daemon's window of recent
rounds, so with the window full (120 rounds) it must stay well under 100 ms
even on a loaded host.  Synthetic rounds fill the window the way a bad hour
would: the regional name flips to the public path and back every 20 rounds,
one ENI fails every third round, findings come and go.  Two layouts: the
default one (two names, three addresses each) and a large one (25 names with
four ENIs and two public addresses each, 150 targets).  Each render is timed
alone with `perf_counter`; the page with the latest round only is timed in the
same run, so the history's own cost reads as the difference.  The window's
memory is what `tracemalloc` sees retained after the rounds that filled it are
gone.

    python -m bench.status_page            # 200 renders per variant
    python -m bench.status_page --quick
"""

from __future__ import annotations

import gc
import json
import time
import tracemalloc
from collections.abc import Callable

from agent.history import MAX_ROUNDS, History
from agent.results import Report
from agent.surfaces import status_page
from agent.surfaces.history_json import to_json
from bench.machine import describe
from bench.report import Goal, Result, cli, emit
from bench.stats import median, ms, percentile, ratio, table
from testbed.rounds import Call, Round, synthetic_report

GOAL_MS = 100.0
INTERVAL = 30.0  # the default: 120 rounds are the last hour


def layout(names: int, enis: int, public: int) -> Callable[[int], Round]:
    """Round i of a bad hour for `names` endpoints."""

    def round_(i: int) -> Round:
        out: dict[str, tuple[str, list[Call]]] = {}
        for n in range(names):
            host = f"sts.region-{n}.amazonaws.com" if n else "sts.us-east-2.amazonaws.com"
            flipped = n == 0 and (i // 20) % 2 == 1
            calls: list[Call] = [
                (f"127.20.{n}.{k}", "public", 0.030 + k * 0.004) for k in range(public)
            ]
            if not flipped:
                calls = [
                    (
                        f"127.10.{n}.{k}",
                        "vpce",
                        None if k == 1 and i % 3 == 0 else 0.008 + (i * 7 + k) % 11 / 1000,
                    )
                    for k in range(enis)
                ] + ([] if n == 0 else calls)
            out[host] = ("public" if flipped else "vpce", calls)  # type: ignore[assignment]
        return out  # type: ignore[return-value]

    return round_


def fill(shape: Callable[[int], Round], now: float) -> tuple[History, Report]:
    h = History()
    last: Report | None = None
    for i in range(MAX_ROUNDS):
        at = now - (MAX_ROUNDS - i) * INTERVAL
        found = (
            [("PRIVATE_DNS_NOT_RESOLVING", "sts.us-east-2.amazonaws.com")] if (i // 20) % 2 else []
        )
        if i % 3 == 0:
            found.append(("STS_CALL_FAILED", "sts.us-east-2.amazonaws.com"))
        last = synthetic_report(at, shape(i), found)
        h.add(last)
    assert last is not None
    return h, last


def retained_bytes(shape: Callable[[int], Round], now: float) -> int:
    """Memory the full window keeps once the Reports that filled it are gone."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        h, last = fill(shape, now)
        del last
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(h.snapshot(now).times) == MAX_ROUNDS
    return after - before


def timed(fn: Callable[[], object], n: int) -> list[float]:
    fn()  # warm
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def run(quick: bool) -> Result:
    n = 30 if quick else 200
    now = time.time()
    layouts = {
        "default (2 names × 3 addresses)": (2, 3, 3),
        "large (25 names, 150 targets)": (25, 4, 2),
    }
    rows, mem_rows, goals = [], [], []
    for name, (names, enis, public) in layouts.items():
        shape = layout(names, enis, public)
        h, last = fill(shape, now)
        page = status_page.render(last, history=h)
        latest = timed(lambda last=last: status_page.render(last), n)  # type: ignore[misc]
        full = timed(lambda last=last, h=h: status_page.render(last, history=h), n)  # type: ignore[misc]
        api = timed(lambda h=h: json.dumps(to_json(h), separators=(",", ":")), n)  # type: ignore[misc]
        body = json.dumps(to_json(h), separators=(",", ":"))
        rows.append(
            [
                name,
                ms(median(latest)),
                ms(median(full)),
                ms(percentile(full, 99)),
                ratio(median(full), median(latest)),
                f"{len(page) / 1024:.0f}",
                ms(median(api)),
                f"{len(body) / 1024:.0f}",
            ]
        )
        kib = retained_bytes(shape, now) / 1024
        mem_rows.append([name, MAX_ROUNDS, f"{kib:.0f}", f"{kib * 1024 / MAX_ROUNDS:.0f}"])
        goals.append(
            Goal(
                f"page with a full window, {name}: median ≤ {GOAL_MS:.0f} ms",
                median(full) * 1000 <= GOAL_MS,
                f"{ms(median(full))} ms",
                "the page renders per request, from the window",
            )
        )
    return Result(
        key="status_page",
        title="Status page with a full history window",
        method=(__doc__ or "").split("\n\n")[1].replace("\n", " "),
        tables=[
            table(
                (
                    "Layout",
                    "latest round only, median ms",
                    "with full window, median ms",
                    "p99 ms",
                    "ratio",
                    "page KiB",
                    "/api/history median ms",
                    "JSON KiB",
                ),
                rows,
            ),
            table(("Layout", "rounds held", "window KiB retained", "bytes per round"), mem_rows),
        ],
        goals=goals,
        notes=[f"{n} renders per variant, each timed alone; Python's `perf_counter`."],
    )


def main() -> None:
    """Like the other scripts' entry point, without blackbox_exporter: it has no status page."""
    args = cli("status_page", __doc__)
    started = time.monotonic()
    machine = describe(with_blackbox=False)
    result = run(args.quick)
    result.machine = machine
    emit(result, args, started)


if __name__ == "__main__":
    main()
