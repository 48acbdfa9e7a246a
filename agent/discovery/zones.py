"""Learn each STS endpoint ENI's Availability Zone from the endpoint's zonal DNS names.

An interface endpoint publishes, beside its regional name
`vpce-<id>-<suffix>.sts.<region>.vpce.amazonaws.com`, one zonal name per AZ,
`vpce-<id>-<suffix>-<az>.sts.<region>.vpce.amazonaws.com`, that resolves to the
ENI in that AZ.  Resolving them is exact: an address is given an AZ only when
that AZ's own name answers with it, and an address two zonal names claim is
left without one.  Which AZs exist is not known without the EC2 API, so the
host's AZ and the region's letters a-f are asked; names of AZs the endpoint
does not span simply do not resolve.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from agent.probes import dns as dns_probe
from agent.results import Resolver

REGIONAL_VPCE = re.compile(
    r"(?P<id>vpce-[0-9a-f]{8,17}-[a-z0-9]{1,16})\.(?P<service>sts(?:-fips)?)"
    r"\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)\.vpce\.amazonaws\.com"
)
AZ_LETTERS = string.ascii_lowercase[:6]
MAX_LABEL = 63  # octets in one DNS label; a longer zonal label is no name at all


def regional_vpce_names(hostnames: Iterable[str]) -> list[str]:
    """The hostnames that are an endpoint's regional vpce name (not a zonal one)."""
    return [h for h in dict.fromkeys(hostnames) if REGIONAL_VPCE.fullmatch(h)]


def zonal_names(regional: str, host_az: str | None) -> dict[str, str]:
    """AZ -> zonal name of one regional vpce name, the host's AZ first."""
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


def eni_zones(
    regionals: Sequence[str],
    resolvers: Sequence[Resolver],
    host_az: str | None,
    timeout: float,
) -> tuple[dict[str, str], tuple[tuple[str, ...], ...]]:
    """ENI address -> AZ, and each endpoint's ENI addresses, asked at the first resolver."""
    if not regionals or not resolvers:
        return {}, ()
    questions = [
        (regional, az, name)
        for regional in regionals
        for az, name in zonal_names(regional, host_az).items()
    ]
    if not questions:
        return {}, ()
    with ThreadPoolExecutor(max_workers=min(16, len(questions)), thread_name_prefix="az") as ex:
        lookups = list(ex.map(lambda q: dns_probe.lookup(q[2], resolvers[0], timeout), questions))
    claims: dict[str, set[str]] = {}
    groups: dict[str, dict[str, None]] = {}
    for (regional, az, _), lookup in zip(questions, lookups, strict=True):
        for address in lookup.addresses:
            claims.setdefault(address, set()).add(az)
            groups.setdefault(regional, {})[address] = None
    zones = {a: next(iter(azs)) for a, azs in claims.items() if len(azs) == 1}
    return zones, tuple(tuple(g) for g in groups.values())
