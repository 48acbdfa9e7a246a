"""Talking to the agent's HTTP listener as a client would: basic auth, TLS leaves, raw GETs."""

from __future__ import annotations

import base64
import http.client
import ssl
from pathlib import Path

import bcrypt
import trustme

from agent.surfaces.http_server import (
    HttpServer,
)
from agent.surfaces.webconfig import WebConfig
from agent.surfaces.webconfig_file import load_web_config

LOOPBACK = "127.0.0.1"
PASSWORD = "correct horse battery staple"


def hash_password(password: str) -> str:
    # Cost 4 keeps the suite fast; the code path is the same as for cost 10+.
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_leaf(ca: trustme.CA, directory: Path, stem: str, *identities: str) -> None:
    leaf = ca.issue_cert(*identities)
    directory.mkdir(parents=True, exist_ok=True)
    leaf.cert_chain_pems[0].write_to_path(str(directory / f"{stem}.crt"))
    leaf.private_key_pem.write_to_path(str(directory / f"{stem}.key"))


def get(
    server: HttpServer,
    path: str = "/metrics",
    method: str = "GET",
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn: http.client.HTTPConnection
    if context is not None:
        conn = http.client.HTTPSConnection(LOOPBACK, server.port, timeout=10, context=context)
    else:
        conn = http.client.HTTPConnection(LOOPBACK, server.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def tls_config(directory: Path, extra: str = "") -> WebConfig:
    text = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n" + extra
    return load_web_config(str(write(directory / "web.yml", text)))
