"""The STS probe against a real TLS server on loopback, for every outcome it can report.

The probe is the unit under test, so it runs unchanged with real sockets, real
TLS verification and real SigV4 signing; the simulated STS server misbehaves on
request so that each failure reason is produced the way the network would.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.credentials import ReadOnlyCredentials

from agent.probes import sts, wire
from agent.results import StsProbe
from agent.simulate.ca import Authority
from agent.simulate.sts_server import StsServer
from tests.support.phases import assert_phases_add_up
from tests.support.probe_faults import CREDS, GLOBAL, REGIONAL, SECRET, STS_FAULTS, StsRig
from tests.support.probe_faults import STS_TIMEOUT as TIMEOUT
from tests.support.probe_faults import probe_at as run

SESSION_CREDS = ReadOnlyCredentials("ASIAIOSFODNN7EXAMPLE", SECRET, "FwoGZXIvYXdzEXAMPLETOKEN")


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority.create(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def leaf(authority: Authority) -> tuple[Path, Path]:
    return authority.issue([REGIONAL, GLOBAL], name="sts")


@pytest.fixture(scope="module")
def context(authority: Authority) -> ssl.SSLContext:
    return sts.tls_context(str(authority.ca_path))


@pytest.fixture
def server(leaf: tuple[Path, Path]) -> Iterator[StsServer]:
    with StsServer("127.0.0.1", 0, *leaf) as s:
        yield s


@pytest.fixture
def rig(authority: Authority, context: ssl.SSLContext, server: StsServer) -> StsRig:
    return StsRig(authority, context, server)


def assert_no_secrets(p: StsProbe) -> None:
    text = repr(p)
    assert SECRET not in text
    assert "Signature=" not in text
    assert "EXAMPLETOKEN" not in text


# -- success --------------------------------------------------------------------
def test_signed_call_succeeds_with_identity_and_every_phase(
    server: StsServer, context: ssl.SSLContext
) -> None:
    p = run(server, context)
    assert p.success is True
    assert (p.reason, p.error) == (None, None)
    assert p.account == server.account
    assert p.arn == server.arn
    assert p.http_status == 200
    assert p.signed is True
    assert p.tls_version in ("TLSv1.2", "TLSv1.3")
    assert p.cert_not_after is not None and p.cert_not_after > p.started
    assert_phases_add_up(p.phases.as_dict())
    assert (p.endpoint, p.address, p.port) == (REGIONAL, "127.0.0.1", server.port)
    assert_no_secrets(p)


def test_request_is_addressed_to_the_sts_name_not_the_ip(
    server: StsServer, context: ssl.SSLContext
) -> None:
    run(server, context)
    (req,) = server.requests
    assert req == {
        "method": "POST",
        "path": "/",
        "host": f"{REGIONAL}:{server.port}",
        "had_authorization": True,
        "action": "GetCallerIdentity",
    }


def test_session_token_is_sent_and_not_reported(server: StsServer, context: ssl.SSLContext) -> None:
    p = run(server, context, credentials=SESSION_CREDS)
    assert p.success
    assert_no_secrets(p)


def test_signature_scope_is_the_endpoint_region() -> None:
    headers = sts.signed_headers(sts.Target(REGIONAL, "127.0.0.1", 443, "us-east-2"), CREDS)
    auth = headers["Authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/")
    assert "/us-east-2/sts/aws4_request" in auth
    assert headers["Host"] == REGIONAL  # no :443
    assert SECRET not in "".join(headers.values())
    glob = sts.signed_headers(sts.Target(GLOBAL, "127.0.0.1", 8443, "us-east-1"), CREDS)
    assert "/us-east-1/sts/aws4_request" in glob["Authorization"]
    assert glob["Host"] == f"{GLOBAL}:8443"


def test_unsigned_headers_have_no_authorization() -> None:
    headers = sts.signed_headers(sts.Target(REGIONAL, "127.0.0.1", 443, "us-east-2"), None)
    assert "Authorization" not in headers


def test_ipv6_address(leaf: tuple[Path, Path], context: ssl.SSLContext) -> None:
    try:
        server = StsServer("::1", 0, *leaf).start()
    except OSError:
        pytest.skip("no IPv6 loopback")
    try:
        p = run(server, context)
        assert p.success and p.address == "::1"
    finally:
        server.stop()


def test_injected_delays_land_in_their_phases_and_the_phases_still_add_up(
    server: StsServer, context: ssl.SSLContext
) -> None:
    """The first byte is timed from its arrival, yet never before the server could send it."""
    server.processing_delay = 0.05
    server.handshake_delay = 0.05
    p = run(server, context, timeout=5)
    assert p.success, p.error
    assert_phases_add_up(p.phases.as_dict())
    assert p.phases.ttfb is not None and p.phases.ttfb >= 0.05  # the server held it 50 ms


def test_reads_carry_the_kernels_arrival_time() -> None:
    """A read made well after its bytes arrived dates them back by at least that wait."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        sock = wire.StampedSocket("127.0.0.1", listener.getsockname()[1])
        try:
            sock.connect(time.perf_counter() + 5)
            peer, _ = listener.accept()
            with peer:
                # The kernel turns stamping on from a work queue: the first bytes may miss it.
                peer.sendall(b"w")
                sock.recv(time.perf_counter() + 5)
                time.sleep(0.05)
                peer.sendall(b"x")
                time.sleep(0.05)  # the byte is queued by now; the read comes 50 ms late
                before = time.perf_counter()
                data, arrived = sock.recv(time.perf_counter() + 5)
        finally:
            sock.close()
    assert data == b"x"
    assert sock.lag >= 0.05 and arrived <= before - 0.05


