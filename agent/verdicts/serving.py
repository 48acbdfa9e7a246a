"""Where AWS serves a global STS call (sts.amazonaws.com) from this host.

Since 2025 AWS serves a global call in the caller's own region when the Amazon DNS of
a region enabled by default resolved the name; behind any other resolver, or from an
opt-in region, it still goes to us-east-1, a cross-region dependency. Kept free of
botocore so the daemon can ask without loading it.
"""

from __future__ import annotations

import ipaddress

from agent.results import Resolver

#: Regions not enabled by default: "Active by default" is "No" in the table of AWS's
#: "AWS STS Regions and endpoints" page (IAM User Guide,
#: id_credentials_temp_region-endpoints), read in 2025. AWS did not deploy the 2025
#: change of the global endpoint there, so global calls from them are served in
#: us-east-1. China and GovCloud are other partitions, with no sts.amazonaws.com.
OPT_IN_REGIONS: frozenset[str] = frozenset(
    {
        "af-south-1",
        "ap-east-1",
        "ap-east-2",
        "ap-south-2",
        "ap-southeast-3",
        "ap-southeast-4",
        "ap-southeast-5",
        "ap-southeast-6",
        "ap-southeast-7",
        "ca-west-1",
        "eu-central-2",
        "eu-south-1",
        "eu-south-2",
        "il-central-1",
        "me-central-1",
        "me-south-1",
        "mx-central-1",
    }
)
US_EAST_1 = "us-east-1"
#: Why a global call is served where it is, for reports and findings.
SERVING_WHY: dict[str, str] = {
    "amazon_dns": "the host resolves through the Amazon-provided DNS in a default-enabled region",
    "opt_in_region": "the host is in an opt-in region, where the global endpoint is not served",
    "custom_resolver": "a resolver other than the Amazon-provided DNS answers the host",
    "amazon_dns_first": "the host's first resolver is the Amazon-provided DNS; the calls a "
    "later, non-Amazon resolver answers (when the first fails, or with `options rotate`) "
    "are served in us-east-1",
    "home_region": "the host is in us-east-1, which serves global calls whatever resolves them",
    "proxy": "an HTTPS proxy resolves the name, so its resolver decides",
    "region_unknown": "the host's region is not known",
    "resolvers_unknown": "the host's resolvers are not known",
    "forwarder": "the host's resolver is a local cache or forwarder, which may or may not "
    "forward to the Amazon-provided DNS",
    "cluster_dns": "the cluster's DNS (CoreDNS) answers the host, which may or may not "
    "forward to the Amazon-provided DNS",
    "vpc_unknown": "the VPC's CIDRs are not known, so the Amazon-provided DNS at VPC base+2 "
    "cannot be told from another resolver",
}
SYSTEM_SOURCES = ("resolv.conf", "systemd-resolved")


def _forwarder(r: Resolver) -> bool:
    """A resolver that can only be a forwarder: a cache on this host (a system nameserver
    on loopback) or a node-local cache on a link-local address that is not Amazon's."""
    try:
        ip = ipaddress.ip_address(r.address)
    except ValueError:
        return False
    return ip.is_link_local or (ip.is_loopback and r.source in SYSTEM_SOURCES)


def global_serving(
    host_region: str | None,
    resolvers: tuple[Resolver, ...],
    proxied: bool = False,
    *,
    vpc_known: bool = True,
    in_cluster: bool = False,
) -> tuple[str | None, str]:
    """(the region AWS serves this host's global STS calls in, or None; why).

    Since 2025 a global call is served in the caller's region when the Amazon DNS of a
    default-enabled region resolved the name; any other resolver, or an opt-in region,
    sends it to us-east-1. The system's resolvers decide (they are what boto3 uses), the
    first of them while it answers;
    configured extra resolvers only when the system's are not known. A resolver that
    may forward to the Amazon DNS (a local cache, a cluster's CoreDNS), or one that
    cannot be told from the VPC's base+2 without the VPC's CIDRs, leaves it unknown:
    us-east-1 is claimed only where the agent can know it.
    """
    if proxied:
        return None, "proxy"
    if not host_region:
        return None, "region_unknown"
    if host_region in OPT_IN_REGIONS:
        return US_EAST_1, "opt_in_region"
    system = tuple(r for r in resolvers if r.source in SYSTEM_SOURCES)
    used = system or resolvers
    if not used:
        return None, "resolvers_unknown"
    if all(r.amazon_provided for r in used):
        return host_region, "amazon_dns"
    if used[0].amazon_provided and host_region != US_EAST_1:
        # glibc and systemd-resolved ask the first server and move on only when it fails.
        return host_region, "amazon_dns_first"
    if host_region == US_EAST_1:  # us-east-1 either way: the host's own region
        return US_EAST_1, "home_region"
    others = [r for r in used if not r.amazon_provided]
    if any(_forwarder(r) for r in others):
        return None, "forwarder"
    if in_cluster:
        return None, "cluster_dns"
    if not vpc_known:
        return None, "vpc_unknown"
    return US_EAST_1, "custom_resolver"


def served_text(served_in: str | None, why: str | None) -> str:
    """One clause for findings and reports: where, and why there."""
    reason = SERVING_WHY.get(why or "", why or "unknown")
    if served_in is None:
        return f"where AWS serves them is unknown ({reason})"
    return f"AWS serves them in {served_in} ({reason})"


def cross_region(served_in: str | None, why: str | None) -> bool:
    """Served in us-east-1 although the host is elsewhere: the severe case."""
    return served_in == US_EAST_1 and why in ("opt_in_region", "custom_resolver")
