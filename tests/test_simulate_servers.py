"""The simulated CA, DNS and STS servers, checked with real clients over loopback.

The demo and the fault-matrix tests trust these servers to misbehave exactly as named;
a fault that silently does nothing would make every downstream test pass for nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import ipaddress
import re
import socket
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import botocore.parsers
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest
from cryptography import x509

from agent.simulate.ca import Authority
from agent.simulate.dns_server import DnsServer
from agent.simulate.sts_server import HUGE_BODY_BYTES, NAMESPACE, StsServer

REGIONAL = "sts.us-east-1.amazonaws.com"
GLOBAL = "sts.amazonaws.com"
VPCE = "vpce-0a1b2c3d4e5f60718-abcdefgh.sts.us-east-1.vpce.amazonaws.com"
NS = {"sts": NAMESPACE}
BODY = "Action=GetCallerIdentity&Version=2011-06-15"
FAKE_AUTH = (
    "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20250101/us-east-1/sts/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb"
)
FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}


# -- certificate authority ----------------------------------------------------
@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority.create(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def leaf(authority: Authority) -> tuple[Path, Path]:
    return authority.issue([REGIONAL, "localhost"], ["127.0.0.1"], name="sts")


def test_leaf_carries_requested_names_and_is_signed_by_the_ca(
    authority: Authority, leaf: tuple[Path, Path]
) -> None:
    cert = x509.load_pem_x509_certificate(leaf[0].read_bytes())
    ca = x509.load_pem_x509_certificate(authority.ca_path.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [REGIONAL, "localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    cert.verify_directly_issued_by(ca)
    assert cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=29)
    assert b"PRIVATE KEY" in leaf[1].read_bytes()


def test_expired_leaf_ended_in_the_past(authority: Authority) -> None:
    cert_path, _ = authority.issue([REGIONAL], name="old", expired=True)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert.not_valid_after_utc < dt.datetime.now(dt.UTC)


def test_issue_rejects_a_name_that_is_not_a_file_stem(authority: Authority) -> None:
    with pytest.raises(ValueError, match=re.escape("name '../x'")):
        authority.issue([REGIONAL], name="../x")


# -- DNS ----------------------------------------------------------------------
@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer(ttl=30) as server:
        yield server


def ask(
    server: DnsServer, name: str, rdtype: str = "A", transport: str = "udp", timeout: float = 2.0
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    send = dns.query.udp if transport == "udp" else dns.query.tcp
    return send(query, server.address, port=server.port, timeout=timeout)


def addresses(message: dns.message.Message) -> set[str]:
    return {
        rr.to_text()
        for rrset in message.answer
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
        for rr in rrset
    }


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_dns_answers_a_and_aaaa_authoritatively(dns_server: DnsServer, transport: str) -> None:
    dns_server.set_records(REGIONAL, ["10.120.138.148", "10.120.139.20", "fd00:ec2::10"])
    a = ask(dns_server, REGIONAL, "A", transport)
    aaaa = ask(dns_server, REGIONAL, "AAAA", transport)
    assert addresses(a) == {"10.120.138.148", "10.120.139.20"}
    assert addresses(aaaa) == {"fd00:ec2::10"}
    assert a.flags & dns.flags.AA
    assert a.answer[0].ttl == 30


def test_dns_set_records_replaces_and_clear_forgets(dns_server: DnsServer) -> None:
    dns_server.set_records(REGIONAL, ["10.0.0.1"])
    dns_server.set_records(REGIONAL, ["54.239.29.25"])
    assert addresses(ask(dns_server, REGIONAL)) == {"54.239.29.25"}
    dns_server.clear(REGIONAL)
    assert ask(dns_server, REGIONAL).rcode() == dns.rcode.NXDOMAIN


def test_dns_unknown_name_is_nxdomain_and_missing_type_is_nodata(dns_server: DnsServer) -> None:
    dns_server.set_records(REGIONAL, ["10.0.0.1"])
    assert ask(dns_server, "sts.eu-west-1.amazonaws.com").rcode() == dns.rcode.NXDOMAIN
    nodata = ask(dns_server, REGIONAL, "AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR
    assert nodata.answer == []


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_dns_cname_chain_then_target_records(dns_server: DnsServer, transport: str) -> None:
    dns_server.set_cname(GLOBAL, REGIONAL)
    dns_server.set_cname(REGIONAL, VPCE)
    dns_server.set_records(VPCE, ["10.120.138.148"])
    reply = ask(dns_server, GLOBAL, "A", transport)
    chain = [(rrset.name.to_text(), rrset.rdtype) for rrset in reply.answer]
    assert chain == [
        (GLOBAL + ".", dns.rdatatype.CNAME),
        (REGIONAL + ".", dns.rdatatype.CNAME),
        (VPCE + ".", dns.rdatatype.A),
    ]
    only_cname = ask(dns_server, GLOBAL, "CNAME", transport)
    assert [rr.to_text() for rr in only_cname.answer[0]] == [REGIONAL + "."]
    assert len(only_cname.answer) == 1


def test_dns_stub_resolver_follows_the_chain(dns_server: DnsServer) -> None:
    dns_server.set_cname(REGIONAL, VPCE)
    dns_server.set_records(VPCE, ["10.120.138.148"])
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns_server.address]
    resolver.port = dns_server.port
    answer = resolver.resolve(REGIONAL, "A", lifetime=3)
    assert answer.canonical_name.to_text() == VPCE + "."
    assert {rr.to_text() for rr in answer} == {"10.120.138.148"}


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize(
    ("fault", "rcode"),
    [
        ("servfail", dns.rcode.SERVFAIL),
        ("nxdomain", dns.rcode.NXDOMAIN),
        ("refused", dns.rcode.REFUSED),
    ],
)
def test_dns_rcode_faults(dns_server: DnsServer, fault: str, rcode: int, transport: str) -> None:
    dns_server.set_records(REGIONAL, ["10.0.0.1"])
    dns_server.fault = fault
    reply = ask(dns_server, REGIONAL, "A", transport)
    assert reply.rcode() == rcode
    assert reply.answer == []


def test_dns_truncate_sets_tc_on_udp_and_answers_in_full_on_tcp(dns_server: DnsServer) -> None:
    dns_server.set_records(REGIONAL, ["10.0.0.1"])
    dns_server.fault = "truncate"
    udp = ask(dns_server, REGIONAL, "A", "udp")
    assert udp.flags & dns.flags.TC
    assert udp.answer == []
    assert addresses(ask(dns_server, REGIONAL, "A", "tcp")) == {"10.0.0.1"}
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns_server.address]
    resolver.port = dns_server.port
    before = dns_server.queries
    assert {rr.to_text() for rr in resolver.resolve(REGIONAL, "A", lifetime=3)} == {"10.0.0.1"}
    assert dns_server.queries - before == 2  # the truncated UDP try, then the TCP retry


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_dns_garbage_cannot_be_parsed(dns_server: DnsServer, transport: str) -> None:
    dns_server.set_records(REGIONAL, ["10.0.0.1"])
    dns_server.fault = "garbage"
    with pytest.raises(dns.exception.FormError):
        ask(dns_server, REGIONAL, "A", transport)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_dns_timeout_fault_receives_but_never_answers(
    dns_server: DnsServer, transport: str
) -> None:
    dns_server.set_records(REGIONAL, ["10.0.0.1"])
    dns_server.fault = "timeout"
    with pytest.raises(dns.exception.Timeout):
        ask(dns_server, REGIONAL, "A", transport, timeout=0.3)
    assert dns_server.queries == 1
    dns_server.fault = None
    assert addresses(ask(dns_server, REGIONAL, "A", transport)) == {"10.0.0.1"}


def test_dns_delay_holds_the_answer_back(dns_server: DnsServer) -> None:
    dns_server.set_records(REGIONAL, ["10.0.0.1"])
    dns_server.delay = 1.0
    with pytest.raises(dns.exception.Timeout):
        ask(dns_server, REGIONAL, timeout=0.2)
    assert addresses(ask(dns_server, REGIONAL, timeout=5)) == {"10.0.0.1"}


def test_dns_serves_on_ipv6_loopback() -> None:
    with DnsServer("::1") as server:
        server.set_records(REGIONAL, ["fd00:ec2::10"])
        assert addresses(ask(server, REGIONAL, "AAAA", "udp")) == {"fd00:ec2::10"}
        assert addresses(ask(server, REGIONAL, "AAAA", "tcp")) == {"fd00:ec2::10"}


def test_dns_rejects_bad_input_naming_the_value() -> None:
    server = DnsServer()
    with pytest.raises(ValueError, match=re.escape("'10.0.0.300'")):
        server.set_records(REGIONAL, ["10.0.0.300"])
    with pytest.raises(ValueError, match="'slow'"):
        server.fault = "slow"
    with pytest.raises(ValueError, match=re.escape("'a..b'")):
        server.set_cname("a..b", REGIONAL)


# -- STS over raw TLS / http.client ----------------------------------------------------
@pytest.fixture
def sts(leaf: tuple[Path, Path]) -> Iterator[StsServer]:
    with StsServer("127.0.0.1", 0, *leaf) as server:
        yield server


@pytest.fixture(scope="module")
def tls(authority: Authority) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(authority.ca_path))


def post(
    server: StsServer,
    tls: ssl.SSLContext,
    headers: dict[str, str],
    body: str = BODY,
) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=tls, timeout=5)
    conn.request("POST", "/", body=body, headers={**FORM, **headers})
    response = conn.getresponse()
    return response, response.read()


def raw_request(
    server: StsServer, tls: ssl.SSLContext, timeout: float = 5.0, hostname: str = REGIONAL
) -> ssl.SSLSocket:
    """Handshake and send a request by hand, so each phase's failure is visible."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    conn = tls.wrap_socket(sock, server_hostname=hostname, suppress_ragged_eofs=False)
    conn.sendall(
        f"POST / HTTP/1.1\r\nHost: {hostname}\r\nAuthorization: {FAKE_AUTH}\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n{BODY}".encode()
    )
    return conn


