"""Findings: turn a round's facts into stable, alertable codes with advice.

Codes, their severity and advice live in agent.verdicts.codes; messages may
change.  A healthy host produces no finding at warning or above.
"""

from __future__ import annotations

import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator

from agent.addresses import blocks
from agent.config import Settings
from agent.credentials import NO_KEYS
from agent.results import DnsLookup, EndpointReport, Finding, Report, SdkView, StsReason
from agent.targets import answered, watched_endpoints
from agent.verdicts.codes import CHAIN_FAILED_ADVICE, IMDS_REFUSED_ADVICE, SERVED_HERE_NOTE, finding
from agent.verdicts.serving import cross_region, served_text
from agent.verdicts.zones import az_label, local_az_eni, zones_of

#: Codes of the SDK view of the agent's own environment: a process audit that could
#: read the workloads' environments replaces them (agent.audit.host).
SDK_ENV_CODES = frozenset(
    {
        "SDK_USES_GLOBAL_ENDPOINT",
        "SDK_REGION_MISSING",
        "SDK_GLOBAL_SERVED_US_EAST_1",
        "SDK_ENV_UNCONFIGURED",
        "SDK_REGION_NOT_HOST_REGION",
        "SDK_ENDPOINT_NOT_WATCHED",
        "SDK_CA_BUNDLE_UNUSABLE",
        "SDK_REGION_INVALID",
    }
)


#: What to look at for each reason a call failed; the finding gives the lines for the
#: reasons seen, so throttling is not sent to IAM nor an expired certificate to routing.
FAILURE_ADVICE: dict[StsReason, str] = {
    "connect_refused": "Refused: something at that address answers, but nothing listens on "
    "the STS port (a stale pin or an old ENI address now used by another host), or a host "
    "firewall rejects with a reset.",
    "connect_timeout": "No answer to the TCP connect: a security group, NACL or route drops "
    "the traffic, or the address is gone (a deleted ENI); the endpoint's security group "
    "must allow the STS port (443) from this host.",
    "tls_error": "The TLS handshake failed: see the message (an expired or untrusted "
    "certificate, or a TLS-inspecting proxy whose CA is not in ca_bundle).",
    "timeout": "The endpoint accepted but did not answer in time: an overloaded path, a "
    "proxy or firewall that holds the connection, or a timeout set too short.",
    "connection_reset": "The connection was cut mid-exchange: a firewall, proxy or load "
    "balancer between this host and the endpoint.",
    "bad_response": "The answer is not STS: something else answers on that address "
    "(a proxy, a captive portal, another service).",
    "http_5xx": "STS (or a proxy in front of it) answered with a server error: retry, and "
    "check the AWS Health Dashboard for the region.",
    "throttled": "STS throttled the calls: they count against the account's STS request "
    "quota; probe less often (interval) or ask for a higher quota.",
    "expired_token": "STS calls the credentials or the request expired: the credential "
    "source is not refreshing them, or this host's clock is off (check NTP).",
    "invalid_token": "STS does not recognise the access key: wrong or deleted credentials, "
    "or credentials for another partition.",
    "signature": "The signature does not match: a wrong secret key, or a clock off by "
    "more than five minutes (check NTP).",
    "access_denied": "Denied: an IAM policy, an SCP or the VPC endpoint policy refuses "
    "sts:GetCallerIdentity for this principal.",
    "other": "See the message per address.",
}


#: DNS answers a stub resolver takes as final (glibc moves on after a timeout, SERVFAIL or
#: REFUSED, not after these).
_FINAL_NEGATIVE = {"nxdomain": "NXDOMAIN", "nodata": "no A or AAAA record"}


def _final_negative(lk: DnsLookup) -> str | None:
    """What a resolver said when it gave a final "no address" for the name, else None."""
    reasons = {q.reason for q in lk.queries}
    if lk.addresses or not reasons or not reasons <= _FINAL_NEGATIVE.keys():
        return None
    return " / ".join(_FINAL_NEGATIVE[r] for r in sorted(r for r in reasons if r))


def _unwatched_sdk_host(sdk: SdkView, settings: Settings, regions: tuple[str, ...]) -> str | None:
    """The host boto3 would call when no watched endpoint is that host, else None.

    Judged against everything the settings watch, not the round's endpoints: a
    /probe round covers one endpoint and must not call the others unwatched.
    """
    if sdk.unconfigured or sdk.error or not sdk.endpoint_url:
        return None
    host = (urllib.parse.urlsplit(sdk.endpoint_url).hostname or "").rstrip(".").lower()
    if not host or host in {e.hostname for e in watched_endpoints(settings, regions)}:
        return None
    return host


