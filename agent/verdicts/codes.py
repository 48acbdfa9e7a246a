"""The findings registry: every code a round or a host audit raises, its severity and advice.

Codes are a contract (dashboards and runbooks key on them, the README lists
them all), so every Finding is built here from its entry; only the message,
which says what was seen, comes from the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.results import Finding, Severity

ENV_FILE = "/etc/default/sts-agent"
_SDK_GLOBAL_FIX = (
    "Set AWS_DEFAULT_REGION (botocore ignores AWS_REGION), and "
    "AWS_STS_REGIONAL_ENDPOINTS=regional or upgrade botocore to >= 1.40."
)
#: How global calls stay in the host's region even without the regional name.
SERVED_HERE_NOTE = (
    " In a default-enabled region, resolving through the Amazon-provided DNS also has AWS "
    "serve global calls in this region."
)
#: IMDS_UNREACHABLE's advice when IMDS answered but refused: a hop limit is not the cause.
IMDS_REFUSED_ADVICE = (
    "IMDS answers but refuses this agent: check the instance's metadata options "
    "(HttpEndpoint enabled, HttpTokens) and that no proxy or firewall rule stands between; "
    "otherwise configure regions and vpc_cidrs, or set imds.enabled = false."
)
#: CREDENTIALS_MISSING's advice when the chain failed on a setting, not for want of keys.
CHAIN_FAILED_ADVICE = (
    "The credential chain stopped at a setting before it reached any keys: fix what it "
    "names (AWS_PROFILE, the AWS config or credentials file, source_profile, "
    "credential_process). boto3 with this environment fails the same way."
)
#: Advice when audited processes, not the agent's own environment, call the global name.
PROCESS_GLOBAL_ADVICE = (
    "Give them AWS_DEFAULT_REGION and AWS_STS_REGIONAL_ENDPOINTS=regional (or a "
    "botocore >= 1.40); the global name never uses the VPC endpoint."
)


@dataclass(frozen=True)
class Code:
    severity: Severity
    advice: str
    audit: bool = False  # raised only by a host audit (agent.audit), never by evaluate()


CODES: dict[str, Code] = {
    "ENDPOINT_PATH_UNEXPECTED": Code(
        "warning",
        "Compare the resolved addresses with the VPC endpoint's ENIs and the expect setting.",
    ),
    "PRIVATE_DNS_NOT_RESOLVING": Code(
        "critical",
        "Enable private DNS on the STS interface endpoint, or make sure the host uses the "
        "Amazon-provided resolver (or a resolver that forwards to it / a private hosted zone).",
    ),
    "ENDPOINT_UNRESOLVED": Code(
        "critical",
        "Check that the resolvers this host asks (resolv.conf's, or `resolvers` when set) "
        "answer for amazonaws.com names, and that UDP and TCP port 53 to them are allowed.",
    ),
    "RESOLVERS_DISAGREE": Code(
        "warning",
        "Only some resolvers see the endpoint's private zone; clients using the others bypass it.",
    ),
    "STS_CALL_FAILED": Code(
        "critical",
        "See the reason per address; the finding's advice is written for the reasons seen.",
    ),
    "CREDENTIALS_MISSING": Code(
        "warning",
        'Attach an instance profile, or set credentials = "none" to probe unsigned on purpose.',
    ),
    "TLS_HOSTNAME_MISMATCH": Code(
        "critical",
        "The name resolves to something that is not this STS endpoint (the global name is "
        "never served by a VPC endpoint). Check DNS overrides and proxies.",
    ),
    "CERT_EXPIRING": Code(
        "warning", "AWS rotates these; an old certificate means something else is answering."
    ),
    "SDK_USES_GLOBAL_ENDPOINT": Code("warning", _SDK_GLOBAL_FIX),
    "SDK_REGION_MISSING": Code(
        "warning", "Set AWS_DEFAULT_REGION or region in the AWS config file."
    ),
    "SDK_REGION_NOT_HOST_REGION": Code(
        "warning",
        "If the workloads here should call STS in this instance's region, set "
        "AWS_DEFAULT_REGION (or region in the AWS config file) to it; if the other region is "
        "meant, its calls take the public path unless that region is reached privately.",
    ),
    "SDK_REGION_INVALID": Code(
        "critical",
        "Write the region in lower case (AWS_DEFAULT_REGION, or region in the AWS config "
        "file): AWS region names are lower case, and STS rejects a signature scoped to "
        "any other spelling.",
    ),
    "SDK_CA_BUNDLE_UNUSABLE": Code(
        "critical",
        "Point AWS_CA_BUNDLE at a PEM bundle boto3 can read, or unset it to use botocore's "
        "own; the agent's probes use botocore's default meanwhile.",
    ),
    "SDK_ENDPOINT_NOT_WATCHED": Code(
        "warning", "Watch the endpoint boto3 calls (endpoints.extra or regions)."
    ),
    "SDK_ENDPOINT_OVERRIDE": Code(
        "info", "Make sure the override is a VPC endpoint DNS name on purpose."
    ),
    "SDK_USES_PROXY": Code(
        "warning",
        "Add the STS names (or .amazonaws.com) to NO_PROXY so calls go to the VPC "
        "endpoint directly, or make sure the proxy resolves them with Amazon DNS.",
    ),
    "HOSTS_FILE_OVERRIDE": Code(
        "warning",
        "Remove the entry (an endpoint with private DNS needs none), or keep it in step with "
        "the endpoint's ENIs: a stale pin fails every SDK call.",
    ),
    "SDK_VIEW_FAILED": Code(
        "warning",
        "Where the message names a setting (an AWS_* variable, AWS_PROFILE, the AWS config "
        "file), boto3 fails on it too: fix that value.",
    ),
    "SDK_GLOBAL_SERVED_US_EAST_1": Code(
        "critical",
        _SDK_GLOBAL_FIX + SERVED_HERE_NOTE,
    ),
    "SDK_ENV_UNCONFIGURED": Code(
        "info",
        "Turn on audit.processes to read the workloads' own settings, or give the agent "
        f"the workloads' AWS_* settings in {ENV_FILE} (or the container's environment).",
    ),
    "RESOLVER_NOT_AMAZON": Code(
        "info",
        "Private DNS for the STS endpoint and in-region serving of the global endpoint "
        "rely on Amazon DNS; a custom resolver must forward amazonaws.com to it.",
    ),
    "IMDS_UNREACHABLE": Code(
        "warning",
        "In a container, set the instance's metadata hop limit to 2; otherwise configure "
        "regions and vpc_cidrs, or set imds.enabled = false.",
    ),
    "IMDS_DISABLED": Code(
        "info",
        "Nothing is discovered from IMDS: set regions and vpc_cidrs in the config, or "
        "the agent cannot tell this VPC's addresses from others.",
    ),
    "REGION_UNKNOWN": Code(
        "warning",
        "Set regions in the config (or STS_AGENT_REGIONS), or allow IMDS (hop limit 2 in "
        "containers).",
    ),
    "RESOLVER_NOT_ANSWERING": Code(
        "warning",
        "Fix or remove that nameserver (in resolv.conf, or the VPC's DHCP options set that "
        "puts it there): the stub resolver asks it first for every name and waits for its "
        "timeout (options timeout:, 5 s by default) before it asks the next.",
    ),
    "RESOLVERS_UNAVAILABLE": Code(
        "critical", "Fix resolv_conf (or the file it names), or list resolvers explicitly."
    ),
    "ADDRESSES_DROPPED": Code(
        "info", "Raise max_addresses_per_endpoint if every address must be watched."
    ),
    "ENDPOINT_NO_LOCAL_AZ_ENI": Code(
        "warning",
        "Add a subnet in this AZ to the STS interface endpoint (aws ec2 "
        "modify-vpc-endpoint --add-subnet-ids), or place the host in an AZ the "
        "endpoint spans.",
    ),
    "PROCESS_USES_GLOBAL_ENDPOINT": Code("warning", PROCESS_GLOBAL_ADVICE, audit=True),
    "PROCESS_AUDIT_NOT_PERMITTED": Code(
        "info",
        "Run with CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (see the systemd drop-in), "
        "or turn audit.processes off.",
        audit=True,
    ),
    "VPCE_NOT_FOUND": Code(
        "warning",
        "Create an STS interface endpoint with private DNS in this VPC. An endpoint "
        "shared from another account is not listed here; if that is the design, "
        "this warning can be ignored.",
        audit=True,
    ),
    "VPCE_PRIVATE_DNS_DISABLED": Code(
        "warning",
        "Enable private DNS on the endpoint, or watch and call its "
        "vpce DNS names instead (add them to endpoints.extra).",
        audit=True,
    ),
    "VPCE_ADDRESS_UNKNOWN": Code(
        "warning",
        "DNS may point somewhere unexpected: check resolver rules, private hosted "
        "zones and /etc/hosts, or an endpoint in an account this one cannot see.",
        audit=True,
    ),
    "VPCE_NOT_AVAILABLE": Code(
        "warning",
        "An endpoint that is pending, rejected, failed or being deleted "
        "does not carry traffic; check it in the VPC console or recreate it.",
        audit=True,
    ),
    "VPCE_IN_OTHER_VPC": Code(
        "info",
        "Fine for a centralised (hub) endpoint. The regional name reaches it only "
        "through a Route 53 private hosted zone or resolver rules, so keep those "
        "associated with this VPC.",
        audit=True,
    ),
}


def finding(
    code: str, message: str, endpoint: str | None = None, *, advice: str | None = None
) -> Finding:
    """The Finding for `code` with its registered severity; `advice` replaces the
    registered advice where the cause seen calls for another fix."""
    entry = CODES[code]
    return Finding(
        code, entry.severity, message, entry.advice if advice is None else advice, endpoint
    )
