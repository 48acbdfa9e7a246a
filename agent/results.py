"""Immutable records that flow from discovery and probes to verdicts and surfaces.

Keeping them frozen lets the scheduler hand the latest round to a scrape, the
status page and `check` at once without locks or copies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:  # the audits load psutil and botocore, which only they need
    from agent.audit.host import HostAuditResult

from agent.addresses import blocks, bracketed, join_host_port

Path = Literal["vpce", "private", "public", "mixed", "unresolved"]
AddressClass = Literal["vpce", "private", "public"]
Severity = Literal["info", "warning", "critical"]
EndpointKind = Literal["regional", "global", "fips", "dualstack", "custom"]

PATHS: tuple[Path, ...] = ("vpce", "private", "public", "mixed", "unresolved")
#: The `resolver` a hosts-file pin is reported under: it answers before any DNS server.
HOSTS_FILE_RESOLVER = "hosts_file"

#: Why a DNS question got no address: the `reason` label of the lookup failure counter.
DnsReason = Literal["timeout", "servfail", "nxdomain", "nodata", "refused", "network", "malformed"]
#: Why a signed STS call failed: the `reason` label of the request failure counter.
StsReason = Literal[
    "connect_refused",
    "connect_timeout",
    "tls_error",
    "tls_hostname_mismatch",
    "timeout",
    "connection_reset",
    "bad_response",
    "http_5xx",
    "throttled",
    "expired_token",
    "invalid_token",
    "signature",
    "access_denied",
    "credentials_missing",
    "other",
]
DNS_REASONS: tuple[DnsReason, ...] = get_args(DnsReason)
STS_REASONS: tuple[StsReason, ...] = get_args(StsReason)


@dataclass(frozen=True)
class Resolver:
    """One DNS server the host (or the config) sends queries to."""

    address: str
    port: int = 53
    amazon_provided: bool = False
    source: str = "config"  # resolv.conf | systemd-resolved | config | demo

    @property
    def label(self) -> str:
        if self.port == 53:
            return bracketed(self.address)
        return join_host_port(self.address, self.port)


@dataclass(frozen=True)
class ImdsInfo:
    """What IMDSv2 said about this instance, or why it said nothing."""

    available: bool
    reason: str | None = None  # disabled | timeout | unauthorized | forbidden | http_<n> | network
    detail: str = ""
    region: str | None = None
    availability_zone: str | None = None
    #: The same AZ's ID (use2-az1), alike in every account where names are shuffled.
    availability_zone_id: str | None = None
    instance_id: str | None = None
    vpc_id: str | None = None
    subnet_id: str | None = None
    vpc_cidrs: tuple[str, ...] = ()
    duration: float = 0.0
    account_id: str | None = None  # from the instance identity document


@dataclass(frozen=True)
class Endpoint:
    """An STS hostname to watch and the region its requests are signed for."""

    hostname: str
    kind: EndpointKind
    signing_region: str
    expected: str | None = None  # vpce | private | public | any | None


@dataclass(frozen=True)
class DnsAnswer:
    address: str
    ttl: int


@dataclass(frozen=True)
class DnsQuery:
    """One A or AAAA question to one resolver."""

    rdtype: Literal["A", "AAAA"]
    duration: float
    rcode: str | None = None
    answers: tuple[DnsAnswer, ...] = ()
    cnames: tuple[str, ...] = ()
    reason: DnsReason | None = None  # None when answered with data
    detail: str = ""
    tcp: bool = False


@dataclass(frozen=True)
class DnsLookup:
    """Both questions for one endpoint at one resolver."""

    endpoint: str
    resolver: Resolver
    queries: tuple[DnsQuery, ...]
    started: float = 0.0

    @property
    def addresses(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for q in self.queries:
            for a in q.answers:
                seen.setdefault(a.address, None)
        return tuple(seen)

    @property
    def cnames(self) -> tuple[str, ...]:
        for q in self.queries:
            if q.cnames:
                return q.cnames
        return ()

    @property
    def reason(self) -> DnsReason | None:
        """Why the lookup yielded no address, or None when it yielded some.

        A missing AAAA record is normal (most VPC endpoints are IPv4 only), so
        only the A answer's failure, or nothing at all, counts as a failure.
        """
        if self.addresses:
            return None
        for q in self.queries:
            if q.rdtype == "A" and q.reason:
                return q.reason
        for q in self.queries:
            if q.reason:
                return q.reason
        return "nodata"

    @property
    def min_ttl(self) -> int | None:
        ttls = [a.ttl for q in self.queries for a in q.answers]
        return min(ttls) if ttls else None


@dataclass(frozen=True, kw_only=True)
class Phases:
    """Seconds spent in each step of one STS request; None where not reached.

    Each phase starts where the previous one ended, so once the response has
    been read in full connect + tls + sign + ttfb + transfer == total (up to
    float rounding; JSON's microseconds leave at most 3 µs).  A phase that
    ends on the server's bytes ends when the kernel queued them plus the CPU
    the probe then spent on them, not when the probe's thread woke up: that
    wake-up (and any wait for the interpreter) is in `sign` after the
    handshake, and left out of `total` after the last byte.  A probe that
    fails mid-way has `total` up to the failure and no value for the phase
    it failed in.
    """

    connect: float | None = None  # TCP handshake
    tls: float | None = None  # TLS handshake, certificate checks included
    sign: float | None = None  # SigV4 signing and the probe's own turn after the handshake
    ttfb: float | None = None  # from writing the request to the first response byte
    transfer: float | None = None  # the rest of the response
    total: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return {
            "connect": self.connect,
            "tls": self.tls,
            "sign": self.sign,
            "ttfb": self.ttfb,
            "transfer": self.transfer,
            "total": self.total,
        }


@dataclass(frozen=True)
class StsProbe:
    """One signed GetCallerIdentity sent to one address of one endpoint."""

    endpoint: str
    address: str
    port: int
    success: bool
    phases: Phases
    reason: StsReason | None = None  # set when not success
    error: str | None = None  # human text, never secrets
    http_status: int | None = None
    sts_error_code: str | None = None
    account: str | None = None
    arn: str | None = None
    tls_version: str | None = None
    cert_not_after: float | None = None  # epoch seconds
    signed: bool = True
    started: float = 0.0


@dataclass(frozen=True)
class SdkView:
    """Which STS endpoint boto3 on this host would call, and why."""

    endpoint_url: str | None
    mode: str  # regional | global | fips | dualstack | custom | unknown
    region: str | None
    reasons: tuple[str, ...] = ()
    error: str | None = None
    proxy: str | None = None  # the proxy botocore would send STS calls through, no userinfo
    unconfigured: bool = False  # the environment read had no AWS setting and no config file
    global_served_in: str | None = None  # where AWS serves a global call from this host
    global_served_why: str | None = None  # a key of agent.verdicts.serving.SERVING_WHY
    ca_bundle_problem: str | None = None  # why boto3 could not load AWS_CA_BUNDLE, if it cannot


@dataclass(frozen=True)
class AddressVerdict:
    address: str
    klass: AddressClass


def path_of(verdicts: Sequence[AddressVerdict]) -> Path:
    """The path a set of answers gives: their one class, mixed, or unresolved if none."""
    classes = {v.klass for v in verdicts}
    if not classes:
        return "unresolved"
    if len(classes) == 1:
        return next(iter(classes))
    return "mixed"


@dataclass(frozen=True)
class PathVerdict:
    """The path one resolver's answer puts an endpoint on."""

    endpoint: str
    resolver: str
    path: Path
    addresses: tuple[AddressVerdict, ...] = ()


@dataclass(frozen=True)
class Finding:
    """Something a human should act on; `code` is a stable identifier for alerting."""

    code: str
    severity: Severity
    message: str
    advice: str = ""
    endpoint: str | None = None


@dataclass(frozen=True)
class EndpointReport:
    endpoint: Endpoint
    path: Path
    lookups: tuple[DnsLookup, ...] = ()
    verdicts: tuple[PathVerdict, ...] = ()
    probes: tuple[StsProbe, ...] = ()
    dropped_addresses: int = 0  # beyond the per-endpoint cap
    pinned: tuple[AddressVerdict, ...] = ()  # hosts-file addresses that take precedence over DNS

    @property
    def effective_path(self) -> Path:
        """The path programs take: a hosts-file pin wins over whatever DNS says, and a pin
        to 0.0.0.0 or :: (a block) leaves them no path at all."""
        if not self.pinned:
            return self.path
        return path_of([v for v in self.pinned if not blocks(v.address)])

    @property
    def classes(self) -> dict[str, AddressClass]:
        """Every address seen for the endpoint (DNS answers, then pins) and its class."""
        found = [a for v in self.verdicts for a in v.addresses] + list(self.pinned)
        return {a.address: a.klass for a in found}

    @property
    def paths_by_source(self) -> dict[str, Path]:
        """Path per resolver, plus HOSTS_FILE_RESOLVER when the hosts file pins the name."""
        out = {v.resolver: v.path for v in self.verdicts}
        if self.pinned:
            out[HOSTS_FILE_RESOLVER] = self.effective_path
        return out

    @property
    def expectation_met(self) -> bool | None:
        exp = self.endpoint.expected
        if exp is None:
            return None
        if exp == "any":
            return self.effective_path != "unresolved"
        return self.effective_path == exp


@dataclass(frozen=True)
class Report:
    """Everything one round learned. Surfaces render this and nothing else."""

    started: float
    finished: float
    region: str | None
    region_source: str
    imds: ImdsInfo
    resolvers: tuple[Resolver, ...]
    vpc_cidrs: tuple[str, ...]
    sdk: SdkView | None
    endpoints: tuple[EndpointReport, ...]
    findings: tuple[Finding, ...] = ()
    #: The regions configured or discovered; `region` is the first.
    regions: tuple[str, ...] = ()
    #: Why no resolver could be read (resolv.conf missing, say); None when they were.
    resolver_error: str | None = None
    #: Why the credential chain gave no keys, in words safe to show; None when it did.
    credentials_error: str | None = None
    #: The host audits, once agent.audit.host has run the ones that are on.
    audit: HostAuditResult | None = None
    #: ENI address -> its Availability Zone, only as learned from zonal vpce DNS names or EC2.
    eni_zones: dict[str, str] = field(default_factory=dict)
    #: ENI address -> its AZ ID, as EC2 reported it (zonal DNS names carry only AZ names).
    eni_zone_ids: dict[str, str] = field(default_factory=dict)
    #: The ENI addresses of each VPC endpoint those sources described, one group per endpoint.
    vpce_enis: tuple[tuple[str, ...], ...] = ()

    @property
    def worst_severity(self) -> Severity | None:
        order = {"info": 0, "warning": 1, "critical": 2}
        worst: Severity | None = None
        for f in self.findings:
            if worst is None or order[f.severity] > order[worst]:
                worst = f.severity
        return worst
