"""discover(): the host's regions, identity, resolvers, SDK view, hosts-file pins and ENI AZs.

Slower than a probe round and rarely changing, so the daemon refreshes it on its
own schedule; `check` runs it once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

from agent.config import Settings
from agent.discovery.facts import Discovery
from agent.discovery.hosts_file import read_pins
from agent.discovery.identity import host_identity
from agent.discovery.regions import regions as find_regions
from agent.discovery.resolvers import resolvers_from_specs
from agent.discovery.sdk import host_sdk_view
from agent.discovery.zones import eni_zones, regional_vpce_names
from agent.targets import watched_endpoints


def discover(
    settings: Settings,
    environ: Mapping[str, str] | None = None,
    *,
    sdk_in_child: bool = False,
    previous: Discovery | None = None,
) -> Discovery:
    """Region, IMDS, resolvers and the SDK view; `sdk_in_child` keeps botocore's data out."""
    environ = os.environ if environ is None else environ
    imds = host_identity(settings, environ, previous.imds if previous else None)
    regions, source, host_region = find_regions(settings, environ, imds)
    vpc_cidrs = settings.vpc_cidrs or imds.vpc_cidrs
    resolver_error = None
    try:
        resolvers = resolvers_from_specs(settings.resolvers, settings.resolv_conf, vpc_cidrs)
    except ValueError as e:
        resolvers, resolver_error = (), str(e)
    sdk = host_sdk_view(
        environ, host_region, resolvers, in_child=sdk_in_child, vpc_known=bool(vpc_cidrs)
    )
    hosts = None
    if settings.hosts_file:
        names = [ep.hostname for ep in watched_endpoints(settings, regions)]
        hosts = read_pins(settings.hosts_file, settings.nsswitch_conf, names)
    names = [*settings.vpce_dns_names, *regional_vpce_names(settings.endpoints_extra)]
    zones, groups = eni_zones(names, resolvers, imds.availability_zone, settings.timeout)
    if not zones and previous is not None and names:
        # a DNS hiccup at discovery must not forget the AZs
        zones, groups = previous.eni_zones, previous.vpce_enis
    return Discovery(
        regions,
        source,
        imds,
        resolvers,
        vpc_cidrs,
        sdk,
        resolver_error,
        time.time(),
        hosts,
        zones,
        groups,
        host_region,
    )
