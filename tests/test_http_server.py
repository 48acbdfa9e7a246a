"""The HTTP surface against real clients: TLS, mTLS, basic auth and failure handling.

Every test runs a real server on loopback and talks to it with http.client and
ssl; certificates come from throwaway trustme CAs.
"""

from __future__ import annotations

import base64
import http.client
import logging
import os
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import trustme

from agent.surfaces.http_server import (
    HttpServer,
    ListenError,
    Request,
    Response,
    Route,
    bound_where,
    parse_listen_address,
)
from agent.surfaces.webconfig import WebConfig, WebConfigError
from agent.surfaces.webconfig_file import load_web_config
from tests.support.http_client import (
    LOOPBACK,
    PASSWORD,
    basic,
    get,
    hash_password,
    tls_config,
    write,
    write_leaf,
)


def ok_route(request: Request) -> Response:
    return Response(200, "text/plain; charset=utf-8", b"ok\n")


@pytest.fixture
def serve() -> Iterator[Callable[..., HttpServer]]:
    started: list[HttpServer] = []

    def start(
        routes: dict[str, Route] | None = None,
        config: WebConfig | None = None,
        address: str = f"{LOOPBACK}:0",
        **kwargs: Any,
    ) -> HttpServer:
        server = HttpServer(address, routes or {"/metrics": ok_route}, config, **kwargs)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# --- plain HTTP --------------------------------------------------------------


def test_plain_route_serves_body_and_content_type(serve: Callable[..., HttpServer]) -> None:
    server = serve()
    assert server.url == f"http://{LOOPBACK}:{server.port}"
    status, headers, body = get(server)
    assert (status, body) == (200, b"ok\n")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["Content-Length"] == "3"


@pytest.mark.parametrize("host", ["", "0.0.0.0", "::"])
def test_a_wildcard_bind_is_not_logged_as_loopback(host: str) -> None:
    """The log said http://127.0.0.1:9472 for the default `:9472`, which every interface
    serves: an operator checking exposure read it as loopback-only."""
    where = bound_where(host, 9472, "http://127.0.0.1:9472")
    assert where.startswith("every interface, port 9472") and "from this host" in where


def test_a_specific_bind_is_logged_as_its_url(serve: Callable[..., HttpServer]) -> None:
    server = serve({"/": lambda _: Response(200, "text/plain", b"x")})
    assert server.where == server.url == f"http://127.0.0.1:{server.port}"


def test_head_sends_headers_without_body(serve: Callable[..., HttpServer]) -> None:
    status, headers, body = get(serve(), method="HEAD")
    assert status == 200
    assert headers["Content-Length"] == "3"
    assert body == b""


def test_unknown_path_is_404_and_other_methods_are_405(serve: Callable[..., HttpServer]) -> None:
    server = serve()
    status, _, body = get(server, "/nope")
    assert status == 404
    assert body == b"Not Found\n"
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        status, headers, _ = get(server, method=method)
        assert status == 405, method
        assert headers["Allow"] == "GET, HEAD"


def test_route_sees_query_and_headers_but_never_authorization(
    serve: Callable[..., HttpServer],
) -> None:
    seen: list[Request] = []

    def echo(request: Request) -> Response:
        seen.append(request)
        return Response(200, "text/plain", b"")

    server = serve({"/probe": echo})
    status, _, _ = get(
        server,
        "/probe?target=a&target=b&flag=",
        headers={"X-Custom": "v", "Authorization": "Bearer secret"},
    )
    assert status == 200
    (request,) = seen
    assert request.path == "/probe"
    assert request.query == {"target": ["a", "b"], "flag": [""]}
    assert request.headers.get("x-custom") == "v"
    assert request.headers.get("X-CUSTOM") == "v"
    assert "authorization" not in request.headers