def _region_less(reasons: tuple[str, ...]) -> bool:
    """botocore has no region it reads (none set, or only AWS_REGION, which it ignores)."""
    return any(r.startswith(("no_region", "aws_region_only")) for r in reasons)


def _sdk_global_advice(reasons: tuple[str, ...]) -> str | None:
    """The fix for the cause seen: the override that names the global endpoint (it wins
    over region and mode), the mode for legacy, a region for a region-less SDK."""
    if "endpoint_url_override" in reasons:
        return (
            "An endpoint URL override (AWS_ENDPOINT_URL_STS, AWS_ENDPOINT_URL, or endpoint_url "
            "in the AWS config file) names the global endpoint: point it at "
            "https://sts.<region>.amazonaws.com or remove it."
        )
    if any(r.startswith("legacy_mode") for r in reasons):
        return "Set AWS_STS_REGIONAL_ENDPOINTS=regional (or sts_regional_endpoints in the config)."
    if _region_less(reasons):
        return (
            "Set AWS_DEFAULT_REGION (botocore ignores AWS_REGION) or region in the AWS config "
            "file: with a region, botocore >= 1.40 calls the regional endpoint (older ones also "
            "need AWS_STS_REGIONAL_ENDPOINTS=regional)."
        )
    return None


def _sdk_global_findings(sdk: SdkView, report: Report) -> Iterator[Finding]:
    """boto3 here would call the global endpoint: where AWS serves it, and how bad."""
    if sdk.mode != "global":
        return
    where = served_text(sdk.global_served_in, sdk.global_served_why)
    if sdk.unconfigured:
        yield finding(
            "SDK_ENV_UNCONFIGURED",
            "the agent's own environment has no AWS settings (no AWS_* variable, no config "
            f"file), so its SDK view (boto3 would call {sdk.endpoint_url}; {where}) says "
            "nothing about the workloads on this host",
        )
        return
    why = f" ({', '.join(sdk.reasons)})" if sdk.reasons else ""
    fix = _sdk_global_advice(sdk.reasons)
    if cross_region(sdk.global_served_in, sdk.global_served_why):
        yield finding(
            "SDK_GLOBAL_SERVED_US_EAST_1",
            f"boto3 on this host would call {sdk.endpoint_url}{why}, and {where}: every "
            "STS call depends on us-east-1",
            advice=None if fix is None else fix + SERVED_HERE_NOTE,
        )
        return
    public = any(
        ep.endpoint.kind == "global" and ep.effective_path == "public" for ep in report.endpoints
    )
    public_note = (
        "; that name resolves to public addresses here, so those calls do not use an STS VPC "
        "endpoint"
        if public
        else ""
    )
    yield finding(
        "SDK_USES_GLOBAL_ENDPOINT",
        f"boto3 on this host would call {sdk.endpoint_url}{why}; {where}{public_note}",
        advice=fix,
    )


def _pin_finding(ep: EndpointReport) -> Finding:
    """HOSTS_FILE_OVERRIDE, saying when the pin blocks the name, is not what DNS gives, or
    fails: programs here use only the pin, so its failure is every call's."""
    host = ep.endpoint.hostname
    pins = ", ".join(f"{v.address} ({v.klass})" for v in ep.pinned)
    pinned = {v.address for v in ep.pinned}
    blocked = {a for a in pinned if blocks(a)}
    dialled = pinned - blocked
    given = set(answered(ep.lookups))
    elsewhere = sorted(dialled - given) if given else []
    failing = sorted(
        {f"{p.address} ({p.reason})" for p in ep.probes if p.address in dialled and not p.success}
    )
    message = (
        f"the hosts file pins {host} to {pins}, ahead of DNS ({ep.path}): programs on this "
        "host never ask DNS for it"
    )
    if not dialled:
        return finding(
            "HOSTS_FILE_OVERRIDE",
            message + "; an unspecified address blocks the name: programs here connect to "
            "this host itself and fail, so nothing reaches STS under this name",
            host,
            advice="Remove the entry if the name should work; if the block is deliberate, "
            "expect no path for this name.",
        )
    if elsewhere:
        message += f"; DNS does not answer {', '.join(elsewhere)}"
    if failing and len(failing) == len(dialled):
        message += (
            f"; calls to the pin fail: {', '.join(failing)}, so every call from this host "
            "fails whatever DNS says"
        )
    return finding("HOSTS_FILE_OVERRIDE", message, host)


