"""Minimal hand-built rounds: one fact changed at a time, for verdict and audit tests."""

from __future__ import annotations

from agent.results import (
    DnsAnswer,
    DnsLookup,
    DnsQuery,
    DnsReason,
    Endpoint,
    EndpointReport,
    ImdsInfo,
    PathVerdict,
    Phases,
    Report,
    Resolver,
    SdkView,
    StsProbe,
    path_of,
)
from agent.verdicts.classify import classify_all, combine_paths

VPC = ("127.10.0.0/16",)
REGIONAL = "sts.us-east-2.amazonaws.com"
GLOBAL = "sts.amazonaws.com"
AMAZON_DNS = Resolver("127.10.0.2", 53, amazon_provided=True, source="config")
OTHER_DNS = Resolver("127.0.0.1", 5353, amazon_provided=False, source="config")
HEALTHY_SDK = SdkView(f"https://{REGIONAL}", "regional", "us-east-2")


def lookup(
    resolver: Resolver, host: str, *addresses: str, reason: DnsReason | None = None
) -> DnsLookup:
    answers = tuple(DnsAnswer(a, 30) for a in addresses)
    q = DnsQuery("A", 0.001, "NOERROR" if reason is None else None, answers, reason=reason)
    return DnsLookup(host, resolver, (q,))


def probe(address: str, host: str = REGIONAL, **kw: object) -> StsProbe:
    fields: dict[str, object] = {
        "success": True,
        "phases": Phases(
            connect=0.001, tls=0.002, sign=0.0005, ttfb=0.003, transfer=0.0005, total=0.007
        ),
        "account": "123456789012",
    }
    fields.update(kw)
    return StsProbe(endpoint=host, address=address, port=443, **fields)  # type: ignore[arg-type]


def endpoint(
    host: str = REGIONAL,
    kind: str = "regional",
    expected: str | None = "vpce",
    lookups: tuple[DnsLookup, ...] | None = None,
    probes: tuple[StsProbe, ...] | None = None,
    dropped: int = 0,
) -> EndpointReport:
    if lookups is None:
        lookups = (lookup(AMAZON_DNS, host, "127.10.138.148"),)
    verdicts = tuple(
        PathVerdict(host, lk.resolver.label, path_of(c := classify_all(lk.addresses, VPC)), c)
        for lk in lookups
    )
    if probes is None:
        probes = tuple(probe(a, host) for lk in lookups for a in lk.addresses)
    return EndpointReport(
        endpoint=Endpoint(host, kind, "us-east-2", expected),  # type: ignore[arg-type]
        path=combine_paths([v.path for v in verdicts]),
        lookups=lookups,
        verdicts=verdicts,
        probes=probes,
        dropped_addresses=dropped,
    )


def report(*endpoints: EndpointReport, **kw: object) -> Report:
    fields: dict[str, object] = {
        "started": 0.0,
        "finished": 0.1,
        "region": "us-east-2",
        "region_source": "imds",
        "imds": ImdsInfo(available=True, region="us-east-2", vpc_cidrs=VPC),
        "resolvers": (AMAZON_DNS,),
        "vpc_cidrs": VPC,
        "sdk": HEALTHY_SDK,
        "endpoints": endpoints or (endpoint(),),
    }
    fields.update(kw)
    return Report(**fields)  # type: ignore[arg-type]