def error_code(body: bytes) -> str:
    root = ET.fromstring(body)
    assert root.tag == f"{{{NAMESPACE}}}ErrorResponse"
    assert root.findtext("sts:Error/sts:Type", namespaces=NS) == "Sender"
    assert root.findtext("sts:Error/sts:Message", namespaces=NS)
    assert root.findtext("sts:RequestId", namespaces=NS)
    return root.findtext("sts:Error/sts:Code", namespaces=NS) or ""


def test_sts_answers_get_caller_identity(sts: StsServer, tls: ssl.SSLContext) -> None:
    response, body = post(sts, tls, {"Authorization": FAKE_AUTH})
    assert response.status == 200
    assert response.getheader("Content-Type") == "text/xml"
    assert response.getheader("Connection") == "close"
    assert int(response.getheader("Content-Length") or -1) == len(body)
    root = ET.fromstring(body)
    assert root.tag == f"{{{NAMESPACE}}}GetCallerIdentityResponse"
    result = "sts:GetCallerIdentityResult/sts:"
    assert root.findtext(result + "Account", namespaces=NS) == "123456789012"
    assert root.findtext(result + "Arn", namespaces=NS) == sts.arn
    assert (root.findtext(result + "UserId", namespaces=NS) or "").endswith(":i-0123456789abcdef0")
    request_id = root.findtext("sts:ResponseMetadata/sts:RequestId", namespaces=NS)
    assert request_id == response.getheader("x-amzn-RequestId")


