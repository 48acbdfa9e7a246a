"""The HTTP(S) listener behind `sts-agent serve`: routes in, bytes out, nothing else.

It knows nothing about metrics; callers hand it a path-to-function map.  The
web config (TLS, basic auth, extra headers) applies to every route, so a new
endpoint can never be added unprotected.  The TLS handshake runs in the
per-connection thread with a timeout, so a client that connects and stalls
cannot hold up the accept loop or anyone else's scrape.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from agent.lifecycle import Service
from agent.surfaces.webconfig import WebConfig, WebConfigError

log = logging.getLogger("agent.http")

CONNECTION_TIMEOUT = 10.0
_POLL_INTERVAL = 0.2
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
    """Split HOST:PORT, :PORT or [V6]:PORT; an empty host means every interface."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ListenError(f"web.listen-address {address!r}: must be HOST:PORT, :PORT or [V6]:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ListenError(
                f"web.listen-address {address!r}: {host!r} is not an IPv6 address"
            ) from None
    elif ":" in host:
        raise ListenError(f"web.listen-address {address!r}: put IPv6 addresses in brackets")
    return host, int(port_text)


class _TLSContexts:
    """Serves the current SSL context, rebuilding it when a certificate file changes.

    exporter-toolkit rereads certificates on every handshake so rotation needs no
    restart; checking the files' stat per connection gives the same result cheaply.
    A broken rotation keeps the last good context and logs why.
    """

    def __init__(self, config: WebConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        ctx = config.ssl_context()
        assert ctx is not None
        self._ctx = ctx

    def _file_stamp(self) -> tuple[tuple[int, int, int], ...]:
        assert self._config.tls is not None
        stamps = []
        for path in self._config.tls.files:
            try:
                st = os.stat(path)
                stamps.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError:
                stamps.append((0, 0, 0))
        return tuple(stamps)

    def get(self) -> ssl.SSLContext:
        with self._lock:
            stamp = self._file_stamp()
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    fresh = self._config.ssl_context()
                except WebConfigError as exc:
                    log.warning("keeping the previous TLS certificate: %s", exc)
                else:
                    assert fresh is not None
                    self._ctx = fresh
                    log.info("reloaded TLS certificate files from %s", self._config.path)
            return self._ctx


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        bind: tuple[str, int],
        family: socket.AddressFamily,
        dual_stack: bool,
        routes: Mapping[str, Route],
        web_config: WebConfig,
        connection_timeout: float,
    ) -> None:
        self.address_family = family
        self.dual_stack = dual_stack
        self.routes = dict(routes)
        self.web_config = web_config
        self.connection_timeout = connection_timeout
        self.tls = _TLSContexts(web_config) if web_config.tls_enabled else None
        self._active: set[socket.socket] = set()
        self._active_lock = threading.Lock()
        super().__init__(bind, _Handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            v6only = 0 if self.dual_stack else 1
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
        # HTTPServer.server_bind would call getfqdn(), a DNS lookup we neither
        # need nor want on a host whose DNS is what we are diagnosing.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Runs in the connection's own thread: TLS handshake, then HTTP."""
        conn: socket.socket = request
        conn.settimeout(self.connection_timeout)
        self._track(conn, add=True)
        try:
            if self.tls is None:
                super().finish_request(conn, client_address)
                return
            tls_conn = self._wrap(conn, client_address)
            if tls_conn is None:
                return
            self._track(tls_conn, add=True)
            try:
                if self._handshake(tls_conn, client_address):
                    super().finish_request(tls_conn, client_address)
            finally:
                self._track(tls_conn, add=False)
                self.shutdown_request(tls_conn)
        finally:
            self._track(conn, add=False)

    def _wrap(self, conn: socket.socket, client_address: Any) -> ssl.SSLSocket | None:
        assert self.tls is not None
        try:
            return self.tls.get().wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        except (OSError, ValueError) as exc:
            log.debug("TLS setup for %s failed: %s", _peer(client_address), exc)
            return None

    def _handshake(self, tls_conn: ssl.SSLSocket, client_address: Any) -> bool:
        peer = _peer(client_address)
        try:
            tls_conn.do_handshake()
        except (OSError, ValueError) as exc:  # ssl.SSLError and timeouts are OSErrors
            log.debug("TLS handshake with %s failed: %s", peer, exc)
            return False
        if not self.web_config.client_cert_allowed(tls_conn.getpeercert()):
            log.info("rejected client certificate from %s: no allowed SAN", peer)
            return False
        return True

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._active_lock:
            if add:
                self._active.add(conn)
            else:
                self._active.discard(conn)

    def drop_connections(self) -> None:
        """Cut idle keep-alive and stalled connections so stop() does not wait on them."""
        with self._active_lock:
            conns = list(self._active)
        for conn in conns:
            # The plain socket method: SSLSocket.shutdown would tear down
            # TLS state under the thread that is still reading from it.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(conn, socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver would print a traceback to stderr; a dropped client is routine.
        log.debug("connection from %s ended with an error", _peer(client_address), exc_info=True)


def _peer(client_address: Any) -> str:
    if isinstance(client_address, tuple) and len(client_address) >= 2:
        return f"{client_address[0]}:{client_address[1]}"
    return str(client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as Prometheus expects

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
        if self.headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in self.headers:
            self.close_connection = True  # a body we will not read must not become a request
        config = self.server.web_config
        if not config.check_basic_auth(self.headers.get("Authorization")):
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
            client_address=_peer(self.client_address),
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
        log.debug("%s %s %s from %s", method, path, code, _peer(self.client_address))

    def log_error(self, format: str, *args: Any) -> None:
        log.debug("request from %s: %s", _peer(self.client_address), format % args)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("request from %s: %s", _peer(self.client_address), format % args)


def _check_headers(headers: tuple[tuple[str, str], ...]) -> None:
    for name, value in headers:
        if any(c in name + value for c in "\r\n"):
            raise ValueError(f"response header {name!r} contains a line break")


class HttpServer(Service):
    """A threaded HTTP(S) server for the given routes; start() binds, stop() closes."""

    def __init__(
        self,
        listen_address: str,
        routes: Mapping[str, Route],
        web_config: WebConfig | None = None,
        *,
        connection_timeout: float = CONNECTION_TIMEOUT,
    ) -> None:
        self.listen_address = listen_address
        self._host, self._port = parse_listen_address(listen_address)
        self._routes = dict(routes)
        self._web_config = web_config or WebConfig()
        self._connection_timeout = connection_timeout
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> HttpServer:
        if self._server is not None:
            raise RuntimeError("server already started")
        bind, family, dual = self._bind_target()
        try:
            server = _Server(
                bind, family, dual, self._routes, self._web_config, self._connection_timeout
            )
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ListenError(
                f"web.listen-address {self.listen_address}: cannot listen: {reason}"
            ) from None
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name=f"http {self.listen_address}",
            daemon=True,
        )
        self._thread.start()
        log.info(
            "listening on %s (tls=%s, basic_auth=%s)",
            self.url,
            "on" if self._web_config.tls_enabled else "off",
            "on" if self._web_config.auth_enabled else "off",
        )
        return self

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
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.server_close()
        server.drop_connections()
        if thread is not None:
            thread.join(timeout=1.0)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        return self._server.server_port

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("server not started")
        scheme = "https" if self._web_config.tls_enabled else "http"
        host = self._server.server_name
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.port}"
