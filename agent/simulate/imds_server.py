"""A loopback IMDSv2 that enforces session tokens the way EC2 does.

The agent's discovery and botocore's instance-profile credential provider both
run against it unchanged, so the demo and the tests exercise the real token
dance, the real failure modes (hop-limit timeouts, 401/403) and bad documents.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agent.addresses import join_host_port
from agent.lifecycle import Service

TOKEN_PATH = "/latest/api/token"
METADATA_PREFIX = "/latest/meta-data/"
IDENTITY_DOCUMENT = "/latest/dynamic/instance-identity/document"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
MAX_TTL = 21600
FAULTS = ("timeout", "unauthorized", "token_forbidden", "garbage_cidrs")
GARBAGE_CIDRS = "not-a-cidr\n300.1.2.3/99"

# Documented AWS example values: obviously fake, never valid anywhere.
DEFAULT_CREDENTIALS: Mapping[str, str] = {
    "AccessKeyId": "ASIAIOSFODNN7EXAMPLE",
    "SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "Token": "FwoGZXIvYXdzEXAMPLESESSIONTOKEN",
}


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ImdsServer(Service):
    """Serve one simulated instance's metadata on loopback.

    `fault` may be changed while running to switch failure modes between
    requests; `credentials_expiration` likewise, to exercise refresh logic.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        region: str = "us-east-2",
        az: str = "us-east-2a",
        az_id: str = "use2-az1",
        instance_id: str = "i-0123456789abcdef0",
        mac: str = "0e:49:61:0f:c3:11",
        vpc_id: str = "vpc-0a1b2c3d4e5f60718",
        subnet_id: str = "subnet-0123456789abcdef0",
        vpc_cidrs: Sequence[str] = ("10.120.0.0/16",),
        vpc_ipv6_cidrs: Sequence[str] = (),
        role: str = "demo-instance-role",
        account_id: str = "123456789012",
        credentials: dict[str, str] | None = None,
    ) -> None:
        self.region = region
        self.az = az
        self.az_id = az_id
        self.instance_id = instance_id
        self.mac = mac
        self.vpc_id = vpc_id
        self.subnet_id = subnet_id
        self.vpc_cidrs = tuple(vpc_cidrs)
        self.vpc_ipv6_cidrs = tuple(vpc_ipv6_cidrs)
        self.role = role
        self.account_id = account_id
        self.credentials = dict(credentials or DEFAULT_CREDENTIALS)
        self.credentials_expiration = dt.datetime.now(dt.UTC) + dt.timedelta(hours=6)
        self.fault: str | None = None
        self.token_requests = 0
        self.requests = 0
        self._tokens: dict[str, float] = {}  # token -> monotonic expiry
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._thread: threading.Thread | None = None
        self._httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self._httpd.daemon_threads = True

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{join_host_port(str(self._httpd.server_address[0]), self.port)}/"

    def start(self) -> ImdsServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},  # stop() returns promptly
                name="imds-server",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()  # let handlers parked by the "timeout" fault finish
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    # --- request logic, called from handler threads

    def _count(self, token: bool) -> None:
        with self._lock:
            self.requests += 1
            if token:
                self.token_requests += 1

    def issue_token(self, ttl: int) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = time.monotonic() + ttl
        return token

    def token_valid(self, token: str | None) -> bool:
        if not token:
            return False
        with self._lock:
            expiry = self._tokens.get(token)
            if expiry is not None and expiry <= time.monotonic():
                del self._tokens[token]
                expiry = None
        return expiry is not None

    def documents(self) -> dict[str, str]:
        """Every leaf path below /latest/meta-data/ and its body."""
        net = f"network/interfaces/macs/{self.mac}/"
        cidrs = GARBAGE_CIDRS if self.fault == "garbage_cidrs" else "\n".join(self.vpc_cidrs)
        docs = {
            "placement/region": self.region,
            "placement/availability-zone": self.az,
            "placement/availability-zone-id": self.az_id,
            "instance-id": self.instance_id,
            "mac": self.mac,
            net + "vpc-id": self.vpc_id,
            net + "subnet-id": self.subnet_id,
            net + "vpc-ipv4-cidr-blocks": cidrs,
        }
        if self.vpc_ipv6_cidrs:  # EC2 answers 404 here when the VPC has no IPv6
            docs[net + "vpc-ipv6-cidr-blocks"] = "\n".join(self.vpc_ipv6_cidrs)
        if self.role:
            now = dt.datetime.now(dt.UTC)
            body: dict[str, Any] = {
                "Code": "Success",
                "LastUpdated": _iso(now),
                "Type": "AWS-HMAC",
                **self.credentials,
                "Expiration": _iso(self.credentials_expiration),
            }
            docs[f"iam/security-credentials/{self.role}"] = json.dumps(body, indent=2)
        return docs

    def identity_document(self) -> str:
        """The instance identity document (its signature is not simulated)."""
        doc = {
            "accountId": self.account_id,
            "architecture": "x86_64",
            "availabilityZone": self.az,
            "imageId": "ami-0123456789abcdef0",
            "instanceId": self.instance_id,
            "instanceType": "t3.micro",
            "privateIp": "10.120.1.15",
            "region": self.region,
            "version": "2017-09-30",
        }
        return json.dumps(doc, indent=2)

    def lookup(self, path: str) -> str | None:
        """The body for a metadata path; a trailing slash lists the children."""
        docs = self.documents()
        if path in docs:
            return docs[path]
        if path == "" or path.endswith("/"):
            children: dict[str, None] = {}
            for key in docs:
                if key.startswith(path):
                    head, sep, _ = key[len(path) :].partition("/")
                    children.setdefault(head + sep, None)
            if children:
                return "\n".join(children)
        return None


