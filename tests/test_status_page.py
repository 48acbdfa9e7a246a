"""The status page's markup: quoted attributes, text that cannot break it, the history SVG."""

from __future__ import annotations

import os
import re
import time
from dataclasses import replace
from html.parser import HTMLParser

from agent.audit.host import HostAuditResult
from agent.audit.processes import ProcessAudit, ProcessSdk
from agent.history import History, window
from agent.results import Report
from agent.surfaces import status_page
from agent.surfaces.history_json import iso, to_json
from tests.support.rounds import synthetic_report

REGIONAL = "sts.us-east-2.amazonaws.com"
ENI = "127.10.138.148"
T0 = time.time() - 600
_ATTR = re.compile(r"""\s+([^\s=>/]+)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s>]+))?""")


class Elements(HTMLParser):
    """Every start tag with its attributes, as a browser's parser sees them."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        want = {k.replace("_", "-"): v for k, v in attrs.items()}
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in want.items())]


def _with_processes(report: Report, *procs: ProcessSdk) -> Report:
    audit = ProcessAudit(permitted=True, inspected=len(procs), denied=0, processes=procs)
    return replace(report, audit=HostAuditResult(processes=audit))


def _round(at: float = T0) -> Report:
    return synthetic_report(at, {REGIONAL: ("vpce", [(ENI, "vpce", 0.01)])})


def test_every_attribute_is_quoted_so_a_value_cannot_add_one() -> None:
    hostile = "x onmouseover=alert(1)"
    report = _with_processes(_round(), ProcessSdk(7, "python", "python", hostile, None))
    page = status_page.render(report)
    unquoted = [
        (tag.group(0), m.group(1))
        for tag in re.finditer(r"<[a-zA-Z][\w-]*((?:\s[^>]*)?)>", page)
        for m in _ATTR.finditer(tag.group(1))
        if m.group(2) is not None and m.group(2)[0] not in "\"'"
    ]
    assert unquoted == []
    assert not any("onmouseover" in attrs for _, attrs in Elements(page).tags)
    assert Elements(page).find("td", **{"class": hostile})


def test_a_process_name_that_is_not_valid_text_is_replaced_not_a_500() -> None:
    from_proc = os.fsdecode(b"\xff<b>python")  # a lone surrogate, as /proc names decode
    report = _with_processes(
        _round(),
        # A value that slipped through undecoded must not reach the page raw either.
        ProcessSdk(1, from_proc, "python", "regional", b"\xfe<i>x"),  # type: ignore[arg-type]
    )
    body = status_page.render(report).encode("utf-8")  # what the daemon sends
    text = body.decode("utf-8")
    assert "\ufffd&lt;b&gt;python" in text and "<b>python" not in text
    assert "\ufffd&lt;i&gt;x" in text


def test_the_history_section_draws_the_flip_and_the_failures_the_json_lists() -> None:
    h = History()
    paths = ["vpce"] * 4 + ["public"] * 3 + ["vpce"] * 3
    for i, path in enumerate(paths):
        if path == "vpce":
            calls = [(ENI, "vpce", 0.01), ("127.10.139.20", "vpce", None if i % 2 else 0.02)]
        else:
            calls = [("127.20.0.20", "public", 0.03), ("127.20.0.21", "public", 0.04)]
        found = [("PRIVATE_DNS_NOT_RESOLVING", REGIONAL)] if path == "public" else []
        last = synthetic_report(T0 + i, {REGIONAL: (path, calls)}, found)  # type: ignore[dict-item]
        h.add(last)
    page = status_page.render(last, history=h)
    doc = to_json(h, window(h.snapshot()))
    el = Elements(page)

    assert len(el.find("svg", **{"class": "path-strip", "data-endpoint": REGIONAL})) == 1
    segs = el.find("g", **{"class": "seg"})
    assert [(s["data-path"], s["data-start"], s["data-rounds"]) for s in segs] == [
        (r["path"], r["start"], str(r["rounds"])) for r in doc["endpoints"][0]["paths"]
    ]
    assert [s["data-path"] for s in segs] == ["vpce", "public", "vpce"]

    sparks = el.find("svg", **{"class": "spark"})
    assert [s["data-address"] for s in sparks] == [ENI, "127.10.139.20", "public"]
    assert "127.20.0.21" not in "".join(str(s) for s in sparks)  # public IPs aggregate
    fails = [a["data-at"] for a in el.find("path", **{"class": "fail"})]
    json_fails = [
        s["at"] for a in doc["endpoints"][0]["addresses"] for s in a["samples"] if not s["success"]
    ]
    assert fails == json_fails and len(fails) == 4

    (row,) = el.find("tr", data_code="PRIVATE_DNS_NOT_RESOLVING")
    assert row["data-rounds"] == "3"
    assert f'<time datetime="{iso(T0 + 4)[:19]}Z">' in page
    assert "<script" not in page and "http://" not in page and "https://" not in page
