"""Confirm through the EC2 API that private STS answers really are an STS VPC endpoint.

DNS alone can only say an address is private; a resolver rule or a stale private
hosted zone can point the STS name at anything. Matching the answers against the
network interfaces of the STS interface endpoints the account can see closes that
gap. It needs `ec2:DescribeVpcEndpoints` and `ec2:DescribeNetworkInterfaces`, so it
is optional and never raises: failures come back as a one-line `error`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.redact import (
    describe_credential_error,
    is_credential_error,
    redact_optional,
    redact_text,
)
from agent.results import Finding
from agent.verdicts.codes import finding

NOT_PERMITTED = "not permitted: needs ec2:DescribeVpcEndpoints and ec2:DescribeNetworkInterfaces"
DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})
REJECTED_CODES = frozenset({"AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch"})
TIMEOUT_SECONDS = 3.0
# EC2 caps the values of one filter; stay well below it.
ENI_BATCH = 100
_REGION_RE = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d+$")


@dataclass(frozen=True)
class VpceRecord:
    """One STS interface endpoint as EC2 describes it, with the addresses behind it.

    `addresses` is empty when EC2 reported no network interface for it (or they
    could not be read); such a record can never confirm an answer.
    """

    id: str
    vpc_id: str
    state: str
    private_dns_enabled: bool
    dns_names: tuple[str, ...] = ()
    network_interface_ids: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    zones: tuple[tuple[str, str], ...] = ()  # (address, its ENI's Availability Zone)
    zone_ids: tuple[tuple[str, str], ...] = ()  # (address, that AZ's ID, alike in every account)


@dataclass(frozen=True)
class VpceConfirmation:
    """What the EC2 API said about the STS endpoints, and which answers it confirms."""

    endpoints: tuple[VpceRecord, ...] = ()
    confirmed: dict[str, bool] = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()
    error: str | None = None


class _AuditError(Exception):
    """Carries a one-line reason out of the API calls."""


def confirm_vpc_endpoints(
    region: str,
    vpc_id: str | None,
    resolved: Mapping[str, Sequence[str]],
    *,
    ec2_client: Any | None = None,
    endpoint_url: str | None = None,
) -> VpceConfirmation:
    """Match each hostname's private answers against the visible STS endpoints' ENIs.

    `resolved` maps a watched hostname to the private addresses it resolved to.
    The API call is not narrowed to `vpc_id`, so endpoints in a hub VPC that the
    account can see also count. Without `vpc_id`, nothing can be called "this VPC",
    so the private-DNS and other-VPC checks are skipped.
    """
    unconfirmed = {host: False for host in resolved}
    if not _REGION_RE.match(region or ""):
        return VpceConfirmation(confirmed=unconfirmed, error=f"invalid region {region!r}")
    try:
        client = ec2_client or _make_client(region, endpoint_url)
        raw = _describe_endpoints(client, region)
    except _AuditError as exc:
        return VpceConfirmation(confirmed=unconfirmed, error=str(exc))

    eni_ids = [eni for ep in raw for eni in ep.get("NetworkInterfaceIds") or ()]
    error: str | None = None
    eni_addresses: dict[str, _Eni] = {}
    try:
        eni_addresses = _describe_eni_addresses(client, eni_ids)
    except _AuditError as exc:
        error = str(exc)
    records = tuple(_record(ep, eni_addresses) for ep in raw)
    if error is not None:
        # Without addresses nothing can be confirmed; settings-only findings still hold.
        findings = _settings_findings(region, vpc_id, records, serving=set())
        return VpceConfirmation(records, unconfirmed, tuple(findings), error)
    return _judge(region, vpc_id, resolved, records)


def _make_client(region: str, endpoint_url: str | None) -> Any:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    config = Config(
        connect_timeout=TIMEOUT_SECONDS,
        read_timeout=TIMEOUT_SECONDS,
        retries={"max_attempts": 1, "mode": "standard"},
    )
    try:
        session = boto3.session.Session()
        return session.client("ec2", region_name=region, endpoint_url=endpoint_url, config=config)
    except ValueError as exc:  # botocore rejects a malformed endpoint_url this way
        shown = redact_optional(endpoint_url)
        raise _AuditError(f"invalid endpoint_url {shown!r}: {_one_line(exc)}") from exc
    except BotoCoreError as exc:  # e.g. a named profile that does not exist
        raise _AuditError(_reason(exc, "creating the EC2 client")) from exc


def _describe_endpoints(client: Any, region: str) -> list[dict[str, Any]]:
    filters = [
        {"Name": "service-name", "Values": [f"com.amazonaws.{region}.sts"]},
        {"Name": "vpc-endpoint-type", "Values": ["Interface"]},
    ]
    return _paginate(client, "describe_vpc_endpoints", "VpcEndpoints", Filters=filters)


#: An ENI's addresses, its AZ name and that AZ's ID ("" when unknown).
_Eni = tuple[tuple[str, ...], str, str]


def _describe_eni_addresses(client: Any, eni_ids: Sequence[str]) -> dict[str, _Eni]:
    """Addresses and AZ per ENI id, looked up by filter so a vanished ENI is simply absent."""
    enis: dict[str, Mapping[str, Any]] = {}
    for batch in _batches(eni_ids):
        filters = [{"Name": "network-interface-id", "Values": batch}]
        for eni in _paginate(
            client, "describe_network_interfaces", "NetworkInterfaces", Filters=filters
        ):
            if eni.get("NetworkInterfaceId"):
                enis[eni["NetworkInterfaceId"]] = eni
    unzoned = [
        e["SubnetId"]
        for e in enis.values()
        if e.get("SubnetId") and not e.get("AvailabilityZoneId")
    ]
    subnet_ids = _subnet_zone_ids(client, unzoned) if unzoned else {}
    return {
        eni_id: (
            tuple(_eni_addresses(eni)),
            str(eni.get("AvailabilityZone") or ""),
            str(eni.get("AvailabilityZoneId") or subnet_ids.get(eni.get("SubnetId") or "", "")),
        )
        for eni_id, eni in enis.items()
    }


def _batches(ids: Iterable[str]) -> Iterator[list[str]]:
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), ENI_BATCH):
        yield unique[start : start + ENI_BATCH]


def _subnet_zone_ids(client: Any, subnet_ids: Sequence[str]) -> dict[str, str]:
    """Subnet id -> its AZ ID; empty when EC2 will not say, since names still compare."""
    out: dict[str, str] = {}
    try:
        for batch in _batches(subnet_ids):
            filters = [{"Name": "subnet-id", "Values": batch}]
            for subnet in _paginate(client, "describe_subnets", "Subnets", Filters=filters):
                if subnet.get("SubnetId") and subnet.get("AvailabilityZoneId"):
                    out[subnet["SubnetId"]] = str(subnet["AvailabilityZoneId"])
    except _AuditError:
        return {}
    return out


def _eni_addresses(eni: Mapping[str, Any]) -> Iterable[str]:
    seen: dict[str, None] = {}
    candidates = [eni.get("PrivateIpAddress")]
    candidates += [p.get("PrivateIpAddress") for p in eni.get("PrivateIpAddresses") or ()]
    candidates += [p.get("Ipv6Address") for p in eni.get("Ipv6Addresses") or ()]
    for cand in candidates:
        if cand:
            seen.setdefault(_normal(cand), None)
    return seen


def _paginate(client: Any, operation: str, key: str, **kwargs: Any) -> list[dict[str, Any]]:
    from botocore.exceptions import BotoCoreError, ClientError

    items: list[dict[str, Any]] = []
    try:
        for page in client.get_paginator(operation).paginate(**kwargs):
            items.extend(page.get(key) or ())
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in DENIED_CODES:
            raise _AuditError(NOT_PERMITTED) from exc
        if code in REJECTED_CODES:
            raise _AuditError(f"credentials rejected by the EC2 API ({code})") from exc
        raise _AuditError(f"EC2 {operation} failed: {code or _one_line(exc)}") from exc
    except (BotoCoreError, OSError, ValueError) as exc:
        raise _AuditError(_reason(exc, operation)) from exc
    return items


def _reason(exc: BaseException, doing: str) -> str:
    from botocore.exceptions import (
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        ReadTimeoutError,
    )

    if isinstance(exc, NoCredentialsError):
        return "no AWS credentials found for the EC2 API"
    if is_credential_error(exc):  # its message may quote a credential_process's output
        return f"EC2 {doing} failed: {describe_credential_error(exc)}"
    if isinstance(exc, NoRegionError):
        return "no region for the EC2 API"
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
        return f"EC2 API timed out during {doing}: {_one_line(exc)}"
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach the EC2 API: {_one_line(exc)}"
    return f"EC2 {doing} failed: {type(exc).__name__}: {_one_line(exc)}"


def _one_line(exc: BaseException) -> str:
    return redact_text(" ".join(str(exc).split()))[:300]


def _normal(address: str) -> str:
    try:
        return ipaddress.ip_address(address.strip()).compressed
    except ValueError:
        return address.strip()


def _record(ep: Mapping[str, Any], eni_addresses: Mapping[str, _Eni]) -> VpceRecord:
    eni_ids = tuple(ep.get("NetworkInterfaceIds") or ())
    addresses: dict[str, tuple[str, str]] = {}
    for eni in eni_ids:
        found, az, az_id = eni_addresses.get(eni, ((), "", ""))
        for addr in found:
            addresses.setdefault(addr, (az, az_id))
    dns_names = tuple(d["DnsName"] for d in ep.get("DnsEntries") or () if d.get("DnsName"))
    return VpceRecord(
        id=str(ep.get("VpcEndpointId", "")),
        vpc_id=str(ep.get("VpcId", "")),
        state=str(ep.get("State", "")),
        private_dns_enabled=bool(ep.get("PrivateDnsEnabled", False)),
        dns_names=dns_names,
        network_interface_ids=eni_ids,
        addresses=tuple(addresses),
        zones=tuple((a, az) for a, (az, _) in addresses.items() if az),
        zone_ids=tuple((a, az_id) for a, (_, az_id) in addresses.items() if az_id),
    )


def _judge(
    region: str,
    vpc_id: str | None,
    resolved: Mapping[str, Sequence[str]],
    records: tuple[VpceRecord, ...],
) -> VpceConfirmation:
    owner: dict[str, VpceRecord] = {}
    for rec in records:
        for addr in rec.addresses:
            owner.setdefault(addr, rec)

    confirmed: dict[str, bool] = {}
    findings: list[Finding] = []
    serving: set[str] = set()
    blind = [r.id for r in records if not r.addresses]
    for host, addrs in resolved.items():
        normal = list(dict.fromkeys(_normal(a) for a in addrs))
        unknown = [a for a in normal if a not in owner]
        confirmed[host] = bool(normal) and not unknown
        by_endpoint: dict[str, VpceRecord] = {owner[a].id: owner[a] for a in normal if a in owner}
        serving.update(by_endpoint)
        if unknown:
            findings.append(_address_unknown(host, region, unknown, blind))
        if vpc_id:
            findings.extend(
                _in_other_vpc(host, rec, vpc_id)
                for rec in by_endpoint.values()
                if rec.vpc_id != vpc_id
            )

    if not records:
        findings.insert(0, _not_found(region, None))
    elif vpc_id and not serving and not any(r.vpc_id == vpc_id for r in records):
        findings.insert(0, _not_found(region, vpc_id))
    findings.extend(_settings_findings(region, vpc_id, records, serving))
    return VpceConfirmation(records, confirmed, tuple(findings), None)


def _settings_findings(
    region: str, vpc_id: str | None, records: Sequence[VpceRecord], serving: set[str]
) -> list[Finding]:
    """Findings that need only the endpoint descriptions, not the ENI addresses."""
    regional = f"sts.{region}.amazonaws.com"
    out: list[Finding] = []
    for rec in records:
        relevant = vpc_id is None or rec.vpc_id == vpc_id or rec.id in serving
        if relevant and rec.state.lower() != "available":
            out.append(
                finding(
                    "VPCE_NOT_AVAILABLE",
                    f"STS VPC endpoint {rec.id} in {rec.vpc_id} is in state "
                    f"{rec.state or 'unknown'!r}, not 'available'",
                    regional,
                )
            )
        if vpc_id and rec.vpc_id == vpc_id and not rec.private_dns_enabled:
            out.append(
                finding(
                    "VPCE_PRIVATE_DNS_DISABLED",
                    f"STS VPC endpoint {rec.id} in this VPC ({vpc_id}) has private "
                    f"DNS disabled, so {regional} resolves to public addresses",
                    regional,
                )
            )
    return out


def _not_found(region: str, vpc_id: str | None) -> Finding:
    service = f"com.amazonaws.{region}.sts"
    if vpc_id is None:
        message = f"no STS interface VPC endpoint ({service}) is visible in {region}"
    else:
        message = (
            f"no STS interface VPC endpoint ({service}) in this VPC ({vpc_id}), and none "
            f"visible elsewhere serves this host's answers"
        )
    return finding("VPCE_NOT_FOUND", message, f"sts.{region}.amazonaws.com")


def _address_unknown(
    host: str, region: str, unknown: Sequence[str], blind: Sequence[str]
) -> Finding:
    message = (
        f"{host} resolved to {', '.join(unknown)}, which belongs to no visible STS "
        f"VPC endpoint in {region}"
    )
    if blind:
        message += f" (no interface addresses known for {', '.join(blind)})"
    return finding("VPCE_ADDRESS_UNKNOWN", message, host)


def _in_other_vpc(host: str, rec: VpceRecord, vpc_id: str) -> Finding:
    return finding(
        "VPCE_IN_OTHER_VPC",
        f"{host} is served by STS VPC endpoint {rec.id} in another VPC "
        f"({rec.vpc_id}), not this one ({vpc_id})",
        host,
    )
