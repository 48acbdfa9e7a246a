"""Where an endpoint's ENIs sit relative to this host's Availability Zone.

Only AZs learned without guessing count (zonal vpce DNS names, the EC2 API):
an address whose AZ is unknown is left out, and with none known there is no
verdict at all rather than a wrong one.  Calls to an ENI in another AZ cost
cross-AZ latency and data charges, and fail with that AZ.  Only AZs of the host's own
region compare with the host's: an endpoint of another region (peering, transit
gateway) has no ENI here by nature and gets no verdict.  AZ names are shuffled per
account, so an ENI of another account's endpoint compares by AZ ID when both it and
the host have one (the EC2 API and IMDS give IDs; zonal DNS names only names).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from agent.results import AddressVerdict, EndpointReport

ENI_CLASSES = ("vpce", "private")
#: The region an AZ name starts with: us-east-2a, us-east-1-bos-1a, ap-northeast-1-wl1-kix-wlz-1.
_REGION_OF_AZ = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d+")


def _region(az: str) -> str | None:
    m = _REGION_OF_AZ.match(az)
    return m.group(0) if m else None


def _in_host_az(
    addresses: Iterable[str],
    zones: Mapping[str, str],
    host_az: str | None,
    zone_ids: Mapping[str, str],
    host_az_id: str | None,
) -> list[bool]:
    """Per address of known AZ in the host's region (any, when it is unclear): in the host's AZ?"""
    region = _region(host_az) if host_az else None
    return [
        zone_ids[a] == host_az_id if host_az_id and a in zone_ids else zones[a] == host_az
        for a in addresses
        if a in zones and (region is None or _region(zones[a]) == region)
    ]


def eni_addresses(pairs: Iterable[tuple[str, str]]) -> list[str]:
    """The ENI addresses among (address, class) pairs, in order, once each."""
    return list(dict.fromkeys(a for a, klass in pairs if klass in ENI_CLASSES))


def endpoint_enis(ep: EndpointReport, groups: Iterable[Sequence[str]]) -> list[str]:
    """The ENIs the name resolved to, and every other ENI of the VPC endpoints they belong to."""
    answered = eni_addresses(ep.classes.items())
    mates = [a for g in groups if set(g) & set(answered) for a in g]
    return list(dict.fromkeys([*answered, *mates]))


def local_az_eni(
    ep: EndpointReport,
    zones: Mapping[str, str],
    host_az: str | None,
    groups: Iterable[Sequence[str]] = (),
    zone_ids: Mapping[str, str] | None = None,
    host_az_id: str | None = None,
) -> bool | None:
    """Whether the endpoint has an ENI in the host's AZ; None when that cannot be known.

    Whether the resolver hands that ENI out is cross_az_ratio's question.
    """
    local = _in_host_az(endpoint_enis(ep, groups), zones, host_az, zone_ids or {}, host_az_id)
    if not host_az or not local:
        return None
    return any(local)


def cross_az_ratio(
    answers: Iterable[AddressVerdict],
    zones: Mapping[str, str],
    host_az: str | None,
    zone_ids: Mapping[str, str] | None = None,
    host_az_id: str | None = None,
) -> float | None:
    """Share of a resolver's ENI answers (of known AZ) that lie in another AZ than the host's."""
    answered = eni_addresses((v.address, v.klass) for v in answers)
    local = _in_host_az(answered, zones, host_az, zone_ids or {}, host_az_id)
    if not host_az or not local:
        return None
    return local.count(False) / len(local)


def zones_of(
    ep: EndpointReport,
    zones: Mapping[str, str],
    groups: Iterable[Sequence[str]] = (),
    zone_ids: Mapping[str, str] | None = None,
) -> list[str]:
    """The distinct AZs of the endpoint's ENIs, sorted, each with its AZ ID where one is known:
    judged by ID, the names alone could read "ENIs in us-east-2a, none in us-east-2a"."""
    ids = zone_ids or {}
    return sorted({az_label(zones[a], ids.get(a)) for a in endpoint_enis(ep, groups) if a in zones})


def az_label(name: str, zone_id: str | None) -> str:
    """An AZ as users read it: the name is per account, the ID is the same everywhere."""
    return f"{name} ({zone_id})" if zone_id else name
