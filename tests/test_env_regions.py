"""Regions from the environment (and IMDS) are checked before they are used.

They end up in STS hostnames and label values, so a value that does not have a
region name's shape is refused with a one-line message naming the variable,
and the next source is used instead.
"""

from __future__ import annotations

import logging

import pytest

from agent.config import Settings
from agent.results import ImdsInfo
from agent.runner import _regions

NO_IMDS = ImdsInfo(available=False, reason="disabled")


@pytest.mark.parametrize(
    "bad",
    [
        "us-east-2\nsts_agent_fake 1",
        "evil.example.com/",
        "us-east-2.attacker.example",
        "us east 2",
        "sts.us-east-2",
        "x" * 300,
    ],
)
def test_odd_region_from_the_environment_is_refused_and_named(
    bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="agent.runner"):
        regions = _regions(
            Settings(), {"AWS_DEFAULT_REGION": bad, "AWS_REGION": "eu-west-1"}, NO_IMDS
        )
    assert regions == (("eu-west-1",), "AWS_REGION")  # before: the odd value itself
    (record,) = caplog.records
    message = record.getMessage()
    assert message.startswith("AWS_DEFAULT_REGION ") and "\n" not in message
    assert "not a region name" in message


def test_imds_region_is_checked_too(caplog: pytest.LogCaptureFixture) -> None:
    imds = ImdsInfo(available=True, region="us-east-2\r\nX: y")
    with caplog.at_level(logging.ERROR, logger="agent.runner"):
        assert _regions(Settings(), {}, imds) == ((), "none")
    assert caplog.records[0].getMessage().startswith("imds ")


def test_good_regions_pass_normalised() -> None:
    assert _regions(Settings(), {"AWS_REGION": " EU-West-1 "}, NO_IMDS) == (
        ("eu-west-1",),
        "AWS_REGION",
    )
    assert _regions(Settings(), {}, ImdsInfo(available=True, region="ap-south-1")) == (
        ("ap-south-1",),
        "imds",
    )


def test_every_region_botocore_knows_has_the_shape() -> None:
    from agent.regions import known_regions, region_shaped

    regions = known_regions()
    assert len(regions) > 20
    assert {region_shaped(r) for r in regions} == regions
