"""Address classes and endpoint paths.

`vpce` means inside this VPC's own CIDRs (an interface endpoint here);
`private` means a private range outside them, which is legitimate for a
centralised endpoint in a hub VPC, or link-local; everything else is `public`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from functools import lru_cache

from agent.results import AddressClass, AddressVerdict, Path

PRIVATE_RANGES = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",  # link-local: never routed off the host's link
        "fc00::/7",
        "fe80::/10",
    )
)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=64)
def _networks(cidrs: tuple[str, ...]) -> tuple[IpNetwork, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def classify(address: str, vpc_cidrs: Sequence[str]) -> AddressClass:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if any(ip in net for net in _networks(tuple(vpc_cidrs)) if net.version == ip.version):
        return "vpce"
    if any(ip in net for net in PRIVATE_RANGES if net.version == ip.version):
        return "private"
    return "public"


def classify_all(addresses: Iterable[str], vpc_cidrs: Sequence[str]) -> tuple[AddressVerdict, ...]:
    return tuple(AddressVerdict(a, classify(a, vpc_cidrs)) for a in addresses)


def combine_paths(paths: Sequence[Path]) -> Path:
    """One endpoint, several resolvers: agreeing resolvers give their path, else mixed."""
    resolved = {p for p in paths if p != "unresolved"}
    if not resolved:
        return "unresolved"
    if len(resolved) == 1:
        return next(iter(resolved))
    return "mixed"
