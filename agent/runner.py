"""One probe round: discovery -> targets -> probes -> verdicts, as a Report.

Discovery (IMDS, resolvers, SDK view, credentials) is slower and changes
rarely, so it is a separate step the daemon refreshes on its own schedule;
`check` simply runs both once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import ssl
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from agent.child import ChildError, ask_child
from agent.config import Settings
from agent.credentials import Credentials
from agent.discovery.hosts_file import HostsPins, read_pins
from agent.discovery.imds import discover as imds_discover
from agent.discovery.resolvers import resolvers_from_specs
from agent.discovery.zones import eni_zones, regional_vpce_names
from agent.probes import dns as dns_probe
from agent.probes import sts as sts_probe
from agent.regions import region_shaped
from agent.results import (
    DnsLookup,
    Endpoint,
    EndpointReport,
    ImdsInfo,
    PathVerdict,
    Report,
    Resolver,
    SdkView,
    StsProbe,
    path_of,
)
from agent.verdicts.classify import classify_all, combine_paths
from agent.verdicts.findings import evaluate
from agent.verdicts.serving import global_serving

log = logging.getLogger("agent.runner")


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


def _regions(
    settings: Settings, environ: Mapping[str, str], imds: ImdsInfo
) -> tuple[tuple[str, ...], str]:
    """Region fallback order: settings (file/env/flag) > AWS_DEFAULT_REGION > AWS_REGION > IMDS."""
    if settings.regions:
        return settings.regions, "config"
    for source, value in (
        ("AWS_DEFAULT_REGION", environ.get("AWS_DEFAULT_REGION")),
        ("AWS_REGION", environ.get("AWS_REGION")),
        ("imds", imds.region),
    ):
        region = _checked_region(source, value)
        if region:
            return (region,), source
    return (), "none"


def _checked_region(source: str, value: str | None) -> str | None:
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


# Never sent to the SDK-view child: it reads no credentials, so they need not cross the pipe.
_SECRET_ENV = frozenset(
    {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"}
)


def sdk_view_in_child(environ: Mapping[str, str], timeout: float = 30.0) -> SdkView:
    """botocore's SDK view, asked in a short-lived `python -m agent.probes.sdk`.

    The parsed endpoint data behind an STS client (about 8 MB) leaves with the
    child instead of staying in a long-running daemon; the child costs about
    0.3 s of CPU once per discovery_interval.
    """
    env = {
        k: v
        for k, v in environ.items()
        # agent.probes.sdk reads these, plus HTTPS_PROXY / NO_PROXY in either case
        if (k.startswith(("AWS_", "BOTOCORE_")) or k.lower() in ("https_proxy", "no_proxy"))
        and k not in _SECRET_ENV
    }
    try:
        doc = ask_child("agent.probes.sdk", env, timeout)
        return SdkView(
            endpoint_url=doc["endpoint_url"],
            mode=doc["mode"],
            region=doc["region"],
            reasons=tuple(doc["reasons"]),
            error=doc["error"],
            proxy=doc["proxy"],
            unconfigured=bool(doc.get("unconfigured", False)),
        )
    except ChildError as e:
        return _sdk_unknown(f"SDK view child failed: {e}")
    except (KeyError, TypeError) as e:  # an answer without the expected fields
        return _sdk_unknown(f"SDK view child failed: {type(e).__name__}: {e}"[:200])


def _with_global_serving(
    sdk: SdkView,
    host_region: str | None,
    resolvers: tuple[Resolver, ...],
    *,
    vpc_known: bool = True,
    in_cluster: bool = False,
) -> SdkView:
    """Where AWS would serve a global call from this host (agent.verdicts.serving)."""
    if sdk.error:
        return sdk
    served, why = global_serving(
        host_region,
        resolvers,
        proxied=bool(sdk.proxy),
        vpc_known=vpc_known,
        in_cluster=in_cluster,
    )
    return dataclasses.replace(sdk, global_served_in=served, global_served_why=why)


def _sdk_unknown(error: str) -> SdkView:
    return SdkView(endpoint_url=None, mode="unknown", region=None, error=error)


def _keep_last_good(imds: ImdsInfo, previous: Discovery | None) -> ImdsInfo:
    """A passing IMDS failure must not reclassify every address for a whole discovery
    interval: region and VPC facts last answered are kept (the failure is still reported)."""
    if previous is None or imds.reason == "disabled":
        return imds
    last = previous.imds
    return dataclasses.replace(
        imds,
        region=imds.region or last.region,
        availability_zone=imds.availability_zone or last.availability_zone,
        instance_id=imds.instance_id or last.instance_id,
        vpc_id=imds.vpc_id or last.vpc_id,
        subnet_id=imds.subnet_id or last.subnet_id,
        vpc_cidrs=imds.vpc_cidrs or last.vpc_cidrs,
        account_id=imds.account_id or last.account_id,
    )


def _host_overrides(imds: ImdsInfo, settings: Settings) -> ImdsInfo:
    """Configured host identity wins over what IMDS said (or could not say)."""
    return dataclasses.replace(
        imds,
        availability_zone=settings.host_availability_zone or imds.availability_zone,
        vpc_id=settings.host_vpc_id or imds.vpc_id,
        account_id=settings.host_account_id or imds.account_id,
    )


def discover(
    settings: Settings,
    environ: Mapping[str, str] | None = None,
    *,
    sdk_in_child: bool = False,
    previous: Discovery | None = None,
) -> Discovery:
    """Region, IMDS, resolvers and the SDK view; `sdk_in_child` keeps botocore's data out."""
    environ = os.environ if environ is None else environ
    if settings.imds_enabled:
        imds = imds_discover(settings.imds_address, settings.imds_timeout, environ)
        imds = _keep_last_good(imds, previous)
    else:
        imds = ImdsInfo(available=False, reason="disabled", detail="imds.enabled = false")
    imds = _host_overrides(imds, settings)
    regions, source = _regions(settings, environ, imds)
    vpc_cidrs = settings.vpc_cidrs or imds.vpc_cidrs
    resolver_error = None
    try:
        resolvers = resolvers_from_specs(settings.resolvers, settings.resolv_conf, vpc_cidrs)
    except ValueError as e:
        resolvers, resolver_error = (), str(e)
    sdk: SdkView | None
    try:
        if sdk_in_child:
            sdk = sdk_view_in_child(environ)
        else:
            from agent.probes.sdk import sdk_view

            sdk = sdk_view(environ)
    except Exception as e:  # the SDK view is advisory; never let it stop a round
        sdk = _sdk_unknown(str(e)[:200])
    sdk = _with_global_serving(
        sdk,
        imds.region or (regions[0] if regions else None),
        resolvers,
        vpc_known=bool(vpc_cidrs),
        in_cluster="KUBERNETES_SERVICE_HOST" in environ,
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
    )


