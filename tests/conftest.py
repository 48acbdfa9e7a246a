"""Environment every test runs in: no real IMDS, no developer AWS profile.

Helpers shared with the benchmarks live in `testbed`; test-only ones in `tests.support`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Never let a test reach real IMDS or pick up the developer's AWS profile.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ.setdefault("AWS_CONFIG_FILE", os.devnull)
os.environ.setdefault("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


from tests.support import loopback_guard  # noqa: E402  (needs ROOT on sys.path)

loopback_guard.install()


@pytest.fixture(autouse=True)
def _loopback_only() -> Iterator[None]:
    """Fails the test that tried to send off the host, even if the refusal was swallowed."""
    before = len(loopback_guard.refused)
    yield
    tried = loopback_guard.refused[before:]
    assert not tried, f"sent beyond loopback: {tried[:5]}"
