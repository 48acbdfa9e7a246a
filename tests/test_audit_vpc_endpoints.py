"""VPC endpoint confirmation against moto's EC2 API served on loopback.

moto creates one ENI per subnet for an interface endpoint and gives it a random
10.x address (not necessarily inside the subnet), so the tests read the addresses
back from DescribeNetworkInterfaces rather than assuming any.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from agent.audit.vpc_endpoints import NOT_PERMITTED, VpceConfirmation, confirm_vpc_endpoints
from agent.results import Finding, ImdsInfo, Report
from tests.support.moto_http import moto_http_server

REGION = "us-east-2"
REGIONAL = f"sts.{REGION}.amazonaws.com"
STS_SERVICE = f"com.amazonaws.{REGION}.sts"
FOREIGN = "192.168.77.5"  # moto only hands out 10.x addresses


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_http_server() as url:
        yield url


def _moto_api(url: str, path: str, body: bytes = b"") -> None:
    req = urllib.request.Request(
        url + path, data=body, method="POST", headers={"Content-Type": "text/plain"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200


@pytest.fixture
def url(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    _moto_api(moto_url, "/moto-api/reset")
    return moto_url


@pytest.fixture
def ec2(url: str) -> Any:
    return boto3.client("ec2", region_name=REGION, endpoint_url=url)


@dataclass(frozen=True)
class Scene:
    vpc_id: str
    endpoint_id: str
    addresses: tuple[str, ...]
    dns_names: tuple[str, ...]
    eni_ids: tuple[str, ...]


def _vpc(ec2: Any, cidr: str) -> tuple[str, list[str]]:
    vpc_id = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
    base = cidr.split(".")
    subnets = [
        ec2.create_subnet(
            VpcId=vpc_id,
            CidrBlock=f"{base[0]}.{base[1]}.{third}.0/20",
            AvailabilityZone=f"{REGION}{az}",
        )["Subnet"]["SubnetId"]
        for third, az in ((128, "a"), (144, "b"))
    ]
    return vpc_id, subnets


def _scene(
    ec2: Any, cidr: str = "10.120.0.0/16", *, private_dns: bool = True, service: str = STS_SERVICE
) -> Scene:
    vpc_id, subnets = _vpc(ec2, cidr)
    ep = ec2.create_vpc_endpoint(
        VpcId=vpc_id,
        VpcEndpointType="Interface",
        ServiceName=service,
        PrivateDnsEnabled=private_dns,
        SubnetIds=subnets,
    )["VpcEndpoint"]
    enis = ec2.describe_network_interfaces(NetworkInterfaceIds=ep["NetworkInterfaceIds"])
    addresses = tuple(e["PrivateIpAddress"] for e in enis["NetworkInterfaces"])
    assert len(addresses) == 2, "moto should create one ENI per subnet"
    return Scene(
        vpc_id=vpc_id,
        endpoint_id=ep["VpcEndpointId"],
        addresses=addresses,
        dns_names=tuple(d["DnsName"] for d in ep["DnsEntries"]),
        eni_ids=tuple(ep["NetworkInterfaceIds"]),
    )


def _codes(result: VpceConfirmation) -> list[str]:
    return [f.code for f in result.findings]


def _only_finding(result: VpceConfirmation, code: str, severity: str) -> Finding:
    """The one finding the audit raised, checked for its code and severity."""
    assert _codes(result) == [code]
    assert result.findings[0].severity == severity
    return result.findings[0]


def test_private_answers_of_this_vpc_endpoint_are_confirmed(ec2: Any, url: str) -> None:
    scene = _scene(ec2)
    result = confirm_vpc_endpoints(
        REGION, scene.vpc_id, {REGIONAL: scene.addresses}, endpoint_url=url
    )
    assert result.error is None
    assert result.confirmed == {REGIONAL: True}
    assert result.findings == ()
    (rec,) = result.endpoints
    assert rec.id == scene.endpoint_id
    assert rec.vpc_id == scene.vpc_id
    assert rec.state == "available"
    assert rec.private_dns_enabled is True
    assert rec.dns_names == scene.dns_names and scene.endpoint_id in rec.dns_names[0]
    assert rec.network_interface_ids == scene.eni_ids
    assert sorted(rec.addresses) == sorted(scene.addresses)


def test_one_address_of_an_endpoint_is_enough_for_a_partial_answer(ec2: Any, url: str) -> None:
    scene = _scene(ec2)
    result = confirm_vpc_endpoints(
        REGION, scene.vpc_id, {REGIONAL: scene.addresses[:1], "other": []}, endpoint_url=url
    )
    # A name with no private answer has nothing to confirm.
    assert result.confirmed == {REGIONAL: True, "other": False}


def test_injected_client_is_used(ec2: Any) -> None:
    scene = _scene(ec2)
    result = confirm_vpc_endpoints(
        REGION, scene.vpc_id, {REGIONAL: scene.addresses}, ec2_client=ec2
    )
    assert result.error is None
    assert result.confirmed == {REGIONAL: True}


def test_private_dns_disabled_in_this_vpc_is_reported(ec2: Any, url: str) -> None:
    scene = _scene(ec2, private_dns=False)
    vpce_name = scene.dns_names[0]
    result = confirm_vpc_endpoints(
        REGION, scene.vpc_id, {vpce_name: scene.addresses, REGIONAL: []}, endpoint_url=url
    )
    assert result.error is None
    assert result.endpoints[0].private_dns_enabled is False
    assert result.confirmed == {vpce_name: True, REGIONAL: False}
    finding = _only_finding(result, "VPCE_PRIVATE_DNS_DISABLED", "warning")
    assert scene.endpoint_id in finding.message and REGIONAL in finding.message
    assert "endpoints.extra" in finding.advice


def test_hub_endpoint_in_another_vpc_is_info(ec2: Any, url: str) -> None:
    hub = _scene(ec2, "10.50.0.0/16", private_dns=False)
    spoke_vpc, _ = _vpc(ec2, "10.120.0.0/16")
    result = confirm_vpc_endpoints(REGION, spoke_vpc, {REGIONAL: hub.addresses}, endpoint_url=url)
    assert result.error is None
    assert result.confirmed == {REGIONAL: True}
    # Private DNS off on the hub is by design: only this VPC's endpoints are judged for it.
    finding = _only_finding(result, "VPCE_IN_OTHER_VPC", "info")
    assert hub.vpc_id in finding.message and spoke_vpc in finding.message
    assert "private hosted zone" in finding.advice


def test_without_vpc_id_a_hub_endpoint_still_confirms(ec2: Any, url: str) -> None:
    hub = _scene(ec2, "10.50.0.0/16", private_dns=False)
    result = confirm_vpc_endpoints(REGION, None, {REGIONAL: hub.addresses}, endpoint_url=url)
    assert result.confirmed == {REGIONAL: True}
    assert result.findings == ()


def test_address_outside_every_endpoint_is_unknown(ec2: Any, url: str) -> None:
    scene = _scene(ec2)
    result = confirm_vpc_endpoints(
        REGION, scene.vpc_id, {REGIONAL: [scene.addresses[0], FOREIGN]}, endpoint_url=url
    )
    assert result.error is None
    assert result.confirmed == {REGIONAL: False}
    finding = _only_finding(result, "VPCE_ADDRESS_UNKNOWN", "warning")
    assert finding.endpoint == REGIONAL
    assert FOREIGN in finding.message and scene.addresses[0] not in finding.message


def test_no_sts_endpoint_is_not_found(ec2: Any, url: str) -> None:
    vpc_id, subnets = _vpc(ec2, "10.120.0.0/16")
    # Endpoints of other services, and STS in another region, do not count.
    ec2.create_vpc_endpoint(
        VpcId=vpc_id,
        VpcEndpointType="Interface",
        ServiceName=f"com.amazonaws.{REGION}.ssm",
        SubnetIds=subnets,
    )
    west = boto3.client("ec2", region_name="us-west-2", endpoint_url=url)
    west_vpc, west_subnets = _vpc_in(west, "us-west-2")
    west.create_vpc_endpoint(
        VpcId=west_vpc,
        VpcEndpointType="Interface",
        ServiceName="com.amazonaws.us-west-2.sts",
        SubnetIds=west_subnets,
    )
    result = confirm_vpc_endpoints(REGION, vpc_id, {REGIONAL: []}, endpoint_url=url)
    assert result.error is None
    assert result.endpoints == ()
    assert result.confirmed == {REGIONAL: False}
    assert STS_SERVICE in _only_finding(result, "VPCE_NOT_FOUND", "warning").message


def _vpc_in(client: Any, region: str) -> tuple[str, list[str]]:
    vpc_id = client.create_vpc(CidrBlock="10.60.0.0/16")["Vpc"]["VpcId"]
    subnet = client.create_subnet(
        VpcId=vpc_id, CidrBlock="10.60.0.0/20", AvailabilityZone=f"{region}a"
    )["Subnet"]["SubnetId"]
    return vpc_id, [subnet]


def test_endpoints_only_elsewhere_and_unused_is_not_found_for_this_vpc(ec2: Any, url: str) -> None:
    other = _scene(ec2, "10.50.0.0/16")
    this_vpc, _ = _vpc(ec2, "10.120.0.0/16")
    result = confirm_vpc_endpoints(REGION, this_vpc, {REGIONAL: []}, endpoint_url=url)
    assert [r.id for r in result.endpoints] == [other.endpoint_id]
    assert _codes(result) == ["VPCE_NOT_FOUND"]
    assert this_vpc in result.findings[0].message


def test_deleted_endpoint_is_not_available_and_cannot_confirm(ec2: Any, url: str) -> None:
    scene = _scene(ec2)
    ec2.delete_vpc_endpoints(VpcEndpointIds=[scene.endpoint_id])
    result = confirm_vpc_endpoints(
        REGION, scene.vpc_id, {REGIONAL: scene.addresses}, endpoint_url=url
    )
    assert result.error is None
    (rec,) = result.endpoints
    # moto keeps the ENI ids on the record but has removed the interfaces.
    assert rec.state == "deleted"
    assert rec.network_interface_ids == scene.eni_ids
    assert rec.addresses == ()
    assert result.confirmed == {REGIONAL: False}
    assert sorted(_codes(result)) == ["VPCE_ADDRESS_UNKNOWN", "VPCE_NOT_AVAILABLE"]
    unknown = next(f for f in result.findings if f.code == "VPCE_ADDRESS_UNKNOWN")
    assert scene.endpoint_id in unknown.message  # says which endpoint it could not see into


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_unreachable_api_is_an_error_not_an_exception(url: str) -> None:
    dead = f"http://127.0.0.1:{_closed_port()}"
    result = confirm_vpc_endpoints(REGION, "vpc-1", {REGIONAL: ["10.120.1.1"]}, endpoint_url=dead)
    assert result.error is not None and result.error.startswith("cannot reach the EC2 API")
    assert "\n" not in result.error
    assert result.confirmed == {REGIONAL: False}
    assert result.endpoints == () and result.findings == ()


def test_missing_credentials_is_an_error(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    result = confirm_vpc_endpoints(REGION, None, {}, endpoint_url=url)
    assert result.error == "no AWS credentials found for the EC2 API"


def test_a_failing_credential_helper_is_named_not_quoted(
    url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """botocore's error quotes the helper's stderr, which may hold a token."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    config = tmp_path / "aws-config"
    helper = '/bin/sh -c "echo token=SECRETLEAK123 >&2; exit 1"'
    config.write_text(f"[default]\ncredential_process = {helper}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    result = confirm_vpc_endpoints(REGION, None, {}, endpoint_url=url)
    assert result.error is not None and "SECRETLEAK123" not in result.error
    assert result.error.endswith("CredentialRetrievalError (provider custom-process)")


@pytest.mark.parametrize("region", ["", "sts.us-east-2", "US-EAST-2", "us-east"])
def test_bad_region_is_an_error_naming_it(region: str) -> None:
    result = confirm_vpc_endpoints(region, None, {REGIONAL: ["10.0.0.1"]})
    assert result.error == f"invalid region {region!r}"
    assert result.confirmed == {REGIONAL: False}


@pytest.fixture
def auditor(ec2: Any, url: str) -> Iterator[Any]:
    """Turn on moto's IAM enforcement; yields a function making a user with given actions."""

    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=url)

    def make(*actions: str) -> tuple[str, str]:
        name = f"auditor{len(actions)}"
        iam.create_user(UserName=name)
        statement = [{"Effect": "Allow", "Action": list(actions), "Resource": "*"}]
        iam.put_user_policy(
            UserName=name,
            PolicyName="audit",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statement}),
        )
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    try:
        yield make
    finally:
        _moto_api(url, "/moto-api/reset-auth", b"inf")


