"""Reading Prometheus text exposition into plain (name, labels) -> value samples."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Samples = list[tuple[str, dict[str, str], float]]


def parse(text: str) -> Samples:
    return [
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The first sample called `name` whose labels include `labels`, or None."""
    for n, lbl, v in samples:
        if n == name and all(lbl.get(k) == want for k, want in labels.items()):
            return v
    return None


def values(samples: Samples, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    return [
        (lbl, v)
        for n, lbl, v in samples
        if n == name and all(lbl.get(k) == want for k, want in labels.items())
    ]
