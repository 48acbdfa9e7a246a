"""An HTTPS server that answers GetCallerIdentity as AWS STS does, and fails on request.

The agent times real signed calls; to show every failure it must report (throttling,
expired tokens, resets, hangs, wrong protocol, oversized answers) on any machine, the
demo and the tests need an STS that misbehaves exactly when told to.
"""

from __future__ import annotations

import contextlib
import http
import http.client
import re
import socket
import socketserver
import ssl
import struct
import threading
import uuid
from email.utils import formatdate
from pathlib import Path
from typing import cast
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

from agent.lifecycle import Service

NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"
FAULTS = (
    "http_500",
    "http_503",
    "hang",
    "hang_accept",
    "reset_handshake",
    "reset_response",
    "slow_drip",
    "huge_body",
    "malformed",
    "plain_http",
    "header_flood",
)
HUGE_BODY_BYTES = 50 * 1024 * 1024
_ERROR_STATUS = {
    "Throttling": 400,
    "ExpiredToken": 403,
    "InvalidClientTokenId": 403,
    "AccessDenied": 403,
    "SignatureDoesNotMatch": 403,
    "MissingAuthenticationToken": 403,
}
_ERROR_MESSAGES = {
    "Throttling": "Rate exceeded",
    "ExpiredToken": "The security token included in the request is expired",
    "InvalidClientTokenId": "The security token included in the request is invalid.",
    "AccessDenied": "Not authorized to perform sts:GetCallerIdentity by the endpoint policy",
    "SignatureDoesNotMatch": "The request signature we calculated does not match "
    "the signature you provided.",
    "MissingAuthenticationToken": "Request is missing Authentication Token",
}
_IO_TIMEOUT = 10.0
_MAX_BODY = 1024 * 1024
_POLL = 0.1
_DRIP_INTERVAL = 0.5
_RESET_GRACE = 0.05
_FLOOD_HEADERS = 101
_ACCOUNT = re.compile(r"\d{12}")
_ERROR_FAULT = re.compile(r"error:[A-Za-z][A-Za-z0-9.]*")