def test_sts_without_authorization_is_403(sts: StsServer, tls: ssl.SSLContext) -> None:
    response, body = post(sts, tls, {})
    assert response.status == 403
    assert error_code(body) == "MissingAuthenticationToken"


def test_sts_other_action_is_400(sts: StsServer, tls: ssl.SSLContext) -> None:
    response, body = post(
        sts, tls, {"Authorization": FAKE_AUTH}, "Action=AssumeRole&Version=2011-06-15"
    )
    assert response.status == 400
    assert error_code(body) == "InvalidAction"


def test_sts_request_log_never_keeps_the_signature(sts: StsServer, tls: ssl.SSLContext) -> None:
    post(sts, tls, {"Authorization": FAKE_AUTH})
    post(sts, tls, {})
    assert sts.requests == [
        {
            "method": "POST",
            "path": "/",
            "host": f"127.0.0.1:{sts.port}",
            "had_authorization": True,
            "action": "GetCallerIdentity",
        },
        {
            "method": "POST",
            "path": "/",
            "host": f"127.0.0.1:{sts.port}",
            "had_authorization": False,
            "action": "GetCallerIdentity",
        },
    ]
    assert "Signature" not in repr(sts.requests)
    assert "AKIA" not in repr(sts.requests)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("Throttling", 400),
        ("ExpiredToken", 403),
        ("InvalidClientTokenId", 403),
        ("AccessDenied", 403),
        ("SignatureDoesNotMatch", 403),
        ("RegionDisabledException", 400),
    ],
)
def test_sts_error_fault_xml(sts: StsServer, tls: ssl.SSLContext, code: str, status: int) -> None:
    sts.fault = f"error:{code}"
    response, body = post(sts, tls, {"Authorization": FAKE_AUTH})
    assert response.status == status
    assert error_code(body) == code