def _endpoint_findings(
    ep: EndpointReport,
    settings: Settings,
    now: float,
    host_region: str | None = None,
    chain_error: str | None = None,
) -> Iterator[Finding]:
    host = ep.endpoint.hostname
    expected = ep.endpoint.expected
    paths = {v.path for v in ep.verdicts if v.path != "unresolved"}
    # A resolver that says the name has no address is believed: the stub resolver does not
    # ask the next nameserver after it, so the programs that ask that one first fail.
    denied = {lk.resolver.label: why for lk in ep.lookups if (why := _final_negative(lk))}
    # Resolvers that disagree make the path "mixed"; RESOLVERS_DISAGREE says which gives
    # what, and the expectation with it, instead of a second finding for the same cause.
    disagree = len(paths) > 1
    if ep.path == "unresolved" and not ep.lookups:
        pass  # no resolver was asked: RESOLVERS_UNAVAILABLE names the cause
    elif ep.path == "unresolved":
        reasons = sorted({lk.reason or "?" for lk in ep.lookups})
        yield finding(
            "ENDPOINT_UNRESOLVED",
            f"{host} did not resolve at any resolver ({', '.join(reasons)})",
            host,
        )
    elif (
        expected in ("vpce", "private")
        and ep.path == "public"
        and ep.endpoint.kind != "global"
        # Another region's name: this region's VPC endpoint never answers for it, so
        # "enable private DNS" would mislead (SDK_REGION_NOT_HOST_REGION says why).
        and (
            host_region in (None, ep.endpoint.signing_region)
            or ep.endpoint.kind not in ("regional", "fips", "dualstack")
        )
    ):
        yield finding(
            "PRIVATE_DNS_NOT_RESOLVING",
            f"{host} resolves to public addresses but a {expected} endpoint is expected: "
            "STS traffic is leaving the VPC path",
            host,
        )
    elif ep.expectation_met is False and not (disagree and not ep.pinned):
        yield finding(
            "ENDPOINT_PATH_UNEXPECTED",
            f"{host} takes the {ep.effective_path} path"
            + (" (pinned in the hosts file)" if ep.pinned else "")
            + f"; expected {expected}",
            host,
        )
    if ep.pinned:
        yield _pin_finding(ep)
    if disagree or (paths and denied):
        detail = ", ".join(
            f"{v.resolver}={v.path}" + (f" ({denied[v.resolver]})" if v.resolver in denied else "")
            for v in ep.verdicts
        )
        tail = (
            f"; programs that ask {', '.join(denied)} first get no address and do not try "
            "the next nameserver"
            if paths and denied
            else ""
        )
        wanted = f"; expected {expected}" if ep.expectation_met is False else ""
        yield finding(
            "RESOLVERS_DISAGREE",
            f"resolvers give {host} different paths: {detail}{wanted}{tail}",
            host,
        )
    failed = [p for p in ep.probes if not p.success]
    missing = [p for p in failed if p.reason == "credentials_missing"]
    mismatch = [p for p in failed if p.reason == "tls_hostname_mismatch"]
    other = [p for p in failed if p.reason not in ("credentials_missing", "tls_hostname_mismatch")]
    if missing:
        why = f" ({chain_error})" if chain_error else ""
        yield finding(
            "CREDENTIALS_MISSING",
            f"no AWS credentials{why}: calls to {host} were sent unsigned (transport "
            "measured only)",
            host,
            # Not "attach an instance profile" when a setting broke the chain before it.
            advice=CHAIN_FAILED_ADVICE if chain_error and chain_error != NO_KEYS else None,
        )
    if mismatch:
        yield finding(
            "TLS_HOSTNAME_MISMATCH",
            f"{host}: the certificate at {', '.join(p.address for p in mismatch)} does not "
            "cover the name",
            host,
        )
    if other:
        counts = Counter(p.reason for p in other)
        why = ", ".join(f"{r} x{n}" for r, n in sorted(counts.items()))
        yield finding(
            "STS_CALL_FAILED",
            f"{len(other)} of {len(ep.probes)} STS calls to {host} failed ({why}): "
            + "; ".join(f"{p.address}: {p.error}" for p in other[:3]),
            host,
            advice=" ".join(
                dict.fromkeys(
                    FAILURE_ADVICE.get(r or "other", FAILURE_ADVICE["other"]) for r in counts
                )
            ),
        )
    horizon = settings.cert_warning_days * 86400
    expiring = sorted(
        {
            (p.cert_not_after, p.address)
            for p in ep.probes
            if p.cert_not_after and p.cert_not_after - now < horizon
        }
    )
    if expiring:
        days = (expiring[0][0] - now) / 86400
        soonest = [a for t, a in expiring if t == expiring[0][0]]
        yield finding(
            "CERT_EXPIRING",
            f"{host}: certificate at {', '.join(soonest)} expires in {days:.1f} days",
            host,
        )
    if ep.dropped_addresses:
        yield finding(
            "ADDRESSES_DROPPED",
            f"{host}: {ep.dropped_addresses} addresses beyond max_addresses_per_endpoint "
            f"({settings.max_addresses_per_endpoint}) were not probed",
            host,
        )


