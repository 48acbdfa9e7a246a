"""Which regions to watch, and which region this host is in: two answers, not one.

A watched region comes from configuration first; the host's own region only from a
source that speaks for the host (IMDS, the SDK's region variables, a configuration
naming exactly one region). A list of watched regions says nothing about the host.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping

from agent.config import Settings
from agent.regions import region_shaped
from agent.results import ImdsInfo

log = logging.getLogger("agent.discovery.regions")

Check = Callable[[str, str | None], str | None]


def checked_region(source: str, value: str | None) -> str | None:
    """`value` if it has a region name's shape, else None, logged in one line.

    It becomes part of hostnames and label values, so odd characters must stop here.
    """
    if not value or not value.strip():
        return None
    try:
        return region_shaped(value.strip())
    except ValueError as exc:
        log.error("%s %r: %s; ignored", source, value[:64], exc)
        return None


def _env(environ: Mapping[str, str]) -> tuple[tuple[str, str | None], ...]:
    return (
        ("AWS_DEFAULT_REGION", environ.get("AWS_DEFAULT_REGION")),
        ("AWS_REGION", environ.get("AWS_REGION")),
    )


def watched_regions(
    settings: Settings, environ: Mapping[str, str], imds: ImdsInfo, check: Check = checked_region
) -> tuple[tuple[str, ...], str]:
    """Region fallback order: settings (file/env/flag) > AWS_DEFAULT_REGION > AWS_REGION > IMDS.

    An SDK region from the environment that is not the instance's own is watched
    after the instance's (which comes first, as the host's region in the report, the
    metrics' identity and the VPC endpoint audit): the VPC endpoint, if any, is there,
    and watching only the other region would read its public answer as private DNS
    switched off.
    """
    if settings.regions:
        return settings.regions, "config"
    for source, value in (*_env(environ), ("imds", imds.region)):
        region = check(source, value)
        if region:
            own = check("imds", imds.region) if source != "imds" else None
            if own and own != region:
                return (own, region), "imds"
            return (region,), source
    return (), "none"


def host_region(
    settings: Settings, environ: Mapping[str, str], imds: ImdsInfo, check: Check = checked_region
) -> str | None:
    """This host's region: IMDS > AWS_DEFAULT_REGION > AWS_REGION > one configured region."""
    for source, value in (("imds", imds.region), *_env(environ)):
        region = check(source, value)
        if region:
            return region
    return settings.regions[0] if len(settings.regions) == 1 else None


def regions(
    settings: Settings, environ: Mapping[str, str], imds: ImdsInfo
) -> tuple[tuple[str, ...], str, str | None]:
    """(watched regions, where they came from, the host's region); each odd value logged once."""
    check = functools.cache(checked_region)
    watched, source = watched_regions(settings, environ, imds, check)
    return watched, source, host_region(settings, environ, imds, check)