# -- STS errors -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "reason", "status"),
    [
        ("Throttling", "throttled", 400),
        ("ExpiredToken", "expired_token", 403),
        ("InvalidClientTokenId", "invalid_token", 403),
        ("AccessDenied", "access_denied", 403),
        ("SignatureDoesNotMatch", "signature", 403),
        ("SomethingNew", "other", 400),
    ],
)
def test_sts_error_codes_map_to_reasons(rig: StsRig, code: str, reason: str, status: int) -> None:
    p = STS_FAULTS[f"error:{code}"].provoke(rig)
    assert p.success is False
    assert p.reason == reason
    assert p.sts_error_code == code
    assert p.http_status == status
    assert p.error is not None and code in p.error
    assert p.phases.ttfb is not None  # the path worked; the answer was a refusal
    assert_phases_add_up(p.phases.as_dict())
    assert_no_secrets(p)


@pytest.mark.parametrize(("fault", "status"), [("http_503", 503), ("http_500", 500)])
def test_server_errors_are_http_5xx(rig: StsRig, fault: str, status: int) -> None:
    p = STS_FAULTS[fault].provoke(rig)
    assert (p.success, p.reason, p.http_status) == (False, "http_5xx", status)
    assert p.error == f"HTTP {status}"


def test_unsigned_on_purpose_counts_any_sts_answer_as_success(
    server: StsServer, context: ssl.SSLContext
) -> None:
    p = run(server, context, credentials=None, signed=False)
    assert p.success is True
    assert p.signed is False
    assert p.sts_error_code == "MissingAuthenticationToken"
    assert server.requests[0]["had_authorization"] is False


def test_unsigned_on_purpose_still_fails_on_5xx(server: StsServer, context: ssl.SSLContext) -> None:
    server.fault = "http_503"
    p = run(server, context, credentials=None, signed=False)
    assert (p.success, p.reason) == (False, "http_5xx")


def test_missing_credentials_still_measure_the_transport(rig: StsRig) -> None:
    p = STS_FAULTS["no_credentials"].provoke(rig)
    assert (p.success, p.reason, p.signed) == (False, "credentials_missing", False)
    assert_phases_add_up(p.phases.as_dict())
    assert rig.server.requests[0]["had_authorization"] is False


def test_missing_credentials_win_over_an_unjudgeable_body(
    server: StsServer, context: ssl.SSLContext
) -> None:
    """Without credentials no answer can be judged; the finding must name the real cause."""
    server.fault = "malformed"
    p = run(server, context, credentials=None, signed=True)
    assert (p.success, p.reason, p.http_status) == (False, "credentials_missing", 200)
    assert p.phases.ttfb is not None


# -- TLS ----------------------------------------------------------------------------
def test_certificate_for_another_name_is_a_hostname_mismatch(
    authority: Authority, context: ssl.SSLContext
) -> None:
    cert, key = authority.issue(["sts.example.org"], name="other")
    with StsServer("127.0.0.1", 0, cert, key) as other:
        for creds, signed in ((CREDS, True), (None, True), (None, False)):
            p = run(other, context, credentials=creds, signed=signed)
            assert (p.success, p.reason) == (False, "tls_hostname_mismatch")
            assert p.phases.connect is not None
            assert p.phases.tls is None and p.phases.ttfb is None
            assert REGIONAL in (p.error or "")
        assert other.requests == []  # nothing was sent to the wrong party