def watched_endpoints(settings: Settings, regions: Sequence[str]) -> list[Endpoint]:
    """Every region's names once, then the global one."""
    endpoints: list[Endpoint] = []
    for region in regions or (None,):
        for ep in settings.endpoints(region):
            if all(e.hostname != ep.hostname for e in endpoints):
                endpoints.append(ep)
    endpoints.sort(key=lambda e: e.kind == "global")  # stable sort keeps the region order
    return endpoints


#: No address outlives its answer by more than this, whatever TTL DNS sends.
MAX_REMEMBERED_TTL = 300


@dataclass
class AddressBook:
    """Addresses seen per endpoint, kept until their DNS TTL runs out.

    Clients cache answers for the TTL, so an address that rotated out of the
    latest answer is still in use and still worth probing until it expires.
    What is kept is bounded whatever DNS sends: a TTL counts for at most
    MAX_REMEMBERED_TTL, and beside the current answer at most `limit` past
    addresses are remembered (those expiring last), since no more are probed.
    """

    expiry: dict[str, dict[str, float]] = field(default_factory=dict)

    def update(
        self, endpoint: str, lookups: Sequence[DnsLookup], now: float, limit: int = 8
    ) -> list[str]:
        book = self.expiry.setdefault(endpoint, {})
        current: list[str] = []
        for lk in lookups:
            for q in lk.queries:
                for a in q.answers:
                    ttl = min(max(a.ttl, 1), MAX_REMEMBERED_TTL)
                    book[a.address] = max(book.get(a.address, 0.0), now + ttl)
                    if a.address not in current:
                        current.append(a.address)
        older = [a for a, exp in book.items() if a not in current and exp >= now]
        older.sort(key=lambda a: (-book[a], a))
        keep = set(current) | set(older[:limit])
        for addr in [a for a in book if a not in keep]:
            del book[addr]
        return current + sorted(older[:limit])


