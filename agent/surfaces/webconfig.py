"""A loaded web config: TLS server settings, basic auth users and extra headers.

`webconfig_file` reads and checks the YAML; this module is what the listener
holds afterwards, and it builds the SSL context from the TLS settings.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.surfaces.basic_auth import BasicAuth

CLIENT_AUTH_TYPES: Mapping[str, ssl.VerifyMode] = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}

TLS_VERSIONS: Mapping[str, ssl.TLSVersion] = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}


class WebConfigError(ValueError):
    """The web config is unusable.  str() is one line naming the file and field."""

    def __init__(self, path: str, field_path: str, problem: str) -> None:
        self.path = path
        self.field_path = field_path
        self.problem = problem
        one_line = " ".join(problem.split())
        super().__init__(f"web.config.file {path}: {field_path}: {one_line}")


@dataclass(frozen=True)
class TLSServerConfig:
    cert_file: str
    key_file: str
    client_auth_type: str = "NoClientCert"
    client_ca_file: str | None = None
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
    prefer_server_cipher_suites: bool = True
    client_allowed_sans: tuple[str, ...] = ()

    @property
    def verify_mode(self) -> ssl.VerifyMode:
        return CLIENT_AUTH_TYPES[self.client_auth_type]

    @property
    def files(self) -> tuple[str, ...]:
        """Files whose change means the context must be rebuilt (certificate rotation)."""
        extra = (self.client_ca_file,) if self.client_ca_file else ()
        return (self.cert_file, self.key_file, *extra)


@dataclass(frozen=True)
class WebConfig:
    """A loaded, validated web config.  WebConfig() is the "no file" default."""

    path: str = ""
    tls: TLSServerConfig | None = None
    basic_auth_users: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    http2: bool = True
    _auth: BasicAuth | None = field(default=None, repr=False, compare=False)

    @property
    def tls_enabled(self) -> bool:
        return self.tls is not None

    @property
    def auth_enabled(self) -> bool:
        return self._auth is not None

    @property
    def authenticates_clients(self) -> bool:
        """Every request proves who sends it: basic auth, or a required client certificate."""
        required = self.tls is not None and self.tls.verify_mode == ssl.CERT_REQUIRED
        return self.auth_enabled or required

    def ssl_context(self) -> ssl.SSLContext | None:
        """A fresh server context from the files as they are now (None without TLS)."""
        if self.tls is None:
            return None
        return build_context(self.path, self.tls)

    def check_basic_auth(self, header_value: str | None, peer: str = "") -> bool:
        """True when no users are configured or the Authorization value matches one.

        Raises AuthBusy when the check could not run within its bounded wait
        (`peer`, the client's address, gets one bcrypt check at a time).
        """
        if self._auth is None:
            return True
        return self._auth.check(header_value, peer)

    def auth_refusals(self) -> dict[str, int]:
        """Requests refused because the checks were busy (for the metrics)."""
        return {"busy": self._auth.busy_refusals if self._auth else 0}

    def client_cert_allowed(self, peer_cert: Mapping[str, Any] | None) -> bool:
        """Apply client_allowed_sans to a verified peer certificate (getpeercert())."""
        if self.tls is None or not self.tls.client_allowed_sans:
            return True
        if not peer_cert:
            return False
        allowed = {_normalise_san(s) for s in self.tls.client_allowed_sans}
        for _kind, value in peer_cert.get("subjectAltName", ()):
            if _normalise_san(str(value)) in allowed:
                return True
        return False


def _normalise_san(value: str) -> str:
    # Python prints IP SANs in its own form ("0:0:0:0:0:0:0:1"); compare parsed.
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value


def _no_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    raise ValueError("encrypted private keys are not supported")


def build_context(path: str, tls: TLSServerConfig) -> ssl.SSLContext:
    sect = "tls_server_config"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.minimum_version = tls.min_version
        ctx.maximum_version = tls.max_version
    except (ValueError, ssl.SSLError) as exc:
        raise WebConfigError(path, f"{sect}.min_version", f"not supported here: {exc}") from None
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file, password=_no_passphrase)
    except (OSError, ValueError, ssl.SSLError) as exc:
        raise WebConfigError(
            path, f"{sect}.cert_file", f"cannot load certificate and key: {_ssl_reason(exc)}"
        ) from None
    ctx.verify_mode = tls.verify_mode
    if tls.client_ca_file and tls.verify_mode != ssl.CERT_NONE:
        try:
            ctx.load_verify_locations(cafile=tls.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError(
                path, f"{sect}.client_ca_file", f"cannot load CA certificates: {_ssl_reason(exc)}"
            ) from None
    if tls.prefer_server_cipher_suites:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