def evaluate(report: Report, settings: Settings, now: float | None = None) -> tuple[Finding, ...]:
    now = time.time() if now is None else now
    out: list[Finding] = []
    if report.region is None:
        out.append(
            finding(
                "REGION_UNKNOWN",
                "no region configured or discovered: only the global endpoint is watched",
            )
        )
    if report.resolver_error:
        out.append(finding("RESOLVERS_UNAVAILABLE", f"no resolver to ask: {report.resolver_error}"))
    imds = report.imds
    if not imds.available and imds.reason == "disabled":
        out.append(finding("IMDS_DISABLED", "IMDS is disabled; using configured values only"))
    elif not imds.available and settings.imds_enabled:
        out.append(
            finding(
                "IMDS_UNREACHABLE",
                f"IMDS unreachable ({imds.reason}): {imds.detail}".rstrip(": "),
                advice=IMDS_REFUSED_ADVICE
                if imds.reason in ("unauthorized", "forbidden")
                else None,
            )
        )
    elif imds.available and imds.reason and not settings.vpc_cidrs:
        # Without VPC CIDRs no address can be classed vpce, so say why before the path does.
        kept = " (using the VPC CIDRs it last reported)" if report.vpc_cidrs else ""
        out.append(
            finding(
                "IMDS_UNREACHABLE",
                f"IMDS answered without usable VPC CIDRs{kept} ({imds.reason}): {imds.detail}",
                advice="Configure vpc_cidrs so addresses are classified without IMDS.",
            )
        )
    own_region = imds.region if imds.available else None
    sdk = report.sdk
    if sdk is not None:
        if sdk.ca_bundle_problem:
            out.append(
                finding(
                    "SDK_CA_BUNDLE_UNUSABLE",
                    f"AWS_CA_BUNDLE={sdk.ca_bundle_problem}; boto3 with this environment "
                    "cannot verify any HTTPS endpoint, so every STS call it makes fails",
                )
            )
        if sdk.region and sdk.region != sdk.region.lower():
            out.append(
                finding(
                    "SDK_REGION_INVALID",
                    f"boto3 on this host uses region {sdk.region!r}, not {sdk.region.lower()!r}: "
                    "it signs every STS call for a region name AWS does not have, so the calls "
                    "fail (the agent's own probes sign for the lower-case name and pass)",
                )
            )
        elif (
            own_region
            and sdk.region
            and sdk.region != own_region
            and sdk.mode in ("regional", "fips", "dualstack")
            and not sdk.unconfigured
        ):
            out.append(
                finding(
                    "SDK_REGION_NOT_HOST_REGION",
                    f"boto3 on this host uses region {sdk.region} and calls {sdk.endpoint_url}, "
                    f"but the instance is in {own_region} (IMDS): a VPC endpoint for STS in "
                    f"{own_region} does not serve them",
                )
            )
        regions = report.regions or ((report.region,) if report.region else ())
        # Without a region only the global name is watched, and REGION_UNKNOWN says so.
        unwatched = _unwatched_sdk_host(sdk, settings, regions) if regions else None
        if unwatched:
            out.append(
                finding(
                    "SDK_ENDPOINT_NOT_WATCHED",
                    f"boto3 on this host would call {sdk.endpoint_url}, which the agent does "
                    "not watch: the path and health of those calls are not measured",
                    advice=f"Add {unwatched} to endpoints.extra, or its region to regions "
                    "(or the endpoints.fips / endpoints.dualstack switch for those modes).",
                )
            )
        if sdk.error:
            out.append(
                finding(
                    "SDK_VIEW_FAILED",
                    f"could not compute the SDK's endpoint: {sdk.error}",
                )
            )
        else:
            out.extend(_sdk_global_findings(sdk, report))
        if not sdk.unconfigured and _region_less(sdk.reasons):
            out.append(
                finding(
                    "SDK_REGION_MISSING",
                    "boto3 on this host has no region"
                    + (
                        " (AWS_REGION is set, but botocore reads AWS_DEFAULT_REGION)"
                        if any(r.startswith("aws_region_only") for r in sdk.reasons)
                        else ""
                    ),
                )
            )
        if sdk.mode == "custom":
            out.append(
                finding(
                    "SDK_ENDPOINT_OVERRIDE",
                    f"boto3's STS endpoint is overridden to {sdk.endpoint_url}",
                )
            )
        if sdk.proxy:
            out.append(
                finding(
                    "SDK_USES_PROXY",
                    f"boto3 on this host would send STS calls for {sdk.endpoint_url} through "
                    f"the proxy {sdk.proxy} (HTTPS_PROXY): the proxy resolves the name and "
                    "connects, so this host's path to the endpoint is not the one used",
                )
            )
    if report.resolvers and not any(r.amazon_provided for r in report.resolvers) and imds.available:
        listed = ", ".join(r.label for r in report.resolvers)
        out.append(
            finding(
                "RESOLVER_NOT_AMAZON",
                f"no Amazon-provided resolver in use: {listed}"
                if report.vpc_cidrs or settings.vpc_cidrs
                # The VPC's base+2 is recognised from its CIDRs; only 169.254.169.253 without.
                else f"no resolver is recognisably the Amazon-provided DNS: {listed} (the VPC's "
                "CIDRs are unknown, so its base+2 address cannot be recognised)",
            )
        )
    out.extend(_first_resolver_silent(report))
    for ep in report.endpoints:
        out.extend(_endpoint_findings(ep, settings, now, own_region, report.credentials_error))
    out.extend(zone_findings(report))
    return tuple(out)