class Prober:
    """What probes reuse across rounds: the TLS context and the credentials."""

    def __init__(self, settings: Settings, *, credentials_in_child: bool = False) -> None:
        self.settings = settings
        self.context: ssl.SSLContext = sts_probe.tls_context(settings.ca_bundle)
        self.credentials = Credentials(settings.credentials, in_child=credentials_in_child)
        if settings.credentials == "chain":
            sts_probe.load_signer()
        self.book = AddressBook()


def run_round(
    settings: Settings,
    disc: Discovery,
    prober: Prober,
    *,
    only_endpoint: str | None = None,
    pool: ThreadPoolExecutor | None = None,
) -> Report:
    started = time.time()
    endpoints = watched_endpoints(settings, disc.regions)
    if only_endpoint is not None:
        endpoints = [e for e in endpoints if e.hostname == only_endpoint or e.kind == only_endpoint]

    own_pool = pool is None
    workers = max(4, min(32, len(endpoints) * max(len(disc.resolvers), 1) * 2))
    executor = pool or ThreadPoolExecutor(max_workers=workers, thread_name_prefix="probe")
    try:
        lookup_futs = {
            (ep.hostname, r): executor.submit(dns_probe.lookup, ep.hostname, r, settings.timeout)
            for ep in endpoints
            for r in disc.resolvers
        }
        lookups = {k: f.result() for k, f in lookup_futs.items()}
        creds = prober.credentials.frozen() if settings.credentials == "chain" else None
        now = time.time()
        plans: list[tuple[Endpoint, tuple[str, ...], list[str], int]] = []
        for ep in endpoints:
            candidates = prober.book.update(
                ep.hostname,
                [lookups[(ep.hostname, r)] for r in disc.resolvers],
                now,
                settings.max_addresses_per_endpoint,
            )
            # Pinned addresses are what programs here connect to: probe them first.
            pins = disc.hosts.pinned(ep.hostname) if disc.hosts else ()
            candidates = [*pins, *(a for a in candidates if a not in pins)]
            cap = settings.max_addresses_per_endpoint
            plans.append((ep, pins, candidates[:cap], max(0, len(candidates) - cap)))
        probe_futs = {
            (ep.hostname, addr): executor.submit(
                sts_probe.probe,
                sts_probe.Target(ep.hostname, addr, settings.port, ep.signing_region),
                context=prober.context,
                credentials=creds,
                timeout=settings.timeout,
                signed=settings.credentials == "chain",
            )
            for ep, _, addrs, _ in plans
            for addr in addrs
        }
        probes: dict[tuple[str, str], StsProbe] = {k: f.result() for k, f in probe_futs.items()}
    finally:
        if own_pool:
            executor.shutdown(wait=False)

    reports = []
    for ep, pins, addrs, dropped in plans:
        eps_lookups = tuple(lookups[(ep.hostname, r)] for r in disc.resolvers)
        verdicts = tuple(
            PathVerdict(
                ep.hostname,
                lk.resolver.label,
                path_of(cls := classify_all(lk.addresses, disc.vpc_cidrs)),
                cls,
            )
            for lk in eps_lookups
        )
        reports.append(
            EndpointReport(
                endpoint=ep,
                path=combine_paths([v.path for v in verdicts]),
                lookups=eps_lookups,
                verdicts=verdicts,
                probes=tuple(probes[(ep.hostname, a)] for a in addrs),
                dropped_addresses=dropped,
                pinned=classify_all(pins, disc.vpc_cidrs),
            )
        )
    report = Report(
        started=started,
        finished=time.time(),
        region=disc.regions[0] if disc.regions else None,
        region_source=disc.region_source,
        imds=disc.imds,
        resolvers=disc.resolvers,
        vpc_cidrs=disc.vpc_cidrs,
        sdk=disc.sdk,
        endpoints=tuple(reports),
        regions=disc.regions,
        resolver_error=disc.resolver_error,
        eni_zones=disc.eni_zones,
        vpce_enis=disc.vpce_enis,
    )
    return replace(report, findings=evaluate(report, settings))
