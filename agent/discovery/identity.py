"""The host's identity (region, AZ, VPC, account) as discovery reports it.

IMDS answers; a passing IMDS failure keeps the facts last answered; configured
host settings win over both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from agent.config import Settings, imds_off_because
from agent.discovery.imds import discover as imds_discover
from agent.results import ImdsInfo


def keep_last_good(imds: ImdsInfo, previous: ImdsInfo | None) -> ImdsInfo:
    """A passing IMDS failure must not reclassify every address for a whole discovery
    interval: region and VPC facts last answered are kept (the failure is still reported)."""
    if previous is None or imds.reason == "disabled":
        return imds
    last = previous
    return dataclasses.replace(
        imds,
        region=imds.region or last.region,
        availability_zone=imds.availability_zone or last.availability_zone,
        availability_zone_id=imds.availability_zone_id or last.availability_zone_id,
        instance_id=imds.instance_id or last.instance_id,
        vpc_id=imds.vpc_id or last.vpc_id,
        subnet_id=imds.subnet_id or last.subnet_id,
        vpc_cidrs=imds.vpc_cidrs or last.vpc_cidrs,
        account_id=imds.account_id or last.account_id,
    )


def host_overrides(imds: ImdsInfo, settings: Settings) -> ImdsInfo:
    """Configured host identity wins over what IMDS said (or could not say)."""
    az = settings.host_availability_zone
    return dataclasses.replace(
        imds,
        availability_zone=az or imds.availability_zone,
        # another AZ configured than IMDS named: IMDS's ID is not that AZ's
        availability_zone_id=imds.availability_zone_id
        if not az or az == imds.availability_zone
        else None,
        vpc_id=settings.host_vpc_id or imds.vpc_id,
        account_id=settings.host_account_id or imds.account_id,
    )


def host_identity(
    settings: Settings, environ: Mapping[str, str], previous: ImdsInfo | None
) -> ImdsInfo:
    """IMDS's answer (or "disabled"), the last good facts, then the configured overrides."""
    if settings.imds_enabled:
        imds = imds_discover(settings.imds_address, settings.imds_timeout, environ)
        imds = keep_last_good(imds, previous)
    else:
        imds = ImdsInfo(available=False, reason="disabled", detail=imds_off_because(environ))
    return host_overrides(imds, settings)
