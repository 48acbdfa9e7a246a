"""IMDSv2 discovery against a real token-enforcing IMDS server on loopback."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import botocore.session
import pytest

from agent.discovery.imds import discover
from agent.simulate.imds_server import ImdsServer

ENABLED: dict[str, str] = {}  # an environment without AWS_EC2_METADATA_DISABLED


@pytest.fixture
def imds() -> Iterator[ImdsServer]:
    with ImdsServer(vpc_cidrs=("10.120.0.0/16", "100.64.0.0/20")) as server:
        yield server


def _addr(server: ImdsServer) -> str:
    return f"127.0.0.1:{server.port}"


def _raw(server: ImdsServer, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def test_happy_path_returns_every_field_and_uses_a_token(imds: ImdsServer) -> None:
    info = discover(_addr(imds), timeout=5, environ=ENABLED)
    assert info.available and info.reason is None, info.detail
    assert info.region == "us-east-2"
    assert info.availability_zone == "us-east-2a"
    assert info.availability_zone_id == imds.az_id == "use2-az1"
    assert info.instance_id == "i-0123456789abcdef0"
    assert info.vpc_id == imds.vpc_id
    assert info.subnet_id == imds.subnet_id
    assert info.vpc_cidrs == ("10.120.0.0/16", "100.64.0.0/20")
    assert info.detail == ""
    assert imds.token_requests == 1
    assert imds.requests > imds.token_requests  # every GET carried the token (else 401 above)


def test_ipv6_cidrs_are_included_after_ipv4() -> None:
    with ImdsServer(vpc_ipv6_cidrs=("2600:1f16:abc:de00::/56",)) as server:
        info = discover(_addr(server), timeout=5, environ=ENABLED)
    assert info.vpc_cidrs == ("10.120.0.0/16", "2600:1f16:abc:de00::/56")


def test_server_enforces_tokens_like_ec2(imds: ImdsServer) -> None:
    assert _raw(imds, "GET", "/latest/meta-data/placement/region", {})[0] == 401
    bad = {"X-aws-ec2-metadata-token": "made-up"}
    assert _raw(imds, "GET", "/latest/meta-data/placement/region", bad)[0] == 401
    assert _raw(imds, "PUT", "/latest/api/token", {})[0] == 400
    ttl = "X-aws-ec2-metadata-token-ttl-seconds"
    assert _raw(imds, "PUT", "/latest/api/token", {ttl: "21601"})[0] == 400
    proxied = {ttl: "60", "X-Forwarded-For": "10.0.0.9"}
    assert _raw(imds, "PUT", "/latest/api/token", proxied)[0] == 403
    status, token = _raw(imds, "PUT", "/latest/api/token", {ttl: "60"})
    assert status == 200
    good = {"X-aws-ec2-metadata-token": token}
    assert _raw(imds, "GET", "/latest/meta-data/placement/region", good) == (200, "us-east-2")
    assert _raw(imds, "GET", "/latest/meta-data/no-such-thing", good)[0] == 404


def test_disabled_by_environment_sends_nothing(imds: ImdsServer) -> None:
    info = discover(_addr(imds), environ={"AWS_EC2_METADATA_DISABLED": "TRUE"})
    assert not info.available
    assert info.reason == "disabled"
    assert imds.requests == 0


def test_timeout_explains_the_hop_limit(imds: ImdsServer) -> None:
    imds.fault = "timeout"
    info = discover(_addr(imds), timeout=0.3, environ=ENABLED)
    assert not info.available
    assert info.reason == "timeout"
    assert "hop limit" in info.detail and "HttpPutResponseHopLimit" in info.detail
    assert "2" in info.detail
    assert info.region is None
    assert imds.requests == 1  # one budget, no retries


def test_unauthorized(imds: ImdsServer) -> None:
    ttl = {"X-aws-ec2-metadata-token-ttl-seconds": "60"}
    token = {"X-aws-ec2-metadata-token": _raw(imds, "PUT", "/latest/api/token", ttl)[1]}
    imds.fault = "unauthorized"
    assert _raw(imds, "GET", "/latest/meta-data/placement/region", token)[0] == 401
    info = discover(_addr(imds), timeout=5, environ=ENABLED)
    assert (info.available, info.reason) == (False, "unauthorized")
    assert "401" in info.detail


def test_forbidden_token_endpoint(imds: ImdsServer) -> None:
    imds.fault = "token_forbidden"
    info = discover(_addr(imds), timeout=5, environ=ENABLED)
    assert (info.available, info.reason) == (False, "forbidden")
    assert "403" in info.detail
    assert imds.token_requests == 1 and imds.requests == 1


def test_garbage_cidrs_keep_the_region_and_name_the_junk(imds: ImdsServer) -> None:
    imds.fault = "garbage_cidrs"
    info = discover(_addr(imds), timeout=5, environ=ENABLED)
    assert info.available
    assert info.reason == "malformed"
    assert info.region == "us-east-2" and info.vpc_id == imds.vpc_id
    assert info.vpc_cidrs == ()
    assert "not-a-cidr" in info.detail and "300.1.2.3/99" in info.detail


def test_some_bad_cidrs_are_dropped_and_reported() -> None:
    # host bits set (strict parsing) and a v6 block in the v4 document are both rejected
    cidrs = ("10.120.0.0/16", "10.121.0.1/16", "2600:1f16::/56")
    with ImdsServer(vpc_cidrs=cidrs) as server:
        info = discover(_addr(server), timeout=5, environ=ENABLED)
    assert info.available and info.reason is None
    assert info.vpc_cidrs == ("10.120.0.0/16",)
    assert "10.121.0.1/16" in info.detail and "2600:1f16::/56" in info.detail


def test_an_imds_without_the_az_id_leaves_it_unknown_and_the_rest_intact() -> None:
    with ImdsServer(az_id="") as server:  # an empty document is no AZ ID
        info = discover(_addr(server), timeout=5, environ=ENABLED)
    assert info.available and info.reason is None, info.detail
    assert info.availability_zone == "us-east-2a" and info.availability_zone_id is None


def test_later_failure_keeps_what_was_learned() -> None:
    with ImdsServer(mac="not-a-mac") as server:
        info = discover(_addr(server), timeout=5, environ=ENABLED)
    assert info.available and info.reason == "malformed"
    assert (info.region, info.instance_id) == ("us-east-2", "i-0123456789abcdef0")
    assert info.vpc_id is None and info.vpc_cidrs == ()
    assert "not-a-mac" in info.detail


def test_expired_token_is_refused(imds: ImdsServer) -> None:
    ttl = {"X-aws-ec2-metadata-token-ttl-seconds": "1"}
    token = {"X-aws-ec2-metadata-token": _raw(imds, "PUT", "/latest/api/token", ttl)[1]}
    assert _raw(imds, "GET", "/latest/meta-data/instance-id", token)[0] == 200
    time.sleep(1.1)
    assert _raw(imds, "GET", "/latest/meta-data/instance-id", token)[0] == 401


def test_connection_refused_is_a_network_failure() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    info = discover(f"127.0.0.1:{port}", timeout=2, environ=ENABLED)
    assert (info.available, info.reason) == (False, "network")
    assert f"127.0.0.1:{port}" in info.detail


def test_token_never_appears_in_the_result(imds: ImdsServer) -> None:
    info = discover(_addr(imds), timeout=5, environ=ENABLED)
    tokens = list(imds._tokens)
    assert len(tokens) == 1
    assert tokens[0] not in repr(info)


@pytest.mark.parametrize("address", ["127.0.0.1:http", "127.0.0.1:0", "[::1]x", ":80", ":::80"])
def test_a_bad_address_is_refused_naming_the_setting(address: str) -> None:
    with pytest.raises(ValueError, match=r"^imds\.address: .*, got ") as err:
        discover(address, timeout=1, environ=ENABLED)
    assert repr(address) in str(err.value)


def test_botocore_credential_chain_reads_the_role_from_this_server(
    imds: ImdsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_EC2_METADATA_DISABLED",
        "HTTP_PROXY",
        "http_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", f"http://127.0.0.1:{imds.port}/")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")

    creds = botocore.session.Session().get_credentials()
    assert creds is not None
    assert creds.method == "iam-role"
    frozen = creds.get_frozen_credentials()
    assert frozen.access_key == imds.credentials["AccessKeyId"]
    assert imds.token_requests >= 1


def test_role_listing_and_credentials_document(imds: ImdsServer) -> None:
    ttl = {"X-aws-ec2-metadata-token-ttl-seconds": "60"}
    token = {"X-aws-ec2-metadata-token": _raw(imds, "PUT", "/latest/api/token", ttl)[1]}
    base = "/latest/meta-data/iam/security-credentials/"
    assert _raw(imds, "GET", base, token) == (200, "demo-instance-role")
    status, body = _raw(imds, "GET", base + "demo-instance-role", token)
    doc = json.loads(body)
    assert status == 200 and doc["Code"] == "Success"
    assert {"AccessKeyId", "SecretAccessKey", "Token", "Expiration"} <= set(doc)
