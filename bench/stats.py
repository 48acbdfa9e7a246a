"""Percentiles and Markdown tables, so every script reports the same way."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]; NaN for no values."""
    data = sorted(v for v in values if not math.isnan(v))
    if not data:
        return math.nan
    pos = (len(data) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def ms(seconds: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.{digits}f}"


def ratio(a: float, b: float) -> str:
    """a / b as 'N.NN×', or n/a when either side is missing or b is zero."""
    if math.isnan(a) or math.isnan(b) or b == 0:
        return "n/a"
    return f"{a / b:.3g}×"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "| " + " | ".join(headers) + " |"
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"
    body = ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join([head, rule, *body])


def median_diff_ci(
    a: Sequence[float], b: Sequence[float], n: int = 2000, seed: int = 1
) -> tuple[float, float]:
    """95% bootstrap interval of median(a) - median(b): is a difference more than noise?"""
    rng = random.Random(seed)
    xs, ys = list(a), list(b)
    if not xs or not ys:
        return math.nan, math.nan
    diffs = sorted(
        median(rng.choices(xs, k=len(xs))) - median(rng.choices(ys, k=len(ys))) for _ in range(n)
    )
    return diffs[int(0.025 * n)], diffs[int(0.975 * n) - 1]