def _first_resolver_silent(report: Report) -> Iterator[Finding]:
    """RESOLVER_NOT_ANSWERING: the first nameserver of resolv.conf times out while a later
    one answers.  Every program then waits out the stub resolver's timeout on each name
    before it gets an answer, and no other finding sees it, since the names resolve."""
    listed = [r for r in report.resolvers if r.source == "resolv.conf"]
    if len(listed) < 2:
        return
    first = listed[0]
    lookups = [lk for ep in report.endpoints for lk in ep.lookups]
    own = [lk for lk in lookups if lk.resolver == first]
    answering = sorted(
        {lk.resolver.label for lk in lookups if lk.resolver in listed[1:] and lk.reason is None}
    )
    if own and answering and all(lk.reason == "timeout" for lk in own):
        yield finding(
            "RESOLVER_NOT_ANSWERING",
            f"{first.label}, the first nameserver in resolv.conf, did not answer ({len(own)} "
            f"of {len(own)} lookups timed out) while {', '.join(answering)} did: every name "
            "lookup on this host waits for the first one's timeout before it is answered",
        )


def zone_findings(report: Report) -> Iterator[Finding]:
    """ENDPOINT_NO_LOCAL_AZ_ENI where the ENIs' AZs are known and none is the host's."""
    host_az, host_az_id = report.imds.availability_zone, report.imds.availability_zone_id
    for ep in report.endpoints:
        has_local = local_az_eni(
            ep, report.eni_zones, host_az, report.vpce_enis, report.eni_zone_ids, host_az_id
        )
        if has_local is False and host_az:
            host = ep.endpoint.hostname
            azs = zones_of(ep, report.eni_zones, report.vpce_enis, report.eni_zone_ids)
            yield finding(
                "ENDPOINT_NO_LOCAL_AZ_ENI",
                f"{host} has ENIs in {', '.join(azs)} but none in this host's AZ "
                f"{az_label(host_az, host_az_id)}: every call crosses AZs (latency, data "
                "charges) and fails with another AZ",
                host,
            )