def test_global_name_on_a_regional_only_certificate(
    authority: Authority, context: ssl.SSLContext
) -> None:
    """What a VPC endpoint does to the global name: its certificate does not cover it."""
    cert, key = authority.issue([REGIONAL, f"*.{REGIONAL}"], name="vpce")
    with StsServer("127.0.0.1", 0, cert, key) as vpce:
        assert run(vpce, context).success
        p = sts.probe(
            sts.Target(GLOBAL, "127.0.0.1", vpce.port, "us-east-1"),
            context=context,
            credentials=CREDS,
            timeout=TIMEOUT,
        )
        assert p.reason == "tls_hostname_mismatch"


def test_untrusted_ca_is_a_tls_error(rig: StsRig) -> None:
    p = STS_FAULTS["untrusted_ca"].provoke(rig)
    assert (p.success, p.reason) == (False, "tls_error")
    assert rig.server.requests == []


def test_without_a_bundle_the_probe_trusts_what_botocore_trusts(server: StsServer) -> None:
    """botocore's bundle (certifi's, or its own), not the system store: a private CA fails."""
    from botocore.httpsession import where

    default = sts.tls_context(None)
    botocores = ssl.create_default_context(cafile=where())
    subjects = {str(c["subject"]) for c in default.get_ca_certs()}
    assert subjects == {str(c["subject"]) for c in botocores.get_ca_certs()} and subjects
    p = run(server, default)
    assert (p.success, p.reason) == (False, "tls_error")
    assert "unable to get local issuer certificate" in (p.error or ""), p.error
    assert server.requests == []


def test_expired_certificate_is_a_tls_error(rig: StsRig) -> None:
    p = STS_FAULTS["expired"].provoke(rig)
    assert (p.success, p.reason) == (False, "tls_error")
    assert "expired" in (p.error or "")


def test_certificate_expiry_is_reported(authority: Authority, context: ssl.SSLContext) -> None:
    cert, key = authority.issue([REGIONAL], name="short", valid_days=3)
    with StsServer("127.0.0.1", 0, cert, key) as short:
        p = run(short, context)
    assert p.success and p.cert_not_after is not None
    assert 2 * 86400 < p.cert_not_after - p.started < 4 * 86400


# -- transport faults ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("fault", "reason", "reached"),
    [
        ("hang_accept", "timeout", "connect"),  # TCP accepted, no TLS answer
        ("reset_handshake", "tls_error", "connect"),
        ("plain_http", "tls_error", "connect"),
        ("hang", "timeout", "sign"),  # handshake done, request signed and sent
        # A first byte that arrived is timed even when the rest never comes.
        ("slow_drip", "timeout", "ttfb"),
        ("reset_response", "connection_reset", "ttfb"),
        ("huge_body", "bad_response", "ttfb"),
        ("malformed", "bad_response", "transfer"),
        # More than 100 header lines: http.client's own limit must not escape the probe.
        ("header_flood", "bad_response", "ttfb"),
    ],
)
def test_transport_faults(rig: StsRig, fault: str, reason: str, reached: str) -> None:
    p = STS_FAULTS[fault].provoke(rig)
    assert (p.success, p.reason) == (False, reason), p.error
    if reached == "transfer":  # the whole answer was read: the phases account for total
        assert_phases_add_up(p.phases.as_dict())
    order = ["connect", "tls", "sign", "ttfb", "transfer"]
    phases = p.phases.as_dict()
    for i, name in enumerate(order):
        measured = phases[name] is not None
        assert measured == (i <= order.index(reached)), (name, phases)
    assert p.phases.total is not None
    assert p.error


def test_closed_port_is_connect_refused(rig: StsRig) -> None:
    p = STS_FAULTS["closed_port"].provoke(rig)
    assert (p.success, p.reason) == (False, "connect_refused")
    assert p.phases.connect is None and p.phases.total is not None
    assert f"127.0.0.1:{p.port}" in (p.error or "")


def test_full_accept_queue_is_connect_timeout(rig: StsRig) -> None:
    p = STS_FAULTS["full_accept_queue"].provoke(rig)
    assert (p.success, p.reason) == (False, "connect_timeout")


def test_a_passing_socket_error_does_not_turn_stamping_off() -> None:
    """Only the kernel refusing the option itself stops later sockets from asking."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.close()  # setsockopt on it now fails with EBADF, as it would with no descriptors left
    wire._stamp_reads(sock)
    assert not wire._refused
    fresh = wire.StampedSocket("127.0.0.1", 9)
    try:
        on = fresh.sock.getsockopt(socket.SOL_SOCKET, wire.SO_TIMESTAMPNS)
    finally:
        fresh.close()
    assert on == 1