def test_route_exception_gives_500_and_server_keeps_serving(
    serve: Callable[..., HttpServer], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(request: Request) -> Response:
        raise RuntimeError("database on fire")

    server = serve({"/broken": broken, "/metrics": ok_route})
    with caplog.at_level(logging.ERROR, logger="agent.http"):
        status, _, body = get(server, "/broken")
    assert status == 500
    assert body == b"Internal Server Error\n"
    assert b"fire" not in body and b"Traceback" not in body
    errors = [r for r in caplog.records if r.name == "agent.http" and r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "/broken" in errors[0].getMessage() and "database on fire" in errors[0].getMessage()
    assert get(server)[0] == 200


def test_route_header_with_line_break_is_refused(serve: Callable[..., HttpServer]) -> None:
    def injecting(request: Request) -> Response:
        return Response(200, "text/plain", b"x", (("X-A", "1\r\nSet-Cookie: evil"),))

    status, headers, _ = get(serve({"/i": injecting}), "/i")
    assert status == 500
    assert "Set-Cookie" not in headers


@pytest.mark.parametrize(
    ("line", "status"),
    [(b"GET /metrics HTTP/1.1 junk", b"400"), (b"GET /metrics HTTP/9.9", b"505")],
)
def test_malformed_request_gets_plain_error(
    serve: Callable[..., HttpServer], line: bytes, status: bytes
) -> None:
    server = serve()
    with socket.create_connection((LOOPBACK, server.port), timeout=10) as raw:
        raw.sendall(line + b"\r\n\r\n")
        reply = b""
        while chunk := raw.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 " + status + b" ")
    assert b"Content-Type: text/plain" in reply
    assert b"<html" not in reply.lower()


# --- listen addresses ----------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (":9472", ("", 9472)),
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("[::1]:9472", ("::1", 9472)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_parse_listen_address(address: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(address) == expected


@pytest.mark.parametrize("address", ["9472", "::1:80", "host:99999", "[nope]:1", "h:x"])
def test_bad_listen_address_is_one_line_naming_it(address: str) -> None:
    with pytest.raises(ListenError) as err:
        HttpServer(address, {})
    assert address in str(err.value)
    assert "\n" not in str(err.value)


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as holder:
        holder.bind((LOOPBACK, 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = HttpServer(f"{LOOPBACK}:{port}", {"/metrics": ok_route})
        with pytest.raises(ListenError) as err:
            server.start()
    message = str(err.value)
    assert f"{LOOPBACK}:{port}" in message
    assert "in use" in message
    assert "\n" not in message


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_literal_address(serve: Callable[..., HttpServer]) -> None:
    server = serve(address="[::1]:0")
    assert server.url == f"http://[::1]:{server.port}"
    conn = http.client.HTTPConnection("::1", server.port, timeout=10)
    conn.request("GET", "/metrics")
    assert conn.getresponse().status == 200
    conn.close()


def test_empty_host_listens_on_every_interface(serve: Callable[..., HttpServer]) -> None:
    server = serve(address=":0")
    assert get(server)[0] == 200  # IPv4 loopback
    if socket.has_dualstack_ipv6() and _ipv6_loopback():
        conn = http.client.HTTPConnection("::1", server.port, timeout=10)
        conn.request("GET", "/metrics")
        assert conn.getresponse().status == 200
        conn.close()


def test_stop_closes_listener_and_open_connections(serve: Callable[..., HttpServer]) -> None:
    server = serve()
    port = server.port
    idle = socket.create_connection((LOOPBACK, port), timeout=10)
    assert get(server)[0] == 200  # the idle connection is accepted and waiting
    server.stop()
    assert idle.recv(1) == b""  # the server cut it instead of waiting for its timeout
    idle.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((LOOPBACK, port), timeout=10).close()


# --- basic auth ----------------------------------------------------------------


@pytest.fixture
def auth_config(tmp_path: Path) -> WebConfig:
    path = write(
        tmp_path / "web.yml",
        f"basic_auth_users:\n  prometheus: {hash_password(PASSWORD)}\n"
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
    )
    return load_web_config(str(path))


def test_basic_auth_enforced_on_every_route(
    serve: Callable[..., HttpServer], auth_config: WebConfig
) -> None:
    server = serve(config=auth_config)
    for path in ("/metrics", "/nope"):
        status, headers, _ = get(server, path)
        assert status == 401, path
        assert headers["WWW-Authenticate"] == 'Basic realm="sts-agent"'
    assert get(server, headers={"Authorization": basic("prometheus", "wrong")})[0] == 401
    assert get(server, headers={"Authorization": basic("nobody", PASSWORD)})[0] == 401
    status, _, body = get(server, headers={"Authorization": basic("prometheus", PASSWORD)})
    assert (status, body) == (200, b"ok\n")
    assert get(server, "/nope", headers={"Authorization": basic("prometheus", PASSWORD)})[0] == 404


def test_configured_headers_on_every_response(
    serve: Callable[..., HttpServer], auth_config: WebConfig
) -> None:
    server = serve(config=auth_config)
    assert get(server)[1]["X-Frame-Options"] == "deny"  # on the 401 too
    ok = get(server, headers={"Authorization": basic("prometheus", PASSWORD)})
    assert ok[0] == 200
    assert ok[1]["X-Frame-Options"] == "deny"


def test_credentials_never_logged(
    serve: Callable[..., HttpServer], auth_config: WebConfig, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(config=auth_config)
    token = basic("prometheus", PASSWORD)
    with caplog.at_level(logging.DEBUG, logger="agent.http"):
        assert get(server, headers={"Authorization": token})[0] == 200
        assert get(server, headers={"Authorization": basic("prometheus", "guess")})[0] == 401
    assert any("GET /metrics 200" in r.getMessage() for r in caplog.records)
    assert PASSWORD not in caplog.text
    assert token.split()[1] not in caplog.text
    assert "guess" not in caplog.text


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer abc",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"prometheus:" + b"x" * 100).decode(),
    ],
)
def test_malformed_authorization_is_rejected(auth_config: WebConfig, header: str | None) -> None:
    assert auth_config.check_basic_auth(header) is False


def test_logins_are_cached_and_only_new_wrong_passwords_pay_bcrypt(
    auth_config: WebConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bytes] = []
    real_checkpw = bcrypt.checkpw

    def counting_checkpw(password: bytes, hashed: bytes) -> bool:
        calls.append(password)
        return bool(real_checkpw(password, hashed))

    monkeypatch.setattr(bcrypt, "checkpw", counting_checkpw)
    good = basic("prometheus", PASSWORD)
    assert auth_config.check_basic_auth(good)
    assert auth_config.check_basic_auth(good)
    assert auth_config.check_basic_auth(good)
    assert len(calls) == 1  # later scrapes hit the cache
    # The cache must never vouch for a different password; a repeated miss is
    # refused from the failure cache, a new one pays bcrypt.
    assert not auth_config.check_basic_auth(basic("prometheus", PASSWORD + "!"))
    assert not auth_config.check_basic_auth(basic("prometheus", PASSWORD + "!"))
    assert len(calls) == 2
    assert not auth_config.check_basic_auth(basic("prometheus", PASSWORD + "?"))
    assert len(calls) == 3
    # An unknown user still costs one bcrypt, so timing does not reveal valid names.
    assert not auth_config.check_basic_auth(basic("nobody", PASSWORD))
    assert len(calls) == 4
    assert auth_config.check_basic_auth(good)  # a cached failure never blocks the right one
    assert len(calls) == 4


def test_no_users_means_no_auth() -> None:
    assert WebConfig().check_basic_auth(None) is True


# --- TLS -------------------------------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, trustme.CA]:
    """A server CA with a leaf for loopback, a client CA with one client, and a stranger."""
    server_ca, client_ca, stranger_ca = trustme.CA(), trustme.CA(), trustme.CA()
    write_leaf(server_ca, tmp_path, "server", LOOPBACK, "localhost")
    client_ca.cert_pem.write_to_path(str(tmp_path / "client-ca.crt"))
    return {"server": server_ca, "client": client_ca, "stranger": stranger_ca}


def client_context(ca: trustme.CA, cert_from: trustme.CA | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if cert_from is not None:
        cert_from.issue_cert("scraper.example").configure_cert(ctx)
    return ctx


def test_tls_serves_https_with_trusted_cert(
    serve: Callable[..., HttpServer], pki: dict[str, trustme.CA], tmp_path: Path
) -> None:
    server = serve(config=tls_config(tmp_path))
    assert server.url.startswith("https://")
    status, _, body = get(server, context=client_context(pki["server"]))
    assert (status, body) == (200, b"ok\n")
    with pytest.raises(ssl.SSLCertVerificationError):
        get(server, context=client_context(pki["stranger"]))


def test_plain_http_to_tls_port_fails_and_server_survives(
    serve: Callable[..., HttpServer], pki: dict[str, trustme.CA], tmp_path: Path
) -> None:
    server = serve(config=tls_config(tmp_path))
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        get(server)
    assert get(server, context=client_context(pki["server"]))[0] == 200


def test_min_version_tls13_refuses_tls12_client(
    serve: Callable[..., HttpServer], pki: dict[str, trustme.CA], tmp_path: Path
) -> None:
    server = serve(config=tls_config(tmp_path, "  min_version: TLS13\n"))
    old = client_context(pki["server"])
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        get(server, context=old)
    assert get(server, context=client_context(pki["server"]))[0] == 200


REQUIRE_CLIENT_CERT = (
    "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client-ca.crt\n"
)


def test_client_cert_required(
    serve: Callable[..., HttpServer], pki: dict[str, trustme.CA], tmp_path: Path
) -> None:
    served: list[str] = []

    def counted(request: Request) -> Response:
        served.append(request.path)
        return ok_route(request)

    server = serve({"/metrics": counted}, tls_config(tmp_path, REQUIRE_CLIENT_CERT))
    # TLS 1.2: the server rejects during the handshake itself.
    tls12 = client_context(pki["server"])
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection((LOOPBACK, server.port), timeout=10) as raw,
        pytest.raises(ssl.SSLError),
    ):
        tls12.wrap_socket(raw, server_hostname=LOOPBACK)
    # TLS 1.3: the client learns of the rejection on its first read.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        get(server, context=client_context(pki["server"]))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        get(server, context=client_context(pki["server"], cert_from=pki["stranger"]))
    assert served == []
    good = client_context(pki["server"], cert_from=pki["client"])
    assert get(server, context=good)[0] == 200
    assert served == ["/metrics"]


def test_verify_client_cert_if_given(
    serve: Callable[..., HttpServer], pki: dict[str, trustme.CA], tmp_path: Path
) -> None:
    extra = "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: client-ca.crt\n"
    server = serve(config=tls_config(tmp_path, extra))
    assert get(server, context=client_context(pki["server"]))[0] == 200
    assert get(server, context=client_context(pki["server"], pki["client"]))[0] == 200
    with pytest.raises((ssl.SSLError, ConnectionError)):
        get(server, context=client_context(pki["server"], cert_from=pki["stranger"]))


def test_client_allowed_sans(
    serve: Callable[..., HttpServer], pki: dict[str, trustme.CA], tmp_path: Path
) -> None:
    allowed = REQUIRE_CLIENT_CERT + "  client_allowed_sans: [scraper.example]\n"
    server = serve(config=tls_config(tmp_path, allowed))
    assert get(server, context=client_context(pki["server"], pki["client"]))[0] == 200

    other_dir = tmp_path / "other"
    other_dir.mkdir()
    for name in ("server.crt", "server.key", "client-ca.crt"):
        (other_dir / name).write_bytes((tmp_path / name).read_bytes())
    denied = REQUIRE_CLIENT_CERT + "  client_allowed_sans: [someone-else.example]\n"
    server2 = serve(config=tls_config(other_dir, denied))
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        get(server2, context=client_context(pki["server"], pki["client"]))


def test_stalled_tls_client_does_not_block_others(
    serve: Callable[..., HttpServer], pki: dict[str, trustme.CA], tmp_path: Path
) -> None:
    # A long handshake timeout: were the handshake in the accept loop, the
    # request below would wait for it and hit its own 10 s client timeout.
    server = serve(config=tls_config(tmp_path), connection_timeout=60)
    silent = socket.create_connection((LOOPBACK, server.port), timeout=10)
    partial = socket.create_connection((LOOPBACK, server.port), timeout=10)
    partial.sendall(b"\x16\x03\x01")  # the first bytes of a ClientHello, then nothing
    try:
        for _ in range(3):
            assert get(server, context=client_context(pki["server"]))[0] == 200
    finally:
        silent.close()
        partial.close()


def test_stalled_client_is_dropped_after_connection_timeout(
    serve: Callable[..., HttpServer], pki: dict[str, trustme.CA], tmp_path: Path
) -> None:
    server = serve(config=tls_config(tmp_path), connection_timeout=0.3)
    with socket.create_connection((LOOPBACK, server.port), timeout=30) as silent:
        assert silent.recv(1) == b""  # closed by the server, not by our own timeout


def test_certificate_rotation_is_picked_up_without_restart(
    serve: Callable[..., HttpServer], pki: dict[str, trustme.CA], tmp_path: Path
) -> None:
    server = serve(config=tls_config(tmp_path))
    assert get(server, context=client_context(pki["server"]))[0] == 200
    rotated_ca = trustme.CA()
    staging = tmp_path / "staging"
    write_leaf(rotated_ca, staging, "server", LOOPBACK)
    for name in ("server.crt", "server.key"):
        os.replace(staging / name, tmp_path / name)  # atomic, as cert-manager does
    assert get(server, context=client_context(rotated_ca))[0] == 200
    with pytest.raises(ssl.SSLCertVerificationError):
        get(server, context=client_context(pki["server"]))


def test_broken_rotation_keeps_serving_the_old_certificate(
    serve: Callable[..., HttpServer], pki: dict[str, trustme.CA], tmp_path: Path
) -> None:
    server = serve(config=tls_config(tmp_path))
    (tmp_path / "server.crt").write_text("not a certificate\n")
    assert get(server, context=client_context(pki["server"]))[0] == 200


# --- web config parsing ------------------------------------------------------------


def test_relative_paths_resolve_against_config_dir(
    serve: Callable[..., HttpServer],
    pki: dict[str, trustme.CA],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conf_dir = tmp_path / "etc" / "sts-agent"
    write_leaf(pki["server"], conf_dir / "tls", "server", LOOPBACK)
    path = write(
        conf_dir / "web.yml",
        "tls_server_config:\n  cert_file: tls/server.crt\n  key_file: tls/server.key\n",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_web_config(str(path))
    assert config.tls is not None
    assert config.tls.cert_file == str(conf_dir / "tls" / "server.crt")
    assert get(serve(config=config), context=client_context(pki["server"]))[0] == 200


def test_full_toolkit_example_loads(pki: dict[str, trustme.CA], tmp_path: Path) -> None:
    config = tls_config(
        tmp_path,
        REQUIRE_CLIENT_CERT
        + "  min_version: TLS12\n  max_version: TLS13\n  prefer_server_cipher_suites: true\n"
        + f"basic_auth_users:\n  alice: {hash_password('a')}\n  bob: {hash_password('b')}\n"
        + "http_server_config:\n  http2: false\n  headers:\n"
        + "    Strict-Transport-Security: max-age=31536000\n"
        + "    X-Content-Type-Options: nosniff\n",
    )
    assert config.tls is not None
    assert config.tls.verify_mode == ssl.CERT_REQUIRED
    assert config.basic_auth_users == ("alice", "bob")
    assert dict(config.headers)["X-Content-Type-Options"] == "nosniff"
    assert "$2b$" not in repr(config)  # hashes stay out of logs and tracebacks


def test_empty_file_and_empty_tls_section_mean_plain_http(tmp_path: Path) -> None:
    assert not load_web_config(str(write(tmp_path / "a.yml", ""))).tls_enabled
    assert not load_web_config(
        str(write(tmp_path / "b.yml", "tls_server_config: {}\n"))
    ).tls_enabled


@pytest.mark.parametrize(
    ("text", "field", "detail"),
    [
        ("tls_server_config:\n  cert_flie: a.pem\n", "tls_server_config.cert_flie", "cert_file"),
        ("basic_auth:\n  a: b\n", "basic_auth", "basic_auth_users"),
        ("http_server_config:\n  header: {}\n", "http_server_config.header", "unknown key"),
        (
            "tls_server_config:\n  cert_file: a.pem\n  key_file: server.key\n",
            "tls_server_config.cert_file",
            "file not found: 'a.pem'",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            "  client_auth_type: Sometimes\n",
            "tls_server_config.client_auth_type",
            "'Sometimes'",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            "  client_auth_type: RequireAnyClientCert\n",
            "tls_server_config.client_auth_type",
            "RequireAndVerifyClientCert",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            "  client_auth_type: RequireAndVerifyClientCert\n",
            "tls_server_config.client_ca_file",
            "required",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            "  client_ca_file: client-ca.crt\n",
            "tls_server_config.client_ca_file",
            "NoClientCert",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            "  min_version: TLS13\n  max_version: TLS12\n",
            "tls_server_config.min_version",
            "max_version",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            "  min_version: SSL3\n",
            "tls_server_config.min_version",
            "'SSL3'",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
            "tls_server_config.cipher_suites",
            "not supported",
        ),
        ("tls_server_config:\n  key_file: server.key\n", "tls_server_config.cert_file", "required"),
        (
            "tls_server_config:\n  cert_file: server.key\n  key_file: server.crt\n",
            "tls_server_config.cert_file",
            "cannot load",
        ),
        ("tls_server_config: [\n  cert_file: x\n", "yaml", "line"),
        ("tls_server_config: {}\ntls_server_config: {}\n", "yaml", "duplicate key"),
        ("- a\n- b\n", "(top level)", "mapping"),
        ("basic_auth_users:\n  alice: hunter2\n", "basic_auth_users.alice", "bcrypt"),
        (
            "http_server_config:\n  headers:\n    Content-Type: text/html\n",
            "http_server_config.headers.Content-Type",
            "cannot be configured",
        ),
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
            "http_server_config.headers.X-Frame-Options",
            "deny",
        ),
        ("http_server_config:\n  http2: maybe\n", "http_server_config.http2", "true or false"),
        ("rate_limit:\n  burst: 1\n", "rate_limit", "not supported"),
    ],
)
def test_web_config_errors_are_one_line_naming_file_and_field(
    pki: dict[str, trustme.CA], tmp_path: Path, text: str, field: str, detail: str
) -> None:
    path = write(tmp_path / "web.yml", text)
    with pytest.raises(WebConfigError) as err:
        load_web_config(str(path))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"web.config.file {path}: {field}: "), message
    assert detail in message
    assert err.value.field_path == field


def test_plain_password_is_not_echoed_in_error(tmp_path: Path) -> None:
    path = write(tmp_path / "web.yml", "basic_auth_users:\n  alice: hunter2\n")
    with pytest.raises(WebConfigError) as err:
        load_web_config(str(path))
    assert "hunter2" not in str(err.value)


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yml"
    with pytest.raises(WebConfigError) as err:
        load_web_config(str(missing))
    assert (
        str(err.value) == f"web.config.file {missing}: file: cannot read: No such file or directory"
    )
