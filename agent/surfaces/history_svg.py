"""Inline SVG for the status page's history: path strips and latency sparklines.

No JavaScript and no external assets, so the page works on an isolated host.
Every mark says what it is without colour: path segments carry a fill pattern
of their own and their name where it fits, failures are crosses, and every
element has a `<title>` (a tooltip) plus `data-*` attributes scripts and tests
can read.  All drawings of one page share one time axis, so a path flip and
the failures it caused line up vertically.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence

from agent.history import AddressSeries, PathRun
from agent.results import PATHS
from agent.surfaces.history_json import iso

WIDTH = 480
STRIP_HEIGHT = 20
SPARK_HEIGHT = 46

#: path -> (colour, pattern drawn over it, how the legend names the pattern)
STYLE: dict[str, tuple[str, str, str]] = {
    "vpce": ("#1a7f37", "", "solid"),
    "private": ("#9a6700", '<circle cx="3" cy="3" r="1.3" fill="#fff"/>', "dotted"),
    "public": ("#c62828", '<path d="M-1 1l2-2M0 6l6-6M5 7l2-2" stroke="#fff"/>', "hatched"),
    "mixed": ("#d9480f", '<path d="M0 0l6 6M6 0l-6 6" stroke="#fff"/>', "cross-hatched"),
    "unresolved": ("#6e7781", '<path d="M0 3h6" stroke="#fff"/>', "striped"),
}


def _escape(v: object) -> str:
    """Text for a quoted attribute or a <title>."""
    return html.escape(str(v), quote=True)


def _fill(path: str) -> str:
    return f"url(#hp-{path})" if STYLE[path][1] else STYLE[path][0]


def defs() -> str:
    """The fill patterns, once per page: inline SVGs share the document's ids."""
    pats = "".join(
        f'<pattern id="hp-{p}" width="6" height="6" patternUnits="userSpaceOnUse">'
        f'<rect width="6" height="6" fill="{colour}"/>{mark}</pattern>'
        for p, (colour, mark, _) in STYLE.items()
        if mark
    )
    return (
        '<svg width="0" height="0" aria-hidden="true" style="position:absolute">'
        f"<defs>{pats}</defs></svg>"
    )


def legend() -> str:
    """Swatch and name per path, as HTML so the names wrap and never overlap."""
    return "".join(
        f'<span class="key"><svg width="16" height="12" aria-hidden="true">'
        f'<rect width="16" height="12" fill="{_fill(p)}" stroke="#333"/></svg> '
        f"{p} ({STYLE[p][2]})</span>"
        for p in PATHS
    )


class Axis:
    """Maps epoch seconds onto 0..WIDTH; the last round gets one average slot.

    Every sparkline of a page plots the same round times, so each round's
    position (and its ISO time) is worked out once per page, not once per line.
    """

    def __init__(self, times: Sequence[float]) -> None:
        self.start, self.end = times[0], times[-1]
        slot = (self.end - self.start) / (len(times) - 1) if len(times) > 1 else 1.0
        self.slot = slot or 1.0
        self._centres: dict[float, tuple[float, str, str]] = {}

    def x(self, t: float) -> float:
        return (t - self.start) / (self.end + self.slot - self.start) * WIDTH

    def centre(self, t: float) -> tuple[float, str, str]:
        """The middle of round `t`'s slot: x, x as drawn, and the round's ISO time."""
        found = self._centres.get(t)
        if found is None:
            x = self.x(t + self.slot / 2)
            found = self._centres[t] = (x, f"{x:.1f}", iso(t))
        return found


def path_strip(
    endpoint: str, runs: Sequence[PathRun], axis: Axis, when: Callable[[float], str]
) -> str:
    """One rect per run of rounds on the same path, labelled where it is wide enough."""
    parts = []
    for i, run in enumerate(runs):
        x0 = axis.x(run.start)
        x1 = axis.x(runs[i + 1].start) if i + 1 < len(runs) else WIDTH
        w = max(x1 - x0, 1.0)
        label = run.path if w >= 7 * len(run.path) + 6 else (run.path[0] if w >= 10 else "")
        title = f"{run.path}: {run.rounds} round(s) from {when(run.start)} to {when(run.end)}"
        parts.append(
            f'<g class="seg" data-path="{run.path}" data-rounds="{run.rounds}" '
            f'data-start="{iso(run.start)}" data-end="{iso(run.end)}">'
            f"<title>{_escape(title)}</title>"
            f'<rect x="{x0:.1f}" y="0" width="{w:.1f}" height="{STRIP_HEIGHT}" '
            f'fill="{_fill(run.path)}"/>'
        )
        if label:
            parts.append(
                f'<text x="{x0 + w / 2:.1f}" y="14" text-anchor="middle" fill="#fff" '
                f'stroke="#000" stroke-width="2.5" paint-order="stroke">{label}</text>'
            )
        parts.append("</g>")
    return (
        f'<svg class="path-strip" data-endpoint="{_escape(endpoint)}" role="img" '
        f'aria-label="{_escape("path over time for " + endpoint)}" width="{WIDTH}" '
        f'height="{STRIP_HEIGHT}" viewBox="0 0 {WIDTH} {STRIP_HEIGHT}" font-size="11" '
        f'font-weight="bold">{"".join(parts)}</svg>'
    )


def sparkline(series: AddressSeries, axis: Axis, when: Callable[[float], str]) -> str:
    """Total time of each successful round as a line (broken at failures), failures as crosses."""
    ok = [p.total for p in series.points if p.success and p.total is not None]
    top = max(ok) if ok else 0.0
    plot = SPARK_HEIGHT - 26  # 12 above for the scale, 12 below for the failure marks
    lines: list[list[str]] = [[]]
    marks = []
    scale = plot / top if top else 0.0
    for p in series.points:
        x, drawn, at = axis.centre(p.at)
        if p.success and p.total is not None:
            lines[-1].append(f"{drawn},{13 + plot - p.total * scale:.1f}")
        elif not p.success:
            if lines[-1]:
                lines.append([])
            y = SPARK_HEIGHT - 5
            marks.append(
                f'<path class="fail" data-at="{at}" data-reason="{_escape(p.reason or "")}" '
                f'd="M{x - 3:.1f} {y - 3}l6 6m0-6l-6 6"><title>'
                f"{_escape(f'failed ({p.reason}) at {when(p.at)}')}</title></path>"
            )
    polylines = "".join(
        f'<polyline points="{" ".join(pts)}"/>' if len(pts) > 1 else _dot(pts[0])
        for pts in lines
        if pts
    )
    label = f"{top * 1000:.1f} ms" if ok else "no successful call"
    return (
        f'<svg class="spark" data-endpoint="{_escape(series.endpoint)}" '
        f'data-address="{_escape(series.address)}" data-failures="{series.failures}" role="img" '
        f'aria-label="{_escape(f"total time per round for {series.address}")}" width="{WIDTH}" '
        f'height="{SPARK_HEIGHT}" viewBox="0 0 {WIDTH} {SPARK_HEIGHT}" font-size="10">'
        f'<rect width="{WIDTH}" height="{SPARK_HEIGHT}" fill="#fafafa" stroke="#ddd"/>'
        f'<text x="3" y="10" fill="#555">max {label}</text>'
        f'<g class="latency" fill="none" stroke="#1f4e99" stroke-width="1.5">{polylines}</g>'
        f'<g class="failures" stroke="#b00020" stroke-width="2">{"".join(marks)}</g></svg>'
    )


def _dot(point: str) -> str:
    x, y = point.split(",")
    return f'<circle cx="{x}" cy="{y}" r="1.5" fill="#1f4e99"/>'
