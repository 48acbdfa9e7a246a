"""The STS hostnames the agent knows how to build and read.

The public names per region and kind (regional, FIPS, dual-stack, global), and
an interface endpoint's names: its regional vpce name
`vpce-<id>-<suffix>.sts.<region>.vpce.amazonaws.com` and one zonal name per AZ,
`vpce-<id>-<suffix>-<az>.sts.<region>.vpce.amazonaws.com`.
"""

from __future__ import annotations

import re
import string
from typing import TYPE_CHECKING

from agent.results import Endpoint, EndpointKind

if TYPE_CHECKING:
    from agent.config import Settings

GLOBAL_HOSTNAME = "sts.amazonaws.com"
GLOBAL_SIGNING_REGION = "us-east-1"

REGIONAL_VPCE = re.compile(
    r"(?P<id>vpce-[0-9a-f]{8,17}-[a-z0-9]{1,16})\.(?P<service>sts(?:-fips)?)"
    r"\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)\.vpce\.amazonaws\.com"
)
AZ_LETTERS = string.ascii_lowercase[:6]
MAX_LABEL = 63  # octets in one DNS label; a longer zonal label is no name at all


def watched_endpoints(settings: Settings, region: str | None) -> tuple[Endpoint, ...]:
    """The STS hostnames `settings` watch for one region, in a stable order."""
    out: list[Endpoint] = []

    def add(host: str, kind: EndpointKind, signing: str) -> None:
        if all(e.hostname != host for e in out):
            out.append(Endpoint(host, kind, signing, settings.expectation_for(kind, host)))

    if region:
        if settings.endpoints_regional:
            add(f"sts.{region}.amazonaws.com", "regional", region)
        if settings.endpoints_fips:
            add(f"sts-fips.{region}.amazonaws.com", "fips", region)
        if settings.endpoints_dualstack:
            add(f"sts.{region}.api.aws", "dualstack", region)
    if settings.endpoints_global:
        add(GLOBAL_HOSTNAME, "global", GLOBAL_SIGNING_REGION)
    for host in settings.endpoints_extra:
        add(host, "custom", region_in_hostname(host) or region or GLOBAL_SIGNING_REGION)
    return tuple(out)


def region_in_hostname(host: str) -> str | None:
    """The region an STS name (public or vpce) is in, for signing calls to a custom name."""
    m = re.search(r"\.sts(?:-fips)?\.([a-z0-9-]+)\.(?:vpce\.)?amazonaws\.com$", host)
    if m is None:
        m = re.match(r"sts(?:-fips)?\.([a-z]{2}(?:-[a-z]+)+-\d+)\.", host)
    return m.group(1) if m else None


def zonal_names(regional: str, host_az: str | None) -> dict[str, str]:
    """AZ -> zonal name of one regional vpce name, the host's AZ first.

    Which AZs exist is not known without the EC2 API, so the host's AZ and the
    region's letters a-f are named; names of AZs the endpoint does not span
    simply do not resolve.
    """
    m = REGIONAL_VPCE.fullmatch(regional)
    if m is None:
        raise ValueError(f"vpce_dns_names: {regional!r} is not a regional vpce DNS name")
    region = m["region"]
    azs = [host_az] if host_az and host_az.startswith(region) else []
    azs += [region + c for c in AZ_LETTERS if region + c not in azs]
    rest = regional[len(m["id"]) :]
    # An AZ from IMDS or configuration is only loosely checked: one too long for a label
    # has no zonal name (dnspython would refuse to build the question).
    return {az: f"{m['id']}-{az}{rest}" for az in azs if len(m["id"]) + 1 + len(az) <= MAX_LABEL}