def _handler_for(server: ImdsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "EC2ws"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            """Stay quiet: request lines would only clutter test output."""

        def _send(
            self, status: int, body: str = "", headers: Mapping[str, str] | None = None
        ) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _discard_body(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > 0:
                self.rfile.read(length)

        def _faulted(self) -> bool:
            if server.fault == "timeout":
                server._released.wait()
                self.close_connection = True
                return True
            if server.fault == "unauthorized":
                self._send(HTTPStatus.UNAUTHORIZED)
                return True
            return False

        def do_PUT(self) -> None:
            self._discard_body()
            is_token = self.path == TOKEN_PATH
            server._count(token=is_token)
            if self._faulted():
                return
            if not is_token:
                self._send(HTTPStatus.NOT_FOUND)
                return
            if self.headers.get("X-Forwarded-For") is not None:
                self._send(HTTPStatus.FORBIDDEN)  # EC2 refuses tokens to proxied callers
                return
            if server.fault == "token_forbidden":
                self._send(HTTPStatus.FORBIDDEN)
                return
            raw = self.headers.get(TTL_HEADER, "")
            ttl = int(raw) if raw.strip().isdigit() else 0
            if not 1 <= ttl <= MAX_TTL:
                self._send(HTTPStatus.BAD_REQUEST)
                return
            self._send(HTTPStatus.OK, server.issue_token(ttl), {TTL_HEADER: str(ttl)})

        def do_GET(self) -> None:
            server._count(token=False)
            if self._faulted():
                return
            if not server.token_valid(self.headers.get(TOKEN_HEADER)):
                self._send(HTTPStatus.UNAUTHORIZED)
                return
            path = self.path.split("?", 1)[0]
            body = (
                server.lookup(path[len(METADATA_PREFIX) :])
                if path.startswith(METADATA_PREFIX)
                else None
            )
            if path == IDENTITY_DOCUMENT:
                body = server.identity_document()
            if body is None:
                self._send(HTTPStatus.NOT_FOUND)
            else:
                self._send(HTTPStatus.OK, body)

    return Handler