def test_sts_certificate_covers_only_its_names(sts: StsServer, tls: ssl.SSLContext) -> None:
    raw_request(sts, tls, hostname=REGIONAL).close()
    with pytest.raises(ssl.SSLCertVerificationError):
        raw_request(sts, tls, hostname=GLOBAL)


def test_sts_expired_certificate_fails_verification(
    authority: Authority, tls: ssl.SSLContext
) -> None:
    cert, key = authority.issue([REGIONAL], ["127.0.0.1"], name="expired", expired=True)
    with StsServer("127.0.0.1", 0, cert, key) as server:
        with pytest.raises(ssl.SSLCertVerificationError) as caught:
            raw_request(server, tls)
        assert "expired" in caught.value.verify_message


def test_sts_reset_handshake(sts: StsServer, tls: ssl.SSLContext) -> None:
    sts.fault = "reset_handshake"
    with pytest.raises(ConnectionResetError):
        raw_request(sts, tls)


def test_sts_reset_response_cuts_the_headers(sts: StsServer, tls: ssl.SSLContext) -> None:
    sts.fault = "reset_response"
    conn = raw_request(sts, tls)
    received = b""
    with pytest.raises(OSError):  # a reset, never a clean end of stream
        while chunk := conn.recv(4096):
            received += chunk
        raise AssertionError(f"clean EOF after {received!r}")
    assert b"HTTP/1.1 200 OK\r\n".startswith(received[:17])
    assert b"\r\n\r\n" not in received


def test_sts_hang_reads_the_request_then_waits_until_stop(
    sts: StsServer, tls: ssl.SSLContext
) -> None:
    sts.fault = "hang"
    conn = raw_request(sts, tls, timeout=0.5)
    with pytest.raises(TimeoutError):
        conn.recv(1)
    assert sts.requests[0]["action"] == "GetCallerIdentity"
    conn.settimeout(10)
    sts.stop()
    with contextlib.suppress(ConnectionError, ssl.SSLError):  # cut is as good as closed
        assert conn.recv(1) == b""  # whereas a TimeoutError escapes and fails the test


def test_sts_hang_accept_never_completes_tls(sts: StsServer, tls: ssl.SSLContext) -> None:
    sts.fault = "hang_accept"
    with pytest.raises(TimeoutError):
        raw_request(sts, tls, timeout=0.5)
    assert sts.requests == []


def test_sts_plain_http_breaks_tls_but_speaks_http(sts: StsServer, tls: ssl.SSLContext) -> None:
    sts.fault = "plain_http"
    with pytest.raises(ssl.SSLError):
        raw_request(sts, tls)
    conn = http.client.HTTPConnection("127.0.0.1", sts.port, timeout=5)
    conn.request("POST", "/", body=BODY, headers={**FORM, "Authorization": FAKE_AUTH})
    response = conn.getresponse()
    assert response.status == 200
    assert b"<Account>123456789012</Account>" in response.read()


def test_sts_slow_drip_sends_one_byte_at_a_time(sts: StsServer, tls: ssl.SSLContext) -> None:
    sts.fault = "slow_drip"
    conn = raw_request(sts, tls)
    pieces = [conn.recv(4096) for _ in range(3)]
    assert pieces == [b"H", b"T", b"T"]


def test_sts_handshake_delay_stalls_the_handshake_only(sts: StsServer, tls: ssl.SSLContext) -> None:
    sts.handshake_delay = 2.0
    with pytest.raises(TimeoutError):
        raw_request(sts, tls, timeout=0.5)
    assert sts.requests == []
    sts.handshake_delay = 0.2
    response, _ = post(sts, tls, {"Authorization": FAKE_AUTH})
    assert response.status == 200


