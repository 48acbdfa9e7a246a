"""The window of recent rounds: what it keeps, for how long, and what it derives."""

from __future__ import annotations

import gc
import json
import statistics
import tracemalloc
import weakref
from dataclasses import replace

import pytest

from agent.history import MAX_ADDRESS_ROWS, MAX_ROUNDS, History, percentile, window
from agent.results import Path
from agent.surfaces.history_json import iso, to_json
from agent.surfaces.series import PUBLIC
from testbed.rounds import Call, Round, synthetic_report

REGIONAL = "sts.us-east-2.amazonaws.com"
GLOBAL = "sts.amazonaws.com"
ENIS = ("127.10.138.148", "127.10.139.20")
T0 = 1_800_000_000.0


def healthy(i: int = 0) -> Round:
    return {
        REGIONAL: ("vpce", [(ENIS[0], "vpce", 0.010 + i % 3 * 0.001), (ENIS[1], "vpce", 0.012)]),
        GLOBAL: ("public", [("127.20.0.10", "public", 0.050)]),
    }


def test_the_window_keeps_the_last_rounds_up_to_the_round_cap() -> None:
    h = History(max_rounds=120, max_seconds=3600)
    for i in range(130):
        h.add(synthetic_report(T0 + i, healthy(i)))
    times = h.snapshot(now=T0 + 130).times
    assert len(times) == 120
    assert times[0] == T0 + 10 and times[-1] == T0 + 129


def test_the_window_drops_rounds_older_than_the_age_cap_even_when_none_arrive() -> None:
    h = History(max_rounds=120, max_seconds=3600)
    for i in range(100):  # one round a minute: the hour, not the round cap, bounds it
        h.add(synthetic_report(T0 + 60 * i, healthy()))
    last = T0 + 60 * 99
    assert len(h.snapshot(now=last).times) == 61
    assert h.snapshot(now=last + 1800).times[0] == last - 1800
    assert h.snapshot(now=last + 3601).times == ()


def test_rotating_enis_keep_a_bounded_number_of_rows_and_every_current_one() -> None:
    """A new ENI every round for the whole window: before, 120 rows for one endpoint."""
    h = History()
    for i in range(MAX_ROUNDS):
        fresh = f"127.10.{i // 200}.{i % 200 + 1}"
        h.add(
            synthetic_report(
                T0 + i, {REGIONAL: ("vpce", [(ENIS[0], "vpce", 0.01), (fresh, "vpce", 0.01)])}
            )
        )
    rows = [k for k in h.snapshot(now=T0 + MAX_ROUNDS).columns if k[0] == REGIONAL]
    assert len(rows) == MAX_ADDRESS_ROWS
    kept = {address for _, address in rows}
    assert ENIS[0] in kept and f"127.10.0.{MAX_ROUNDS}" in kept  # both in the latest round
    assert "127.10.0.1" not in kept  # the oldest rotated-out ENI went first
    assert f"127.10.0.{MAX_ROUNDS - 1}" in kept  # recently seen ones stay


def test_public_addresses_form_one_row_per_endpoint_whatever_ips_rotate() -> None:
    h = History()
    for i in range(4):  # DNS rotation: new public IPs every round
        calls: list[Call] = [
            (f"127.20.{i}.1", "public", 0.020),
            (f"127.20.{i}.2", "public", None if i == 2 else 0.035),
        ]
        h.add(synthetic_report(T0 + i, {REGIONAL: ("public", calls)}))
    w = window(h.snapshot(now=T0 + 4))
    assert [(s.endpoint, s.address, s.klass) for s in w.series] == [(REGIONAL, PUBLIC, "public")]
    pts = w.series[0].points
    assert [p.success for p in pts] == [True, True, False, True]
    assert [p.total for p in pts] == [0.035, 0.035, 0.020, 0.035]  # the slowest public address
    assert pts[2].reason == "http_5xx"


def test_an_address_still_probed_after_dns_moved_on_keeps_its_own_class() -> None:
    calls = [
        (ENIS[0], "vpce", 0.01),
        ("127.20.0.20", "public", 0.03),
        ("10.9.9.9", "private", 0.02),
    ]
    r = synthetic_report(T0, {REGIONAL: ("vpce", calls)})  # type: ignore[dict-item]
    ep = r.endpoints[0]
    answered = replace(ep.verdicts[0], addresses=ep.verdicts[0].addresses[:1])  # TTL not out yet
    h = History()
    h.add(replace(r, endpoints=(replace(ep, verdicts=(answered,)),)))
    w = window(h.snapshot(now=T0))
    assert [(s.address, s.klass) for s in w.series] == [
        (ENIS[0], "vpce"),
        ("10.9.9.9", "private"),
        (PUBLIC, "public"),
    ]


def test_path_runs_record_a_flip_and_its_return() -> None:
    h = History()
    paths: list[Path] = ["vpce", "vpce", "vpce", "public", "public", "vpce"]
    for i, path in enumerate(paths):
        addr: Call = (ENIS[0], "vpce", 0.01) if path == "vpce" else ("127.20.0.20", "public", 0.03)
        h.add(synthetic_report(T0 + i, {REGIONAL: (path, [addr])}))
    runs = window(h.snapshot(now=T0 + 6)).paths[REGIONAL]
    assert [(r.path, r.rounds, r.start, r.end) for r in runs] == [
        ("vpce", 3, T0, T0 + 2),
        ("public", 2, T0 + 3, T0 + 4),
        ("vpce", 1, T0 + 5, T0 + 5),
    ]


