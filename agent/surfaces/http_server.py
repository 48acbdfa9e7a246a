"""The HTTP(S) listener behind `sts-agent serve`: routes in, bytes out, nothing else.

It knows nothing about metrics; callers hand it a path-to-function map.  The
web config (TLS, basic auth, extra headers) applies to every route, so a new
endpoint can never be added unprotected.  Hostile clients are the default
assumption: connections are capped, handshake and head share one deadline,
and a slow client holds no thread (see http_loop).  Framing is strict: a
request with two Content-Lengths or any Transfer-Encoding is refused, so no
second request can hide in a body.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from agent.addresses import AddressError, join_host_port, parse_listen
from agent.lifecycle import Service
from agent.surfaces.basic_auth import AuthBusy
from agent.surfaces.http_loop import Connection, ConnectionLoop
from agent.surfaces.tls_reload import TLSContexts
from agent.surfaces.webconfig import WebConfig

log = logging.getLogger("agent.http")

#: One deadline for the TLS handshake and the whole request head (and each response write).
CONNECTION_TIMEOUT = 10.0
#: Concurrent connections, lowered to leave http_loop.FD_RESERVE descriptors free.
MAX_CONNECTIONS = 512
#: Threads that answer complete requests; slow clients never hold one.
WORKERS = 8
#: A burst of connects waits in the kernel instead of being refused.
LISTEN_BACKLOG = 512
_ALLOWED_METHODS = ("GET", "HEAD")
_REALM = 'Basic realm="sts-agent"'


class ListenError(RuntimeError):
    """The listen address is malformed or cannot be bound.  str() is one line."""


class Headers(Mapping[str, str]):
    """Read-only request headers with case-insensitive names, as HTTP defines them."""

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items = {k.lower(): v for k, v in (items or {}).items()}

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass(frozen=True)
class Request:
    """What a route sees.  The Authorization header is removed before routes run."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Headers
    client_address: str = ""


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def text(cls, status: int, message: str) -> Response:
        return cls(status, "text/plain; charset=utf-8", (message.rstrip("\n") + "\n").encode())


Route = Callable[[Request], Response]


def parse_listen_address(address: str) -> tuple[str, int]:
    """HOST:PORT, :PORT or [V6]:PORT; an empty host is every interface, port 0 any free port."""
    try:
        return parse_listen(address, "web.listen_address", port_zero=True)
    except AddressError as exc:
        raise ListenError(str(exc)) from None


@dataclass(frozen=True)
class _Site:
    """What every request handler shares: the routes and the web config."""

    routes: Mapping[str, Route]
    web_config: WebConfig


def _listen(bind: tuple[str, int], family: socket.AddressFamily, dual: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual else 1)
        sock.bind(bind)
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


