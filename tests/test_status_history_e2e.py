"""The status page's history, end to end: a real daemon, a path flip, a flapping ENI, Chromium.

The daemon runs against the simulated VPC; its DNS server is told to answer the
public address and then the ENIs again (private DNS switched off and on, as the
console checkbox does), and one ENI's STS server fails every other round for a
while.  Headless Chromium then loads the page: the DOM it built must carry the
flip and the failures in the SVG, exactly as `/api/history` lists them.  A
screenshot goes to the test log.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from agent.simulate.demo import ENI_ADDRESSES, PUBLIC_REGIONAL, REGIONAL
from tests.support.chromium import dump_dom, screenshot
from tests.support.faults import LiveAgent, live_agent

FLAPPY = ENI_ADDRESSES[1]
FLAPS = 3


class HistoryDom(HTMLParser):
    """The history section of a DOM: path segments, sparklines and the failures in each."""

    def __init__(self, dom: str) -> None:
        super().__init__()
        self.section: dict[str, str | None] = {}
        self.segments: list[dict[str, str | None]] = []
        self.sparks: list[dict[str, str | None]] = []
        self.failures: dict[tuple[str | None, str | None], list[str | None]] = {}
        self.findings: dict[str | None, dict[str, str | None]] = {}
        self._svg: dict[str, str | None] = {}
        self.feed(dom)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        cls = a.get("class")
        if a.get("id") == "history":
            self.section = a
        elif tag == "svg":
            self._svg = a
            if cls == "spark":
                self.sparks.append(a)
        elif tag == "g" and cls == "seg" and self._svg.get("data-endpoint") == REGIONAL:
            self.segments.append(a)
        elif tag == "path" and cls == "fail":
            key = (self._svg.get("data-endpoint"), self._svg.get("data-address"))
            self.failures.setdefault(key, []).append(a.get("data-at"))
        elif tag == "tr" and "data-code" in a:
            self.findings[a["data-code"]] = a


def _history(live: LiveAgent) -> dict[str, Any]:
    status, body = live.agent.get("/api/history")
    assert status == 200, body[:500]
    return dict(json.loads(body))


def _regional(doc: dict[str, Any]) -> dict[str, Any]:
    return next(e for e in doc["endpoints"] if e["endpoint"] == REGIONAL)


def _wait_path(live: LiveAgent, path: str, runs_at_least: int) -> None:
    """Until the regional name has held `path` for two rounds, as its `runs_at_least`-th run."""

    def held() -> bool:
        live.assert_alive()
        runs = _regional(_history(live))["paths"]
        return len(runs) >= runs_at_least and runs[-1]["path"] == path and runs[-1]["rounds"] >= 2

    _until(held, f"the regional name on {path} (run {runs_at_least})")


def _samples(live: LiveAgent, address: str) -> list[dict[str, Any]]:
    ep = _regional(_history(live))
    return next((a["samples"] for a in ep["addresses"] if a["address"] == address), [])


def _until(predicate: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_page_draws_a_path_flip_and_a_flapping_eni_as_the_json_lists_them(
    tmp_path: Path,
) -> None:
    with live_agent(tmp_path) as live:
        _wait_path(live, "vpce", 1)
        live.vpc.private_dns(False)  # the name now resolves to the public front door
        _wait_path(live, "public", 2)
        live.vpc.private_dns(True)
        _wait_path(live, "vpce", 3)
        server = live.vpc.sts[FLAPPY]
        for _ in range(FLAPS):
            failed = sum(not s["success"] for s in _samples(live, FLAPPY))
            server.fault = "http_503"
            _until(
                lambda n=failed: sum(not s["success"] for s in _samples(live, FLAPPY)) > n,
                "a failed round on the flapping ENI",
            )
            server.fault = None
            _until(lambda: _samples(live, FLAPPY)[-1]["success"], "the ENI answering again")
        url = f"{live.agent.base}/"
        dom = dump_dom(url, tmp_path)
        shot = screenshot(url, tmp_path / "status-history.png", tmp_path)
        print(f"\nstatus page screenshot: {shot} ({shot.stat().st_size} bytes)")
        doc = _history(live)  # after the DOM: it may hold a round or two more

    page = HistoryDom(dom)
    end, rounds = page.section["data-end"], int(page.section["data-rounds"] or 0)
    assert end and 0 < rounds < doc["window"]["max_rounds"], page.section  # nothing slid out
    assert page.section["data-start"] == doc["window"]["start"]

    # The flip: the strip's segments are the JSON's path runs, up to the page's last round.
    runs = [r for r in _regional(doc)["paths"] if r["start"] <= end]
    segs = [(s["data-path"], s["data-start"]) for s in page.segments]
    assert segs == [(r["path"], r["start"]) for r in runs]
    paths = [p for p, _ in segs]
    assert paths[:3] == ["vpce", "public", "vpce"], paths
    assert [s["data-rounds"] for s in page.segments[:-1]] == [str(r["rounds"]) for r in runs[:-1]]

    # The flapping ENI: one cross per failed round, at the times the JSON gives.
    eni = next(a for a in _regional(doc)["addresses"] if a["address"] == FLAPPY)
    json_failed = [s["at"] for s in eni["samples"] if not s["success"] and s["at"] <= end]
    assert len(json_failed) >= FLAPS
    assert page.failures[(REGIONAL, FLAPPY)] == json_failed
    assert eni["p50_seconds"] is not None and eni["p99_seconds"] >= eni["p50_seconds"]

    # The public phase is one aggregate row; its concrete address is no row of its own.
    addresses = {s["data-address"] for s in page.sparks if s["data-endpoint"] == REGIONAL}
    assert addresses == {*ENI_ADDRESSES, "public"}
    assert PUBLIC_REGIONAL not in {s["data-address"] for s in page.sparks}

    # The finding the flip raised: when it began and how long it held, as in the JSON.
    raised = {f["code"]: f for f in doc["findings"] if f["first_seen"] <= end}
    assert "PRIVATE_DNS_NOT_RESOLVING" in raised, sorted(raised)
    assert set(raised) <= set(page.findings), (sorted(raised), sorted(map(str, page.findings)))
    flip = raised["PRIVATE_DNS_NOT_RESOLVING"]
    assert flip["rounds"] >= 2 and not flip["active"]
    assert page.findings["PRIVATE_DNS_NOT_RESOLVING"]["data-rounds"] == str(flip["rounds"])


def test_a_process_named_with_invalid_bytes_does_not_break_the_page(tmp_path: Path) -> None:
    """A neighbour sets its own name to bytes that are not UTF-8 (anyone may)."""
    rename = (
        "import time; open('/proc/self/comm', 'wb').write(b'\\xff<b>python'); "
        "open(__import__('sys').argv[1], 'w').close(); time.sleep(60)"
    )
    ready = tmp_path / "renamed"
    env = {"PATH": "/usr/bin:/bin", "AWS_REGION": "us-east-2"}
    child = subprocess.Popen([sys.executable, "-c", rename, str(ready)], env=env)
    try:
        _until(ready.exists, "the neighbour renamed")
        with live_agent(tmp_path, audit__processes=True) as live:
            live.wait_rounds(2)
            status, body = live.agent.get("/")
    finally:
        child.kill()
        child.wait()
    assert status == 200, body[:2000]
    assert "\ufffd&lt;b&gt;python" in body and "<b>python" not in body
