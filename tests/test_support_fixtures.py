"""The real-server fixtures work end to end with real clients (dnspython, botocore, ssl)."""

from __future__ import annotations

import http.client
import re
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import dns.rcode
import dns.resolver
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, SSLError

from testbed.require import missing
from tests.support.dnsmasq import Dnsmasq
from tests.support.moto_tls import MotoStsTls

ROOT = Path(__file__).resolve().parent.parent
REGIONAL = "sts.us-east-2.amazonaws.com"
VPCE_IP = "10.120.138.148"  # data only: nothing connects to it
PUBLIC_IP = "198.51.100.27"  # data only (documentation range)
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
BODY = "Action=GetCallerIdentity&Version=2011-06-15"


def addresses(res: dns.resolver.Resolver, name: str, rdtype: str) -> set[str]:
    return {rr.to_text() for rr in res.resolve(name, rdtype)}


def sts_client(endpoint_url: str, verify: str | bool) -> Any:
    session = botocore.session.Session()
    session.set_credentials(ACCESS_KEY, SECRET_KEY)
    return session.create_client(
        "sts",
        region_name="us-east-2",
        endpoint_url=endpoint_url,
        verify=verify,
        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=10),
    )


def signed_call(address: str, port: int, sni: str, ca_path: Path) -> tuple[int, str]:
    """GetCallerIdentity to an IP, presenting `sni` as TLS name and Host, as the agent does."""
    request = AWSRequest(
        method="POST",
        url=f"https://{sni}/",
        data=BODY,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sts", "us-east-2").add_auth(request)
    ctx = ssl.create_default_context(cafile=str(ca_path))
    raw = socket.create_connection((address, port), timeout=10)
    conn = http.client.HTTPConnection(address, port, timeout=10)
    conn.sock = ctx.wrap_socket(raw, server_hostname=sni)
    try:
        headers = {k: str(v) for k, v in request.headers.items()}
        headers["Host"] = sni
        conn.request("POST", "/", body=BODY, headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def ipv6_loopback() -> str:
    """::1 when the host has IPv6 loopback; skip locally, fail in CI otherwise."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        missing("IPv6 loopback ::1")
    return "::1"


@pytest.fixture(scope="module")
def sts() -> Iterator[MotoStsTls]:
    with MotoStsTls("127.10.138.148") as server:
        yield server


# --- dnsmasq ---------------------------------------------------------------------------


def test_dnsmasq_answers_a_aaaa_and_cname_with_ttl() -> None:
    records = {REGIONAL: [VPCE_IP, "fd00:ec2::148"]}
    cnames = {"alias.example.test": REGIONAL}
    with Dnsmasq(records, cnames=cnames, listen="127.10.0.2", ttl=30) as dnsmasq:
        res = dnsmasq.resolver()
        assert addresses(res, REGIONAL, "A") == {VPCE_IP}
        assert addresses(res, REGIONAL, "AAAA") == {"fd00:ec2::148"}
        answer = res.resolve("alias.example.test", "A")
        assert answer.canonical_name.to_text() == f"{REGIONAL}."
        assert {rr.to_text() for rr in answer} == {VPCE_IP}
        assert answer.rrset is not None and answer.rrset.ttl == 30


def test_dnsmasq_flip_from_private_to_public_at_runtime() -> None:
    with Dnsmasq({REGIONAL: [VPCE_IP]}) as dnsmasq:
        res = dnsmasq.resolver()
        assert addresses(res, REGIONAL, "A") == {VPCE_IP}
        dnsmasq.set_records({REGIONAL: [PUBLIC_IP, "198.51.100.28"]})
        assert addresses(res, REGIONAL, "A") == {PUBLIC_IP, "198.51.100.28"}
        dnsmasq.set_records({REGIONAL: [VPCE_IP]})
        assert addresses(res, REGIONAL, "A") == {VPCE_IP}


def test_dnsmasq_is_authoritative_for_its_names() -> None:
    with Dnsmasq({REGIONAL: [VPCE_IP]}) as dnsmasq:
        nodata = dnsmasq.query(REGIONAL, "AAAA")
        assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
        assert dnsmasq.query(f"x.{REGIONAL}", "A").rcode() == dns.rcode.NXDOMAIN
        # With no upstream, a name it does not own is refused, as a closed resolver would.
        assert dnsmasq.query("sts.amazonaws.com", "A").rcode() == dns.rcode.REFUSED
        tcp = dnsmasq.query(REGIONAL, "A", tcp=True)
        assert [rr.to_text() for rrset in tcp.answer for rr in rrset] == [VPCE_IP]


def test_dnsmasq_forwards_to_upstreams() -> None:
    with (
        Dnsmasq({REGIONAL: [PUBLIC_IP]}, listen="127.10.0.3") as upstream,
        Dnsmasq({"sts.amazonaws.com": ["198.51.100.9"]}, listen="127.10.0.4") as other,
        Dnsmasq(
            {"local.example.test": ["127.0.0.9"]},
            upstreams=[upstream.nameserver],
            domain_upstreams={"sts.amazonaws.com": other.nameserver},
            cache_size=0,
        ) as front,
    ):
        res = front.resolver()
        assert addresses(res, REGIONAL, "A") == {PUBLIC_IP}
        assert addresses(res, "sts.amazonaws.com", "A") == {"198.51.100.9"}
        assert addresses(res, "local.example.test", "A") == {"127.0.0.9"}
        upstream.set_records({REGIONAL: ["198.51.100.77"]})
        assert addresses(res, REGIONAL, "A") == {"198.51.100.77"}


def test_dnsmasq_stops_its_process_and_removes_its_files() -> None:
    dnsmasq = Dnsmasq({REGIONAL: [VPCE_IP]}, listen=ipv6_loopback())
    with dnsmasq:
        assert addresses(dnsmasq.resolver(), REGIONAL, "A") == {VPCE_IP}
        pid_file = dnsmasq.log_path.parent / "dnsmasq.pid"
        pid = int(pid_file.read_text())
        assert Path(f"/proc/{pid}").exists()
    assert not Path(f"/proc/{pid}").exists()
    assert not pid_file.parent.exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"records": {"bad name!": ["127.0.0.1"]}}, "records: 'bad name!'"),
        ({"records": {REGIONAL: ["10.0.0.300"]}}, "'10.0.0.300' is not an IP"),
        ({"records": {REGIONAL: "10.0.0.1"}}, "must be a list"),
        ({"listen": "localhost"}, "host 'localhost'"),
        ({"upstreams": [("127.0.0.1", 0)]}, "upstreams: port 0"),
    ],
)
def test_dnsmasq_rejects_bad_input_naming_the_field(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Dnsmasq(**kwargs)  # type: ignore[arg-type]


# --- moto STS over TLS -----------------------------------------------------------------


def test_botocore_reaches_moto_by_ip_and_verifies_the_ca(sts: MotoStsTls) -> None:
    identity = sts_client(sts.url, str(sts.ca_path)).get_caller_identity()
    assert identity["Account"] == "123456789012"
    assert identity["Arn"] == "arn:aws:sts::123456789012:user/moto"


def test_botocore_refuses_a_server_its_bundle_does_not_trust(sts: MotoStsTls) -> None:
    client = sts_client(sts.url, True)  # the public bundle, which never signed this CA
    with pytest.raises(SSLError):
        client.get_caller_identity()


def test_signed_request_with_sts_sni_to_an_address(sts: MotoStsTls) -> None:
    status, body = signed_call(sts.host, sts.port, REGIONAL, sts.ca_path)
    assert status == 200
    assert "<Account>123456789012</Account>" in body
    status, body = signed_call(sts.host, sts.port, "sts.amazonaws.com", sts.ca_path)
    assert status == 200 and "<Account>123456789012</Account>" in body


def test_wrong_server_name_fails_verification(sts: MotoStsTls) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match=re.escape("evil.example.com")):
        signed_call(sts.host, sts.port, "evil.example.com", sts.ca_path)


def test_certificate_without_ip_sans_fails_by_ip_but_passes_by_name() -> None:
    with MotoStsTls("127.10.138.150", ip_sans=False) as server:
        with pytest.raises(SSLError):
            sts_client(server.url, str(server.ca_path)).get_caller_identity()
        status, _ = signed_call(server.host, server.port, REGIONAL, server.ca_path)
        assert status == 200


def test_instances_share_a_ca_and_a_port_on_different_addresses(sts: MotoStsTls) -> None:
    hosts = ["127.10.139.20", ipv6_loopback()]
    with MotoStsTls(hosts[0], ca=sts.ca) as first:
        servers = [first]
        for host in hosts[1:]:
            servers.append(MotoStsTls(host, first.port, ca=sts.ca).start())
        try:
            for server in servers:
                assert server.port == first.port
                assert server.ca_path.read_bytes() == sts.ca_path.read_bytes()
                status, body = signed_call(server.host, server.port, REGIONAL, sts.ca_path)
                assert status == 200 and "<Account>" in body
        finally:
            for server in servers[1:]:
                server.stop()


def test_enforced_auth_rejects_an_unknown_key_and_account_is_configurable() -> None:
    with MotoStsTls(enforce_auth=True, account_id="111122223333") as server:
        with pytest.raises(ClientError) as err:
            sts_client(server.url, str(server.ca_path)).get_caller_identity()
        assert err.value.response["Error"]["Code"] == "InvalidClientTokenId"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with MotoStsTls(account_id="111122223333") as server:
        status, body = signed_call(server.host, server.port, REGIONAL, server.ca_path)
        assert status == 200 and "<Account>111122223333</Account>" in body


def test_moto_tls_rejects_bad_input_naming_the_field() -> None:
    with pytest.raises(ValueError, match=re.escape("host: 'sts.amazonaws.com'")):
        MotoStsTls("sts.amazonaws.com")
    with pytest.raises(ValueError, match="account_id: '42'"):
        MotoStsTls(account_id="42")
    with pytest.raises(ValueError, match="hostnames: expected a list"):
        MotoStsTls(hostnames=REGIONAL)


# --- both together ---------------------------------------------------------------------


def test_private_dns_points_the_sts_name_at_the_tls_server(sts: MotoStsTls) -> None:
    with Dnsmasq({REGIONAL: [sts.host]}) as dnsmasq:
        (address,) = addresses(dnsmasq.resolver(), REGIONAL, "A")
        status, body = signed_call(address, sts.port, REGIONAL, sts.ca_path)
        assert address == "127.10.138.148"
        assert status == 200 and "<Account>123456789012</Account>" in body