class _Writer:
    """Collects the response; the connection loop sends it, so no worker waits on a client."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


class _Handler(BaseHTTPRequestHandler):
    """Answers exactly one request whose head the connection loop has already read."""

    server: _Site  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"  # keep-alive, as Prometheus expects

    def __init__(self, conn: Connection, head: bytes, site: _Site) -> None:
        self._head = head
        super().__init__(conn.sock, conn.peer, site)  # type: ignore[arg-type]

    def setup(self) -> None:
        self.connection = self.request
        self.rfile = io.BytesIO(self._head)
        self.wfile = _Writer()  # type: ignore[assignment]

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()

    def finish(self) -> None:
        pass

    def parse_request(self) -> bool:
        """The standard parse, but every refusal gets a status line and 400.

        The standard handler closes silently on an empty request line (the loop
        has already dropped the few a client may send first, so one left is
        junk) and answers an HTTP/0.9 line ("GET /path") with a bare body that
        no client can tell from an error; HTTP/0.9 is not served.
        """
        ok = super().parse_request()
        if ok and self.request_version == "HTTP/0.9":
            self.send_error(HTTPStatus.BAD_REQUEST)
            return False
        answered = isinstance(self.wfile, _Writer) and bool(self.wfile.chunks)
        if not ok and not answered:
            self.send_error(HTTPStatus.BAD_REQUEST)
        return ok

    def version_string(self) -> str:
        return "sts-agent"

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def _not_allowed(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed

    def _handle(self) -> None:
        if not self._framing_ok():
            return
        config = self.server.web_config
        try:
            peer = str(self.client_address).rpartition(":")[0]
            authorized = config.check_basic_auth(self.headers.get("Authorization"), peer)
        except AuthBusy:
            self.close_connection = True
            busy = Response.text(HTTPStatus.SERVICE_UNAVAILABLE, "Authentication busy, retry")
            self._send(busy, (("Retry-After", "1"),))
            return
        if not authorized:
            self._send(
                Response.text(HTTPStatus.UNAUTHORIZED, "Unauthorized"),
                (("WWW-Authenticate", _REALM),),
            )
            return
        parts = urlsplit(self.path)
        route = self.server.routes.get(parts.path)
        if route is None:
            self._send(Response.text(HTTPStatus.NOT_FOUND, "Not Found"))
            return
        if self.command not in _ALLOWED_METHODS:
            self.close_connection = True
            allow = (("Allow", ", ".join(_ALLOWED_METHODS)),)
            self._send(Response.text(HTTPStatus.METHOD_NOT_ALLOWED, "Method Not Allowed"), allow)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() != "authorization"}
        request = Request(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers=Headers(headers),
            client_address=str(self.client_address),
        )
        try:
            response = route(request)
            if not isinstance(response, Response):
                raise TypeError(f"route returned {type(response).__name__}, not Response")
            _check_headers(response.headers)
        except Exception as exc:
            log.error("route %s failed: %s: %s", parts.path, type(exc).__name__, exc)
            log.debug("route %s traceback", parts.path, exc_info=True)
            response = Response.text(HTTPStatus.INTERNAL_SERVER_ERROR, "Internal Server Error")
        self._send(response)

    def _framing_ok(self) -> bool:
        """One plain Content-Length at most and no Transfer-Encoding: nothing to smuggle."""
        lengths = self.headers.get_all("Content-Length") or []
        if (
            len(lengths) > 1
            or "Transfer-Encoding" in self.headers
            or any(not v.strip().isdigit() for v in lengths)
        ):
            self.send_error(HTTPStatus.BAD_REQUEST)
            return False
        if lengths and int(lengths[0]) != 0:
            self.close_connection = True  # a body we will not read must not become a request
        return True

    def _send(self, response: Response, extra: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in (*self.server.web_config.headers, *extra, *response.headers):
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed requests get the same plain one-line body and headers as the rest."""
        self.close_connection = True
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = self.protocol_version  # an error still gets a status line
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Error"
        self._send(Response.text(code, phrase))

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Method, path and status only: never headers, so never credentials.
        raw = getattr(self, "path", None)
        path = urlsplit(raw).path if isinstance(raw, str) else "-"
        method = self.command or "-"
        log.debug("%s %s %s from %s", method, path, code, self.client_address)

    def log_error(self, format: str, *args: Any) -> None:
        log.debug("request from %s: %s", self.client_address, format % args)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("request from %s: %s", self.client_address, format % args)


def _check_headers(headers: tuple[tuple[str, str], ...]) -> None:
    for name, value in headers:
        if any(c in name + value for c in "\r\n"):
            raise ValueError(f"response header {name!r} contains a line break")


WILDCARDS = ("", "0.0.0.0", "::")


def bound_where(host: str, port: int, url: str) -> str:
    """`url` for a specific address; for a wildcard bind, that every interface listens."""
    if host in WILDCARDS:
        return f"every interface, port {port} ({url} from this host)"
    return url


