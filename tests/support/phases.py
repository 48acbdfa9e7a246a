"""The probe's phases and the rule that they account for `total`."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from agent.results import Phases

PHASES = tuple(Phases().as_dict())
# check --json rounds each of the six values to the microsecond: at most 3 µs apart.
JSON_ROUNDING = 3e-6


def assert_phases_add_up(phases: Mapping[str, float | None], slack: float = 1e-9) -> None:
    """Every phase measured, and together they are `total` (the documented remainder is 0)."""
    assert tuple(phases) == PHASES, phases
    assert all(v is not None and v >= 0 for v in phases.values()), phases
    parts = [v for k, v in phases.items() if k != "total" and v is not None]
    total = phases["total"]
    assert total is not None and total > 0, phases
    assert sum(parts) == pytest.approx(total, abs=slack), phases
