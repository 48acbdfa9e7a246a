"""One probe round: the plan (agent.targets) -> probes -> verdicts, as a Report.

Discovery (agent.discovery) is slower and changes rarely, so it is a separate
step the daemon refreshes on its own schedule; `check` simply runs both once.
"""

from __future__ import annotations

import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from agent import targets
from agent.config import ConfigError, Settings
from agent.credentials import Credentials
from agent.discovery import Discovery
from agent.probes import dns as dns_probe
from agent.probes import sts as sts_probe
from agent.results import EndpointReport, PathVerdict, Report, StsProbe, path_of
from agent.targets import AddressBook
from agent.verdicts.classify import classify_all, combine_paths
from agent.verdicts.findings import evaluate


class Prober:
    """What probes reuse across rounds: the TLS context and the credentials."""

    def __init__(self, settings: Settings, *, credentials_in_child: bool = False) -> None:
        self.settings = settings
        try:
            self.context: ssl.SSLContext = sts_probe.tls_context(settings.ca_bundle)
        except ssl.SSLError as e:  # PEM blocks present but not loadable (ca_bundle_problem)
            raise ConfigError(
                "ca_bundle", settings.ca_bundle, f"OpenSSL cannot load it: {e.reason or e}"
            ) from None
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
    endpoints = targets.round_endpoints(settings, disc.regions, only_endpoint)
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
        plans = targets.plan(settings, disc, endpoints, lookups, prober.book, time.time())
        probe_futs = {
            (p.endpoint.hostname, addr): executor.submit(
                sts_probe.probe,
                sts_probe.Target(
                    p.endpoint.hostname, addr, settings.port, p.endpoint.signing_region
                ),
                context=prober.context,
                credentials=creds,
                timeout=settings.timeout,
                signed=settings.credentials == "chain",
            )
            for p in plans
            for addr in p.addresses
        }
        probes: dict[tuple[str, str], StsProbe] = {k: f.result() for k, f in probe_futs.items()}
    finally:
        if own_pool:
            executor.shutdown(wait=False)

    reports = []
    for p in plans:
        verdicts = tuple(
            PathVerdict(
                p.endpoint.hostname,
                lk.resolver.label,
                path_of(cls := classify_all(lk.addresses, disc.vpc_cidrs)),
                cls,
            )
            for lk in p.lookups
        )
        reports.append(
            EndpointReport(
                endpoint=p.endpoint,
                path=combine_paths([v.path for v in verdicts]),
                lookups=p.lookups,
                verdicts=verdicts,
                probes=tuple(probes[(p.endpoint.hostname, a)] for a in p.addresses),
                dropped_addresses=p.dropped,
                pinned=classify_all(p.pins, disc.vpc_cidrs),
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
        credentials_error=prober.credentials.error if creds is None else None,
        eni_zones=disc.eni_zones,
        vpce_enis=disc.vpce_enis,
    )
    return replace(report, findings=evaluate(report, settings))