def test_rows_that_left_the_window_go_with_it() -> None:
    h = History(max_rounds=10)
    for i in range(3):
        h.add(synthetic_report(T0 + i, {REGIONAL: ("public", [("127.20.0.20", "public", 0.03)])}))
    for i in range(3, 13):
        h.add(synthetic_report(T0 + i, {GLOBAL: ("public", [("127.20.0.10", "public", 0.05)])}))
    w = window(h.snapshot(now=T0 + 13))
    assert list(w.paths) == [GLOBAL] and [(s.endpoint, s.address) for s in w.series] == [
        (GLOBAL, PUBLIC)
    ]


def test_a_round_without_the_endpoint_ends_its_run() -> None:
    h = History()
    regional = {REGIONAL: ("vpce", [(ENIS[0], "vpce", 0.01)])}
    for i, rnd in enumerate([regional, {}, regional]):
        h.add(synthetic_report(T0 + i, rnd))  # type: ignore[arg-type]
    w = window(h.snapshot(now=T0 + 3))
    assert [(r.path, r.start, r.rounds) for r in w.paths[REGIONAL]] == [
        ("vpce", T0, 1),
        ("vpce", T0 + 2, 1),
    ]
    assert [p.at for p in w.series[0].points] == [T0, T0 + 2]


def test_percentiles_use_successful_calls_only() -> None:
    h = History()
    for i in range(101):
        total = None if i % 10 == 0 else i / 1000
        h.add(synthetic_report(T0 + i, {REGIONAL: ("vpce", [(ENIS[0], "vpce", total)])}))
    s = window(h.snapshot(now=T0 + 101)).series[0]
    ok = [i / 1000 for i in range(101) if i % 10]
    assert s.failures == 11
    assert s.p50 == pytest.approx(statistics.median(ok))
    assert s.p99 == pytest.approx(statistics.quantiles(ok, n=100, method="inclusive")[98])
    assert percentile([], 50) is None and percentile([3.0], 99) == 3.0


def test_findings_say_when_they_first_appeared_and_how_many_rounds_they_held() -> None:
    h = History()
    for i in range(10):
        found: list[tuple[str, str | None]] = (
            [("PRIVATE_DNS_NOT_RESOLVING", REGIONAL)] if 3 <= i < 6 else []
        )
        found += [("SDK_USES_GLOBAL_ENDPOINT", None)] if i >= 8 else []
        h.add(synthetic_report(T0 + i, healthy(), found))
    spans = {f.key.code: f for f in window(h.snapshot(now=T0 + 10)).findings}
    dns = spans["PRIVATE_DNS_NOT_RESOLVING"]
    assert (dns.first, dns.last, dns.rounds, dns.active) == (T0 + 3, T0 + 5, 3, False)
    sdk = spans["SDK_USES_GLOBAL_ENDPOINT"]
    assert (sdk.first, sdk.rounds, sdk.active, sdk.key.endpoint) == (T0 + 8, 2, True, None)


def test_the_history_keeps_summaries_not_reports() -> None:
    h = History()
    report = synthetic_report(T0, healthy())
    ref = weakref.ref(report)
    h.add(report)
    del report
    gc.collect()
    assert ref() is None, "the history must not keep the round's Report alive"


def test_memory_stays_flat_once_the_window_is_full() -> None:
    h = History(max_rounds=120, max_seconds=1e9)
    tracemalloc.start()
    try:
        for i in range(120):
            h.add(synthetic_report(T0 + i, healthy(i)))
        gc.collect()
        full = tracemalloc.get_traced_memory()[0]
        for i in range(120, 1200):
            h.add(synthetic_report(T0 + i, healthy(i)))
        gc.collect()
        later = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(h.snapshot(now=T0 + 1200).times) == 120
    assert later - full < 16 * 1024, f"grew {later - full} bytes after 1080 more rounds"


def test_json_carries_the_window_runs_samples_and_findings() -> None:
    h = History()
    for i in range(5):
        calls: list[Call] = [(ENIS[0], "vpce", 0.01), (ENIS[1], "vpce", None if i % 2 else 0.02)]
        found = [("STS_CALL_FAILED", REGIONAL)] if i % 2 else []
        h.add(synthetic_report(T0 + i, {REGIONAL: ("vpce", calls)}, found))
    doc = json.loads(json.dumps(to_json(h, window(h.snapshot(now=T0 + 5)))))
    assert doc["schema_version"] == 1
    assert doc["window"] == {
        "max_rounds": 120,
        "max_seconds": 3600.0,
        "rounds": 5,
        "start": iso(T0),
        "end": iso(T0 + 4),
    }
    (ep,) = doc["endpoints"]
    assert ep["paths"] == [{"path": "vpce", "start": iso(T0), "end": iso(T0 + 4), "rounds": 5}]
    flappy = next(a for a in ep["addresses"] if a["address"] == ENIS[1])
    assert (flappy["class"], flappy["rounds"], flappy["failures"]) == ("vpce", 5, 2)
    assert [s["success"] for s in flappy["samples"]] == [True, False, True, False, True]
    assert flappy["samples"][1] == {
        "at": iso(T0 + 1),
        "success": False,
        "total_seconds": None,
        "reason": "http_5xx",
    }
    assert flappy["p50_seconds"] == pytest.approx(0.02)
    assert doc["findings"] == [
        {
            "code": "STS_CALL_FAILED",
            "severity": "warning",
            "endpoint": REGIONAL,
            "first_seen": iso(T0 + 1),
            "last_seen": iso(T0 + 3),
            "rounds": 2,
            "active": False,
        }
    ]


def test_iso_times_are_utc_with_milliseconds() -> None:
    assert iso(1_800_000_000.25) == "2027-01-15T08:00:00.250Z"