def test_sts_processing_delay_stalls_after_the_request(sts: StsServer, tls: ssl.SSLContext) -> None:
    sts.processing_delay = 2.0
    conn = raw_request(sts, tls, timeout=0.5)  # the handshake is not delayed
    with pytest.raises(TimeoutError):
        conn.recv(1)
    assert len(sts.requests) == 1


class _EndTags:
    """A streaming parser target: keeps closing tags only, so 50 MiB costs no memory."""

    def __init__(self, into: list[str]) -> None:
        self.into = into

    def end(self, tag: str) -> None:
        self.into.append(tag)


def test_sts_huge_body_is_50_mib_of_well_formed_xml(sts: StsServer, tls: ssl.SSLContext) -> None:
    sts.fault = "huge_body"
    conn = http.client.HTTPSConnection("127.0.0.1", sts.port, context=tls, timeout=10)
    conn.request("POST", "/", body=BODY, headers={**FORM, "Authorization": FAKE_AUTH})
    response = conn.getresponse()
    assert response.status == 200
    assert int(response.getheader("Content-Length") or 0) == HUGE_BODY_BYTES
    ended: list[str] = []
    parser = ET.XMLParser(target=_EndTags(ended))
    total = 0
    while chunk := response.read(1 << 20):
        total += len(chunk)
        parser.feed(chunk)
    parser.close()  # raises if the document is not well formed
    assert total == HUGE_BODY_BYTES
    assert ended[-1] == f"{{{NAMESPACE}}}GetCallerIdentityResponse"
    assert f"{{{NAMESPACE}}}Account" in ended


def test_sts_rejects_bad_settings(leaf: tuple[Path, Path], tmp_path: Path) -> None:
    server = StsServer("127.0.0.1", 0, *leaf)
    with pytest.raises(ValueError, match="'teapot'"):
        server.fault = "teapot"
    with pytest.raises(ValueError, match="account '42'"):
        StsServer("127.0.0.1", 0, *leaf, account="42")
    with pytest.raises(ValueError, match=re.escape("missing.pem")):
        StsServer("127.0.0.1", 0, tmp_path / "missing.pem", leaf[1])


# -- STS through botocore -------------------------------------------------------------
def sts_client(server: StsServer, authority: Authority) -> Any:
    return boto3.client(
        "sts",
        region_name="us-east-1",
        endpoint_url=f"https://127.0.0.1:{server.port}",
        verify=str(authority.ca_path),
        aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        config=botocore.config.Config(
            retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=5
        ),
    )


def test_botocore_gets_the_identity(sts: StsServer, authority: Authority) -> None:
    identity = sts_client(sts, authority).get_caller_identity()
    assert identity["Account"] == "123456789012"
    assert identity["Arn"] == sts.arn
    assert sts.requests[-1]["had_authorization"] is True
    assert sts.requests[-1]["action"] == "GetCallerIdentity"


@pytest.mark.parametrize(
    ("fault", "code", "status"),
    [
        ("error:Throttling", "Throttling", 400),
        ("error:ExpiredToken", "ExpiredToken", 403),
        ("error:InvalidClientTokenId", "InvalidClientTokenId", 403),
        ("error:AccessDenied", "AccessDenied", 403),
        ("error:SignatureDoesNotMatch", "SignatureDoesNotMatch", 403),
        ("http_500", "500", 500),
        ("http_503", "503", 503),
    ],
)
def test_botocore_surfaces_error_codes(
    sts: StsServer, authority: Authority, fault: str, code: str, status: int
) -> None:
    sts.fault = fault
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        sts_client(sts, authority).get_caller_identity()
    assert caught.value.response["Error"]["Code"] == code
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


def test_botocore_rejects_a_malformed_answer(sts: StsServer, authority: Authority) -> None:
    sts.fault = "malformed"
    with pytest.raises(botocore.parsers.ResponseParserError):
        sts_client(sts, authority).get_caller_identity()


def test_botocore_fails_on_a_reset_response(sts: StsServer, authority: Authority) -> None:
    sts.fault = "reset_response"
    # Python's ssl reports the reset as a ragged EOF; http.client then accepts the cut
    # header block as a bodiless 200 unless the reset also discarded the bytes first.
    cut = (botocore.exceptions.ConnectionClosedError, botocore.parsers.ResponseParserError)
    with pytest.raises(cut):
        sts_client(sts, authority).get_caller_identity()
    assert len(sts.requests) == 1
