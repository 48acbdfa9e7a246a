"""A short soak: the real daemon through a few hundred rounds of flapping faults.

Leaks in a daemon show up as growth per round, so the same soak as
bench/soak.py runs here, shorter, and fails on descriptors or threads that
outlive the faults that created them.  Start and end are both sampled with the
faults cleared after a few clean rounds, so they describe the same steady state.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any

import pytest

from testbed import ROOT

ROUNDS = 150
INTERVAL = 0.2  # the shortest interval the settings take (0.2 s)
FD_TOLERANCE = 3
THREAD_TOLERANCE = 3
RSS_BOUND = 50 * 2**20


def _load_bench() -> ModuleType:
    """bench/ is a directory of scripts, not a package: load the file itself."""
    name = "sts_agent_bench_soak"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


soak = _load_bench()


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return soak.run_soak(
        rounds=ROUNDS,
        seconds=120,  # a cap only: a stalled daemon ends the soak short of ROUNDS
        interval=INTERVAL,
        flap_every=1.0,
        warmup=6.0,
        sample_every=3.0,
        seed=7,
        workdir=tmp_path_factory.mktemp("soak"),
    )


def test_daemon_kept_completing_rounds_through_the_faults(result: Any) -> None:
    r = result
    print("\n" + soak.format_report(r))
    assert r.rounds >= ROUNDS, soak.format_report(r)
    assert r.stalled_windows() == [], soak.format_report(r)
    assert r.exit_code == 0, r.log_tail
    assert "Traceback" not in r.log_tail and "round failed" not in r.log_tail, r.log_tail


def test_the_faults_really_flapped(result: Any) -> None:
    r = result
    for flip in (
        "sts hang",
        "sts reset_response",
        "sts error:Throttling",
        "dns timeout",
        "imds timeout",
        "private-dns off",
        "private-dns on",
    ):
        assert r.flips[flip] > 0, (flip, dict(r.flips))


def test_no_descriptor_or_thread_leak(result: Any) -> None:
    r = result
    report = soak.format_report(r)
    assert r.end.fds - r.start.fds <= FD_TOLERANCE, report
    assert r.end.threads - r.start.threads <= THREAD_TOLERANCE, report


def test_memory_growth_is_bounded(result: Any) -> None:
    r = result
    assert r.end.rss_bytes - r.start.rss_bytes < RSS_BOUND, soak.format_report(r)


def test_memory_is_compared_with_the_history_window_full(result: Any) -> None:
    assert result.start.history_rounds == result.end.history_rounds == 120, soak.format_report(
        result
    )


def test_report_shows_the_machine_and_the_table() -> None:
    """The report a soak prints: machine first, then start/end/change per resource."""
    start = soak.Sample(0.0, 50 * 2**20, 6, 7, 40, 1, 120)
    end = soak.Sample(200.0, 52 * 2**20, 6, 8, 1240, 9, 120)
    r = soak.SoakResult(start, end, [start, end], 0.2, 2.0)
    text = soak.format_report(r)
    assert text.splitlines()[0].startswith("cpus: ")
    assert "\ncpu model: " in text and "\npython: " in text
    assert "soak: 1200 rounds in 200 s at interval 0.2 s" in text
    rows = {line[:24].strip(): line[24:].split() for line in text.splitlines()}
    assert rows["RSS (MiB)"] == ["50.0", "52.0", "+2.0"]
    assert rows["open file descriptors"] == ["6", "6", "+0"]
    assert rows["threads"] == ["7", "8", "+1"]
    assert rows["rounds completed"] == ["40", "1240", "+1200"]
    assert rows["rounds skipped"] == ["1", "9", "+8"]
    assert rows["history rounds held"] == ["120", "120", "+0"]
