"""A host in us-east-1 behind a custom resolver: global calls are served in its own region.

The 2025 change only matters outside us-east-1: wherever a global call from a host in
us-east-1 is resolved, AWS serves it in us-east-1, the host's own region, so there is
no cross-region dependency to report (no critical finding, the gauge at 0).
"""

from __future__ import annotations

from agent.verdicts.serving import global_serving
from tests.test_global_serving import CORP, GLOBAL_SDK, codes, gauge, report_for


def test_custom_resolver_in_us_east_1_is_not_a_cross_region_dependency() -> None:
    assert global_serving("us-east-1", (CORP,)) == ("us-east-1", "home_region")
    r = report_for(GLOBAL_SDK, "us-east-1", (CORP,))
    assert "SDK_GLOBAL_SERVED_US_EAST_1" not in codes(r)
    (f,) = [f for f in r.findings if f.code == "SDK_USES_GLOBAL_ENDPOINT"]
    assert f.severity == "warning" and "AWS serves them in us-east-1 (the host is in us-east-1" in (
        f.message
    )
    assert gauge(r) == "0.0"
