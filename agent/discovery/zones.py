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

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from agent.probes import dns as dns_probe
from agent.results import Resolver
from agent.sts_hosts import REGIONAL_VPCE, zonal_names


def regional_vpce_names(hostnames: Iterable[str]) -> list[str]:
    """The hostnames that are an endpoint's regional vpce name (not a zonal one)."""
    return [h for h in dict.fromkeys(hostnames) if REGIONAL_VPCE.fullmatch(h)]


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
