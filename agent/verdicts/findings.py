"""Findings: turn a round's facts into stable, alertable codes with advice.

Codes are a contract (dashboards and runbooks key on them); messages may
change.  A healthy host produces no finding at warning or above.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

from agent.config import Settings
from agent.results import EndpointReport, Finding, Report
from agent.verdicts.zones import local_az_eni, zones_of

CODES = {
    "ENDPOINT_PATH_UNEXPECTED": "warning",
    "PRIVATE_DNS_NOT_RESOLVING": "critical",
    "ENDPOINT_UNRESOLVED": "critical",
    "RESOLVERS_DISAGREE": "warning",
    "STS_CALL_FAILED": "critical",
    "CREDENTIALS_MISSING": "warning",
    "TLS_HOSTNAME_MISMATCH": "critical",
    "CERT_EXPIRING": "warning",
    "SDK_USES_GLOBAL_ENDPOINT": "warning",
    "SDK_REGION_MISSING": "warning",
    "SDK_ENDPOINT_OVERRIDE": "info",
    "SDK_USES_PROXY": "warning",
    "HOSTS_FILE_OVERRIDE": "warning",
    "SDK_VIEW_FAILED": "warning",
    "RESOLVER_NOT_AMAZON": "info",
    "IMDS_UNREACHABLE": "warning",
    "IMDS_DISABLED": "info",
    "REGION_UNKNOWN": "warning",
    "RESOLVERS_UNAVAILABLE": "critical",
    "ADDRESSES_DROPPED": "info",
    "ENDPOINT_NO_LOCAL_AZ_ENI": "warning",
}


def _f(code: str, message: str, advice: str, endpoint: str | None = None) -> Finding:
    return Finding(code, CODES[code], message, advice, endpoint)  # type: ignore[arg-type]


def _endpoint_findings(ep: EndpointReport, settings: Settings, now: float) -> Iterator[Finding]:
    host = ep.endpoint.hostname
    expected = ep.endpoint.expected
    if ep.path == "unresolved" and not ep.lookups:
        pass  # no resolver was asked: RESOLVERS_UNAVAILABLE names the cause
    elif ep.path == "unresolved":
        reasons = sorted({lk.reason or "?" for lk in ep.lookups})
        yield _f(
            "ENDPOINT_UNRESOLVED",
            f"{host} did not resolve at any resolver ({', '.join(reasons)})",
            "Check the resolvers in /etc/resolv.conf answer for amazonaws.com names, and that "
            "UDP and TCP port 53 to them are allowed.",
            host,
        )
    elif expected in ("vpce", "private") and ep.path == "public" and ep.endpoint.kind != "global":
        yield _f(
            "PRIVATE_DNS_NOT_RESOLVING",
            f"{host} resolves to public addresses but a {expected} endpoint is expected: "
            "STS traffic is leaving the VPC path",
            "Enable private DNS on the STS interface endpoint, or make sure the host uses the "
            "Amazon-provided resolver (or a resolver that forwards to it / a private hosted zone).",
            host,
        )
    elif ep.expectation_met is False:
        yield _f(
            "ENDPOINT_PATH_UNEXPECTED",
            f"{host} takes the {ep.effective_path} path"
            + (" (pinned in the hosts file)" if ep.pinned else "")
            + f"; expected {expected}",
            "Compare the resolved addresses with the VPC endpoint's ENIs and the expect setting.",
            host,
        )
    if ep.pinned:
        pins = ", ".join(f"{v.address} ({v.klass})" for v in ep.pinned)
        yield _f(
            "HOSTS_FILE_OVERRIDE",
            f"the hosts file pins {host} to {pins}, ahead of DNS ({ep.path}): programs on "
            "this host never ask DNS for it",
            "Remove the entry (an endpoint with private DNS needs none), or keep it in step with "
            "the endpoint's ENIs: a stale pin fails every SDK call.",
            host,
        )
    paths = {v.path for v in ep.verdicts if v.path != "unresolved"}
    if len(paths) > 1:
        detail = ", ".join(f"{v.resolver}={v.path}" for v in ep.verdicts)
        yield _f(
            "RESOLVERS_DISAGREE",
            f"resolvers give {host} different paths: {detail}",
            "Only some resolvers see the endpoint's private zone; clients using the others "
            "bypass it.",
            host,
        )
    failed = [p for p in ep.probes if not p.success]
    missing = [p for p in failed if p.reason == "credentials_missing"]
    mismatch = [p for p in failed if p.reason == "tls_hostname_mismatch"]
    other = [p for p in failed if p.reason not in ("credentials_missing", "tls_hostname_mismatch")]
    if missing:
        yield _f(
            "CREDENTIALS_MISSING",
            f"no AWS credentials: calls to {host} were sent unsigned (transport measured only)",
            'Attach an instance profile, or set credentials = "none" to probe unsigned on purpose.',
            host,
        )
    if mismatch:
        yield _f(
            "TLS_HOSTNAME_MISMATCH",
            f"{host}: the certificate at {', '.join(p.address for p in mismatch)} does not "
            "cover the name",
            "The name resolves to something that is not this STS endpoint (the global name is "
            "never served by a VPC endpoint). Check DNS overrides and proxies.",
            host,
        )
    if other:
        counts = Counter(p.reason for p in other)
        why = ", ".join(f"{r} x{n}" for r, n in sorted(counts.items()))
        yield _f(
            "STS_CALL_FAILED",
            f"{len(other)} of {len(ep.probes)} STS calls to {host} failed ({why}): "
            + "; ".join(f"{p.address}: {p.error}" for p in other[:3]),
            "See the reason per address: connect_* and tls_* point at the network or endpoint "
            "policy, throttled/access_denied/expired_token at IAM or the endpoint policy.",
            host,
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
        yield _f(
            "CERT_EXPIRING",
            f"{host}: certificate at {expiring[0][1]} expires in {days:.1f} days",
            "AWS rotates these; an old certificate means something else is answering.",
            host,
        )
    if ep.dropped_addresses:
        yield _f(
            "ADDRESSES_DROPPED",
            f"{host}: {ep.dropped_addresses} addresses beyond max_addresses_per_endpoint "
            f"({settings.max_addresses_per_endpoint}) were not probed",
            "Raise max_addresses_per_endpoint if every address must be watched.",
            host,
        )


def evaluate(report: Report, settings: Settings, now: float | None = None) -> tuple[Finding, ...]:
    now = time.time() if now is None else now
    out: list[Finding] = []
    if report.region is None:
        out.append(
            _f(
                "REGION_UNKNOWN",
                "no region configured or discovered: only the global endpoint is watched",
                "Set regions in the config (or STS_AGENT_REGIONS), or allow IMDS (hop limit 2 in "
                "containers).",
            )
        )
    resolver_error = report.extras.get("resolver_error")
    if resolver_error:
        out.append(
            _f(
                "RESOLVERS_UNAVAILABLE",
                f"no resolver to ask: {resolver_error}",
                "Fix resolv_conf (or the file it names), or list resolvers explicitly.",
            )
        )
    imds = report.imds
    if not imds.available and imds.reason == "disabled":
        out.append(_f("IMDS_DISABLED", "IMDS is disabled; using configured values only", ""))
    elif not imds.available and settings.imds_enabled:
        out.append(
            _f(
                "IMDS_UNREACHABLE",
                f"IMDS unreachable ({imds.reason}): {imds.detail}".rstrip(": "),
                "In a container, set the instance's metadata hop limit to 2; otherwise configure "
                "regions and vpc_cidrs, or set imds.enabled = false.",
            )
        )
    elif imds.available and imds.reason and not settings.vpc_cidrs:
        # Without VPC CIDRs no address can be classed vpce, so say why before the path does.
        kept = " (using the VPC CIDRs it last reported)" if report.vpc_cidrs else ""
        out.append(
            _f(
                "IMDS_UNREACHABLE",
                f"IMDS answered without usable VPC CIDRs{kept} ({imds.reason}): {imds.detail}",
                "Configure vpc_cidrs so addresses are classified without IMDS.",
            )
        )
    sdk = report.sdk
    if sdk is not None:
        if sdk.error:
            out.append(
                _f(
                    "SDK_VIEW_FAILED",
                    f"could not compute the SDK's endpoint: {sdk.error}",
                    "Check AWS_CONFIG_FILE and AWS_PROFILE.",
                )
            )
        elif sdk.mode == "global":
            out.append(
                _f(
                    "SDK_USES_GLOBAL_ENDPOINT",
                    f"boto3 on this host would call {sdk.endpoint_url}"
                    + (f" ({', '.join(sdk.reasons)})" if sdk.reasons else ""),
                    "Set AWS_DEFAULT_REGION (botocore ignores AWS_REGION), and "
                    "AWS_STS_REGIONAL_ENDPOINTS=regional or upgrade botocore to >= 1.40.",
                )
            )
        if any(r.startswith(("no_region", "aws_region_only")) for r in sdk.reasons):
            out.append(
                _f(
                    "SDK_REGION_MISSING",
                    "boto3 on this host has no region"
                    + (
                        " (AWS_REGION is set, but botocore reads AWS_DEFAULT_REGION)"
                        if any(r.startswith("aws_region_only") for r in sdk.reasons)
                        else ""
                    ),
                    "Set AWS_DEFAULT_REGION or region in the AWS config file.",
                )
            )
        if sdk.mode == "custom":
            out.append(
                _f(
                    "SDK_ENDPOINT_OVERRIDE",
                    f"boto3's STS endpoint is overridden to {sdk.endpoint_url}",
                    "Make sure the override is a VPC endpoint DNS name on purpose.",
                )
            )
        if sdk.proxy:
            out.append(
                _f(
                    "SDK_USES_PROXY",
                    f"boto3 on this host would send STS calls for {sdk.endpoint_url} through "
                    f"the proxy {sdk.proxy} (HTTPS_PROXY): the proxy resolves the name and "
                    "connects, so this host's path to the endpoint is not the one used",
                    "Add the STS names (or .amazonaws.com) to NO_PROXY so calls go to the VPC "
                    "endpoint directly, or make sure the proxy resolves them with Amazon DNS.",
                )
            )
    if report.resolvers and not any(r.amazon_provided for r in report.resolvers) and imds.available:
        out.append(
            _f(
                "RESOLVER_NOT_AMAZON",
                "no Amazon-provided resolver in use: "
                + ", ".join(r.label for r in report.resolvers),
                "Private DNS for the STS endpoint and in-region serving of the global endpoint "
                "rely on Amazon DNS; a custom resolver must forward amazonaws.com to it.",
            )
        )
    for ep in report.endpoints:
        out.extend(_endpoint_findings(ep, settings, now))
    out.extend(zone_findings(report))
    return tuple(out)


def zone_findings(report: Report) -> Iterator[Finding]:
    """ENDPOINT_NO_LOCAL_AZ_ENI where the ENIs' AZs are known and none is the host's."""
    host_az = report.imds.availability_zone
    for ep in report.endpoints:
        if local_az_eni(ep, report.eni_zones, host_az, report.vpce_enis) is False:
            host = ep.endpoint.hostname
            azs = zones_of(ep, report.eni_zones, report.vpce_enis)
            yield _f(
                "ENDPOINT_NO_LOCAL_AZ_ENI",
                f"{host} has ENIs in {', '.join(azs)} but none in "
                f"this host's AZ {host_az}: every call crosses AZs (latency, data charges) and "
                "fails with another AZ",
                "Add a subnet in this AZ to the STS interface endpoint (aws ec2 "
                "modify-vpc-endpoint --add-subnet-ids), or place the host in an AZ the "
                "endpoint spans.",
                host,
            )