class HttpServer(Service):
    """An HTTP(S) server for the given routes; start() binds, stop() closes.

    One loop thread holds idle connections (see http_loop); `workers` threads
    answer complete requests, so the thread count is fixed whatever clients do.
    """

    def __init__(
        self,
        listen_address: str,
        routes: Mapping[str, Route],
        web_config: WebConfig | None = None,
        *,
        connection_timeout: float = CONNECTION_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        workers: int = WORKERS,
    ) -> None:
        self.listen_address = listen_address
        self._host, self._port = parse_listen_address(listen_address)
        self._site = _Site(dict(routes), web_config or WebConfig())
        self._web_config = self._site.web_config
        self._connection_timeout = connection_timeout
        self._max_connections = max_connections
        self.workers = workers
        self._sock: socket.socket | None = None
        self._loop: ConnectionLoop | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> HttpServer:
        if self._sock is not None:
            raise RuntimeError("server already started")
        bind, family, dual = self._bind_target()
        try:
            sock = _listen(bind, family, dual)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ListenError(
                f"web.listen-address {self.listen_address}: cannot listen: {reason}"
            ) from None
        tls = TLSContexts(self._web_config) if self._web_config.tls_enabled else None
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="http")
        self._loop = ConnectionLoop(
            sock,
            self._dispatch,
            max_connections=self._max_connections,
            head_timeout=self._connection_timeout,
            tls=tls.get if tls else None,
            cert_check=self._cert_allowed,
        )
        self._sock = sock
        self._thread = threading.Thread(
            target=self._loop.run, name=f"http {self.listen_address}", daemon=True
        )
        self._thread.start()
        log.info(
            "listening on %s (tls=%s, basic_auth=%s, max_connections=%d)",
            self.where,
            "on" if self._web_config.tls_enabled else "off",
            "on" if self._web_config.auth_enabled else "off",
            self._loop.max_connections,
        )
        return self

    def _cert_allowed(self, conn: ssl.SSLSocket, peer: str) -> bool:
        if self._web_config.client_cert_allowed(conn.getpeercert()):
            return True
        log.info("rejected client certificate from %s: no allowed SAN", peer)
        return False

    def _dispatch(self, conn: Connection, head: bytes) -> None:
        assert self._pool is not None
        self._pool.submit(self._serve, conn, head)

    def _serve(self, conn: Connection, head: bytes) -> None:
        """On a worker: answer one request into memory and hand it to the loop to send."""
        loop = self._loop
        assert loop is not None
        try:
            handler = _Handler(conn, head, self._site)
        except Exception:  # a malformed request the handler could not even answer
            log.debug("request from %s failed", conn.peer, exc_info=True)
            loop.release(conn)
            return
        assert isinstance(handler.wfile, _Writer)
        response = b"".join(handler.wfile.chunks)
        loop.respond(conn, response, keep_alive=not handler.close_connection)

    def connection_stats(self) -> tuple[int, Mapping[str, int]]:
        """(open connections, connections we closed by reason) for the metrics."""
        loop = self._loop
        if loop is None:
            return 0, {}
        return loop.open_connections, dict(loop.dropped)

    def _bind_target(self) -> tuple[tuple[str, int], socket.AddressFamily, bool]:
        host, port = self._host, self._port
        if not host:
            if socket.has_dualstack_ipv6():
                return ("::", port), socket.AF_INET6, True
            return ("0.0.0.0", port), socket.AF_INET, False
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            try:
                infos = socket.getaddrinfo(
                    host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
                )
            except socket.gaierror as exc:
                raise ListenError(
                    f"web.listen-address {self.listen_address}: cannot resolve {host!r}: "
                    f"{exc.strerror}"
                ) from None
            family, _, _, _, sockaddr = infos[0]
            return (str(sockaddr[0]), port), family, False
        if ip.version == 6:
            return (host, port), socket.AF_INET6, False
        return (host, port), socket.AF_INET, False

    def stop(self) -> None:
        """Stop accepting, close the listener and cut open connections."""
        sock, loop, pool, thread = self._sock, self._loop, self._pool, self._thread
        if sock is None:
            return
        self._sock = self._thread = None
        if loop is not None:
            loop.stop()
        if thread is not None:
            thread.join(timeout=1.0)
        sock.close()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("server not started")
        return int(self._sock.getsockname()[1])

    @property
    def listening(self) -> bool:
        return self._sock is not None

    @property
    def where(self) -> str:
        """The bound address for logs: a wildcard bind says so, since `url` shows loopback."""
        if self._sock is None:
            raise RuntimeError("server not started")
        return bound_where(str(self._sock.getsockname()[0]), self.port, self.url)

    @property
    def url(self) -> str:
        if self._sock is None:
            raise RuntimeError("server not started")
        scheme = "https" if self._web_config.tls_enabled else "http"
        host = str(self._sock.getsockname()[0])
        if host in WILDCARDS:
            host = "127.0.0.1"
        return f"{scheme}://{join_host_port(host, self.port)}"