def _as(url: str, key: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key[1])
    _moto_api(url, "/moto-api/reset-auth", b"0")


def test_denied_describe_endpoints_is_not_permitted(
    ec2: Any, url: str, auditor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    scene = _scene(ec2)
    _as(url, auditor("ec2:DescribeSubnets"), monkeypatch)
    result = confirm_vpc_endpoints(
        REGION, scene.vpc_id, {REGIONAL: scene.addresses}, endpoint_url=url
    )
    assert result.error == NOT_PERMITTED
    assert result.endpoints == () and result.confirmed == {REGIONAL: False}


def test_denied_network_interfaces_keeps_what_is_known(
    ec2: Any, url: str, auditor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    scene = _scene(ec2, private_dns=False)
    _as(url, auditor("ec2:DescribeVpcEndpoints"), monkeypatch)
    result = confirm_vpc_endpoints(
        REGION, scene.vpc_id, {REGIONAL: scene.addresses}, endpoint_url=url
    )
    assert result.error == NOT_PERMITTED
    (rec,) = result.endpoints
    assert rec.id == scene.endpoint_id and rec.addresses == ()
    assert result.confirmed == {REGIONAL: False}
    assert _codes(result) == ["VPCE_PRIVATE_DNS_DISABLED"]


def test_permitted_auditor_confirms(
    ec2: Any, url: str, auditor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    scene = _scene(ec2)
    _as(url, auditor("ec2:DescribeVpcEndpoints", "ec2:DescribeNetworkInterfaces"), monkeypatch)
    result = confirm_vpc_endpoints(
        REGION, scene.vpc_id, {REGIONAL: scene.addresses}, endpoint_url=url
    )
    assert result.error is None
    assert result.confirmed == {REGIONAL: True}


def test_unknown_credentials_are_rejected(
    ec2: Any, url: str, auditor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _as(url, ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"), monkeypatch)
    result = confirm_vpc_endpoints(REGION, None, {}, endpoint_url=url)
    assert result.error == "credentials rejected by the EC2 API (AuthFailure)"


def test_each_eni_address_carries_the_az_ec2_reports(ec2: Any, url: str) -> None:
    scene = _scene(ec2)
    enis = ec2.describe_network_interfaces(NetworkInterfaceIds=list(scene.eni_ids))
    want = {e["PrivateIpAddress"]: e["AvailabilityZone"] for e in enis["NetworkInterfaces"]}
    assert set(want.values()) == {f"{REGION}a", f"{REGION}b"}
    result = confirm_vpc_endpoints(
        REGION, scene.vpc_id, {REGIONAL: scene.addresses}, endpoint_url=url
    )
    (rec,) = result.endpoints
    assert dict(rec.zones) == want


def _audited(url: str, monkeypatch: pytest.MonkeyPatch, scene: Scene, imds: ImdsInfo) -> Report:
    """A round whose Amazon DNS answered with the scene's ENIs, after the EC2 audit."""
    from agent.audit.host import HostAudits
    from agent.config import Settings
    from tests.support.minimal_rounds import AMAZON_DNS, endpoint, lookup, report

    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    # classed against the test VPC 127.10/16 these are "private": endpoint ENIs all the same
    ep = endpoint(lookups=(lookup(AMAZON_DNS, REGIONAL, *scene.addresses),), expected="private")
    before = report(ep, imds=imds)
    assert before.eni_zones == {} and before.eni_zone_ids == {}
    settings = Settings(audit_vpc_endpoints=True, audit_connections=False)
    return HostAudits().apply(settings, before)


def test_the_audit_fills_in_eni_zones_and_judges_the_hosts_az(
    ec2: Any, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No zonal names configured: the EC2 API alone says where the ENIs are."""
    from dataclasses import replace

    scene = _scene(ec2)
    imds = ImdsInfo(True, region=REGION, availability_zone=f"{REGION}c", vpc_id=scene.vpc_id)
    after = _audited(url, monkeypatch, scene, imds)
    assert set(after.eni_zones.values()) == {f"{REGION}a", f"{REGION}b"}
    assert [f.code for f in after.findings].count("ENDPOINT_NO_LOCAL_AZ_ENI") == 1
    # the host moves to an AZ the endpoint spans: the finding goes
    inside = _audited(url, monkeypatch, scene, replace(imds, availability_zone=f"{REGION}a"))
    assert "ENDPOINT_NO_LOCAL_AZ_ENI" not in [f.code for f in inside.findings]


def test_api_zones_come_from_the_hosts_vpc_only() -> None:
    """Another VPC may reuse this VPC's CIDR: its ENI at the same IP says nothing here."""
    from agent.audit.host import _with_api_zones
    from agent.audit.vpc_endpoints import VpceConfirmation, VpceRecord
    from agent.results import ImdsInfo
    from tests.support.minimal_rounds import AMAZON_DNS, endpoint, lookup, report

    ip = "10.120.128.4"
    ep = endpoint(lookups=(lookup(AMAZON_DNS, REGIONAL, ip),), expected="private")
    imds = ImdsInfo(True, region=REGION, availability_zone=f"{REGION}a", vpc_id="vpc-here")
    records = tuple(
        VpceRecord(f"vpce-{n}", vpc, "available", True, addresses=(ip,), zones=((ip, az),))
        for n, (vpc, az) in enumerate((("vpc-here", f"{REGION}a"), ("vpc-other", f"{REGION}c")))
    )
    after = _with_api_zones(report(ep, imds=imds), VpceConfirmation(endpoints=records))
    assert after.eni_zones == {ip: f"{REGION}a"}
    assert "ENDPOINT_NO_LOCAL_AZ_ENI" not in [f.code for f in after.findings]


def test_each_eni_address_carries_the_az_id_of_its_subnet(ec2: Any, url: str) -> None:
    scene = _scene(ec2)
    enis = ec2.describe_network_interfaces(NetworkInterfaceIds=list(scene.eni_ids))
    subnets = {s["SubnetId"]: s["AvailabilityZoneId"] for s in ec2.describe_subnets()["Subnets"]}
    want = {e["PrivateIpAddress"]: subnets[e["SubnetId"]] for e in enis["NetworkInterfaces"]}
    assert len(set(want.values())) == 2 and all(want.values())
    result = confirm_vpc_endpoints(
        REGION, scene.vpc_id, {REGIONAL: scene.addresses}, endpoint_url=url
    )
    (rec,) = result.endpoints
    assert dict(rec.zone_ids) == want


def test_the_hosts_az_is_judged_by_id_when_both_sides_have_one(
    ec2: Any, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AZ names are shuffled per account: the same physical AZ may be named otherwise here."""
    from dataclasses import replace

    scene = _scene(ec2)
    subnets = ec2.describe_subnets()["Subnets"]
    zone_id = {s["AvailabilityZone"]: s["AvailabilityZoneId"] for s in subnets}
    # named 2c in this account, but physically the AZ the ENI named 2a is in
    imds = ImdsInfo(
        True,
        region=REGION,
        availability_zone=f"{REGION}c",
        availability_zone_id=zone_id[f"{REGION}a"],
        vpc_id=scene.vpc_id,
    )
    same = _audited(url, monkeypatch, scene, imds)
    assert set(same.eni_zone_ids.values()) == {zone_id[f"{REGION}a"], zone_id[f"{REGION}b"]}
    assert "ENDPOINT_NO_LOCAL_AZ_ENI" not in [f.code for f in same.findings]
    # named 2a like an ENI's AZ, but its ID is one no ENI has: the names mislead
    elsewhere = replace(imds, availability_zone=f"{REGION}a", availability_zone_id="use2-az9")
    far = _audited(url, monkeypatch, scene, elsewhere)
    (f,) = [f for f in far.findings if f.code == "ENDPOINT_NO_LOCAL_AZ_ENI"]
    # the message shows the IDs that decided, or it would read "ENIs in 2a, none in 2a"
    for name in ("a", "b"):
        assert f"{REGION}{name} ({zone_id[f'{REGION}{name}']})" in f.message
    assert f"this host's AZ {REGION}a (use2-az9)" in f.message
