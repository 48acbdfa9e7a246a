"""Discovery's record: what the host looks like, refreshed every discovery_interval."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.discovery.hosts_file import HostsPins
from agent.results import ImdsInfo, Resolver, SdkView


@dataclass(frozen=True)
class Discovery:
    regions: tuple[str, ...]
    region_source: str
    imds: ImdsInfo
    resolvers: tuple[Resolver, ...]
    vpc_cidrs: tuple[str, ...]
    sdk: SdkView | None
    resolver_error: str | None = None
    at: float = 0.0
    hosts: HostsPins | None = None
    eni_zones: dict[str, str] = field(default_factory=dict)
    vpce_enis: tuple[tuple[str, ...], ...] = ()
    host_region: str | None = None  # from a source that speaks for the host, else unknown