class StsServer(Service):
    """GetCallerIdentity over TLS on one address, with switchable faults and delays."""

    def __init__(
        self,
        host: str,
        port: int,
        cert: Path,
        key: Path,
        *,
        account: str = "123456789012",
        arn: str = "arn:aws:sts::123456789012:assumed-role/demo-instance-role/i-0123456789abcdef0",
    ) -> None:
        if not _ACCOUNT.fullmatch(account):
            raise ValueError(f"StsServer: account {account!r} must be 12 digits")
        if not arn.startswith("arn:"):
            raise ValueError(f"StsServer: arn {arn!r} must start with 'arn:'")
        self.host = host
        self._want_port = port
        self.port = 0
        self.account = account
        self.arn = arn
        self.handshake_delay = 0.0
        self.processing_delay = 0.0
        self.requests: list[dict[str, object]] = []
        self._fault: str | None = None
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            self._tls.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"StsServer: cannot load cert {cert} / key {key}: {exc}") from None
        self._stopping = threading.Event()
        self._live: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._server: _Listener | None = None
        self._thread: threading.Thread | None = None

    @property
    def fault(self) -> str | None:
        return self._fault

    @fault.setter
    def fault(self, value: str | None) -> None:
        is_error = value is not None and _ERROR_FAULT.fullmatch(value) is not None
        if value is not None and value not in FAULTS and not is_error:
            raise ValueError(
                f"StsServer.fault: unknown fault {value!r} (one of {FAULTS} or 'error:<Code>')"
            )
        self._fault = value

    @property
    def user_id(self) -> str:
        """AWS puts the role id and session name here for roles, a user id otherwise."""
        if ":assumed-role/" in self.arn:
            return "AROAEXAMPLEROLEID0001:" + self.arn.rsplit("/", 1)[-1]
        return "AIDAEXAMPLEUSERID0001"

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> StsServer:
        self._stopping.clear()
        self._server = _Listener((self.host, self._want_port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(_POLL,), name=f"sts-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the port and cut every open connection, so hanging faults end too."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=1)
        with self._lock:
            live = list(self._live)
        for sock in live:
            # The base method, so an SSLSocket in use by its thread is cut, not unwrapped.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
        self._server, self._thread = None, None

    # -- one connection ------------------------------------------------------
    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._live.add(sock)
            else:
                self._live.discard(sock)

    def _serve_connection(self, raw: socket.socket) -> None:
        fault = self._fault
        self._track(raw, True)
        try:
            if fault == "hang_accept":
                self._stopping.wait()
            elif fault == "reset_handshake":
                raw.settimeout(1.0)
                raw.recv(4096)  # the ClientHello, so the reset lands mid-handshake
                _reset(raw)
            elif fault == "plain_http":
                self._serve_plain(raw)
            elif not (self.handshake_delay > 0 and self._stopping.wait(self.handshake_delay)):
                self._serve_tls(raw, fault)
        except OSError:
            pass  # the client went away or the server is stopping
        finally:
            self._track(raw, False)

    def _serve_tls(self, raw: socket.socket, fault: str | None) -> None:
        raw.settimeout(_IO_TIMEOUT)
        conn = self._tls.wrap_socket(raw, server_side=True)
        self._track(conn, True)
        try:
            self._exchange(conn, fault)
        finally:
            self._track(conn, False)
            conn.close()

    def _serve_plain(self, raw: socket.socket) -> None:
        raw.settimeout(_IO_TIMEOUT)
        first = raw.recv(1, socket.MSG_PEEK)
        if first.isalpha() and first.isupper():
            self._exchange(raw, None)
            return
        raw.recv(65536)  # drain the ClientHello so the client reads our reply, not a reset
        body = b"This port speaks plain HTTP.\n"
        raw.sendall(_head(400, "text/plain", len(body), str(uuid.uuid4())) + body)

    def _exchange(self, conn: socket.socket, fault: str | None) -> None:
        request = _read_request(conn)
        if request is None:
            return
        self.requests.append(request.summary())
        if self.processing_delay > 0 and self._stopping.wait(self.processing_delay):
            return
        if fault == "hang":
            self._stopping.wait()
            return
        request_id = str(uuid.uuid4())
        if fault == "huge_body":
            self._send_huge(conn, request_id)
            return
        status, ctype, body = self._respond(request, fault, request_id)
        data = _head(status, ctype, len(body), request_id) + body
        if fault == "header_flood":
            # More header lines than http.client accepts (100): what a broken proxy can send.
            flood = b"".join(b"X-Filler-%d: x\r\n" % i for i in range(_FLOOD_HEADERS))
            data = data.replace(b"\r\n", b"\r\n" + flood, 1)
        if fault == "reset_response":
            conn.sendall(data[: data.index(b"\r\n\r\n") // 2])
            # Let the partial headers land first, so clients see a response begin, then die.
            self._stopping.wait(_RESET_GRACE)
            _reset(conn)
        elif fault == "slow_drip":
            for i in range(len(data)):
                conn.sendall(data[i : i + 1])
                if self._stopping.wait(_DRIP_INTERVAL):
                    return
        else:
            conn.sendall(data)

    def _respond(
        self, request: _Request, fault: str | None, request_id: str
    ) -> tuple[int, str, bytes]:
        if fault is not None and fault.startswith("error:"):
            code = fault.removeprefix("error:")
            return _error(_ERROR_STATUS.get(code, 400), code, request_id)
        if fault in ("http_500", "http_503"):
            # A bare page as a load balancer or proxy sends, not STS's own XML.
            status = 500 if fault == "http_500" else 503
            page = f"<html><body><h1>{status} {http.HTTPStatus(status).phrase}</h1></body></html>\n"
            return status, "text/html", page.encode()
        if fault == "malformed":
            return 200, "text/xml", b"OK: this answer is not XML {\n"
        if request.authorization is None:
            return _error(403, "MissingAuthenticationToken", request_id)
        if not request.authorization.startswith("AWS4-HMAC-SHA256 Credential="):
            return _error(400, "IncompleteSignature", request_id, "Authorization is not SigV4")
        if request.action != "GetCallerIdentity":
            message = f"Could not find operation {request.action} for version 2011-06-15"
            return _error(400, "InvalidAction", request_id, message)
        return 200, "text/xml", self._identity_xml(request_id, "")

    def _identity_xml(self, request_id: str, padding: str) -> bytes:
        return (
            f'<GetCallerIdentityResponse xmlns="{NAMESPACE}">\n'
            "  <GetCallerIdentityResult>\n"
            f"    <Arn>{escape(self.arn)}</Arn>\n"
            f"    <UserId>{escape(self.user_id)}</UserId>\n"
            f"    <Account>{self.account}</Account>\n"
            f"{padding}"
            "  </GetCallerIdentityResult>\n"
            "  <ResponseMetadata>\n"
            f"    <RequestId>{request_id}</RequestId>\n"
            "  </ResponseMetadata>\n"
            "</GetCallerIdentityResponse>\n"
        ).encode()

    def _send_huge(self, conn: socket.socket, request_id: str) -> None:
        """A well-formed answer bloated with comments, streamed so memory stays flat."""
        marker = "<!--PAD-->"
        head, tail = self._identity_xml(request_id, marker).split(marker.encode())
        line = b"    <!-- " + b"padding " * 14 + b"-->\n"
        chunk = line * (65536 // len(line))
        remaining = HUGE_BODY_BYTES - len(head) - len(tail)
        conn.sendall(_head(200, "text/xml", HUGE_BODY_BYTES, request_id) + head)
        while remaining > 0 and not self._stopping.is_set():
            piece = chunk if remaining >= len(chunk) else b" " * remaining
            conn.sendall(piece)
            remaining -= len(piece)
        conn.sendall(tail)


class _Request:
    def __init__(self, method: str, target: str, headers: http.client.HTTPMessage, body: bytes):
        self.method = method
        self.path = urlsplit(target).path
        self.host = headers.get("Host")
        self.authorization: str | None = headers.get("Authorization")
        params = parse_qs(urlsplit(target).query)
        params.update(parse_qs(body.decode("utf-8", "replace")))
        self.action = params.get("Action", [""])[0]

    def summary(self) -> dict[str, object]:
        """What tests may inspect; the Authorization value itself is never kept."""
        return {
            "method": self.method,
            "path": self.path,
            "host": self.host,
            "had_authorization": self.authorization is not None,
            "action": self.action,
        }


def _read_request(conn: socket.socket) -> _Request | None:
    with conn.makefile("rb") as rfile:
        line = rfile.readline(65537).decode("latin-1").split()
        if len(line) != 3:
            return None
        try:
            headers = http.client.parse_headers(rfile)
            length = int(headers.get("Content-Length", "0"))
        except (http.client.HTTPException, ValueError):
            return None
        if not 0 <= length <= _MAX_BODY:
            return None
        body = rfile.read(length)
    return _Request(line[0], line[1], headers, body)


def _head(status: int, ctype: str, length: int, request_id: str) -> bytes:
    return (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
        f"x-amzn-RequestId: {request_id}\r\n"
        f"Content-Type: {ctype}\r\n"
        f"Content-Length: {length}\r\n"
        f"Date: {formatdate(usegmt=True)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


def _error(
    status: int, code: str, request_id: str, message: str | None = None
) -> tuple[int, str, bytes]:
    text = message or _ERROR_MESSAGES.get(code, f"Simulated {code}")
    body = (
        f'<ErrorResponse xmlns="{NAMESPACE}">\n'
        "  <Error>\n"
        "    <Type>Sender</Type>\n"
        f"    <Code>{escape(code)}</Code>\n"
        f"    <Message>{escape(text)}</Message>\n"
        "  </Error>\n"
        f"  <RequestId>{request_id}</RequestId>\n"
        "</ErrorResponse>\n"
    )
    return status, "text/xml", body.encode()


def _reset(sock: socket.socket) -> None:
    """Close with linger 0: the kernel sends RST instead of an orderly FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class _Listener(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], sim: StsServer) -> None:
        self.address_family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.sim = sim
        super().__init__(addr, _Handler)


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        cast(_Listener, self.server).sim._serve_connection(cast(socket.socket, self.request))
