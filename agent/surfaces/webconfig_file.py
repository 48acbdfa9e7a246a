"""Read the `--web.config.file` YAML: TLS, basic auth and extra headers for the HTTP surface.

The format is Prometheus exporter-toolkit's, so a file that already secures
node_exporter or blackbox_exporter on the host can secure sts-agent too.  It is
parsed strictly (unknown or duplicate keys are errors, as with the toolkit's
strict YAML decoding) and every file it names is checked at load time, so a
typo fails `sts-agent config check` instead of the first scrape.

Where Python's `ssl` module cannot express the Go behaviour, the file is
rejected or mapped as follows:

- ``RequestClientCert`` asks for a certificate and ignores it in Go.  Python
  cannot ask without verifying, and sts-agent never reads an unverified
  certificate, so it maps to ``CERT_NONE``: the same clients get in.
- ``RequireAnyClientCert`` (and its old alias ``RequireClientCert``) demands a
  certificate but never verifies it.  Python cannot require a certificate
  without verifying it, and silently verifying would lock out clients that work
  with other exporters, so it is rejected with a pointer to
  ``RequireAndVerifyClientCert``.
- ``VerifyClientCertIfGiven`` and ``RequireAndVerifyClientCert`` need
  ``client_ca_file``: Go would fall back to the system CA store, which would
  let any publicly issued certificate authenticate.
- ``cert``/``key``/``client_ca`` (inline PEM), ``cipher_suites``,
  ``curve_preferences`` and ``rate_limit`` are rejected as unsupported rather
  than ignored, because ignoring a security setting is worse than refusing it.
"""

from __future__ import annotations

import difflib
import os
import re
import ssl
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from agent.surfaces.basic_auth import BasicAuth
from agent.surfaces.webconfig import (
    CLIENT_AUTH_TYPES,
    TLS_VERSIONS,
    TLSServerConfig,
    WebConfig,
    WebConfigError,
    build_context,
)

if TYPE_CHECKING:
    import yaml


_UNEXPRESSIBLE_CLIENT_AUTH = ("RequireAnyClientCert", "RequireClientCert")

# The toolkit allows only these headers, some with a fixed set of values, so
# that a web config cannot break the exposition format or the auth flow.
ALLOWED_HEADERS: Mapping[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}

_TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users")
_TLS_KEYS = (
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
    "prefer_server_cipher_suites",
    "client_allowed_sans",
)
_HTTP_KEYS = ("headers", "http2")
_UNSUPPORTED: Mapping[str, str] = {
    "rate_limit": "is not supported by sts-agent",
    "tls_server_config.cert": "(inline PEM) is not supported; use cert_file",
    "tls_server_config.key": "(inline PEM) is not supported; use key_file",
    "tls_server_config.client_ca": "(inline PEM) is not supported; use client_ca_file",
    "tls_server_config.cipher_suites": "is not supported; OpenSSL's defaults apply",
    "tls_server_config.curve_preferences": "is not supported; OpenSSL's defaults apply",
}
_BCRYPT_HASH = re.compile(r"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")


def load_web_config(path: str) -> WebConfig:
    """Read, validate and resolve a web config file; raise WebConfigError on any problem."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise WebConfigError(path, "file", f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise WebConfigError(path, "file", "not UTF-8 text") from None
    import yaml

    try:
        doc = yaml.load(text, Loader=_strict_loader())  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise WebConfigError(path, "yaml", f"{exc.problem or exc}{where}") from None
    except yaml.YAMLError as exc:
        raise WebConfigError(path, "yaml", str(exc)) from None
    return _Parser(path).parse(doc)


@lru_cache(maxsize=1)
def _strict_loader() -> type[yaml.SafeLoader]:
    """SafeLoader that refuses duplicate keys, which Go's strict decoder also refuses.

    Built on first use: PyYAML (and bcrypt) cost about 1.7 MB that a daemon
    without a web config file never needs.
    """
    import yaml

    class StrictLoader(yaml.SafeLoader):
        pass

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return loader.construct_mapping(node)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return StrictLoader


class _Parser:
    def __init__(self, path: str) -> None:
        self.path = path
        self.base = os.path.dirname(os.path.abspath(path))

    def fail(self, field_path: str, problem: str) -> WebConfigError:
        return WebConfigError(self.path, field_path, problem)

    def mapping(self, value: Any, field_path: str, known: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(field_path, f"must be a mapping, got {type(value).__name__}")
        for key in value:
            full = f"{field_path}.{key}" if field_path != "(top level)" else str(key)
            if full in _UNSUPPORTED:
                raise self.fail(full, _UNSUPPORTED[full])
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise self.fail(full, f"unknown key{hint}")
        return value

    def string(self, value: Any, field_path: str) -> str:
        if not isinstance(value, str):
            raise self.fail(field_path, f"must be a string, got {value!r}")
        return value

    def boolean(self, value: Any, field_path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(field_path, f"must be true or false, got {value!r}")
        return value

    def file(self, value: Any, field_path: str) -> str:
        given = self.string(value, field_path)
        if not given:
            raise self.fail(field_path, "must not be empty")
        resolved = given if os.path.isabs(given) else os.path.join(self.base, given)
        if not os.path.isfile(resolved):
            where = "" if resolved == given else f" (resolved to {resolved!r})"
            raise self.fail(field_path, f"file not found: {given!r}{where}")
        return resolved

    def parse(self, doc: Any) -> WebConfig:
        top = self.mapping(doc, "(top level)", _TOP_KEYS)
        tls = self.tls(top.get("tls_server_config"))
        users = self.users(top.get("basic_auth_users"))
        headers, http2 = self.http(top.get("http_server_config"))
        if tls is not None:
            build_context(self.path, tls)  # prove the files load now, not at first scrape
        return WebConfig(
            path=self.path,
            tls=tls,
            basic_auth_users=tuple(sorted(users)),
            headers=headers,
            http2=http2,
            _auth=BasicAuth(users) if users else None,
        )

    def tls(self, raw: Any) -> TLSServerConfig | None:
        sect = "tls_server_config"
        cfg = self.mapping(raw, sect, _TLS_KEYS)
        enabling = ("cert_file", "key_file", "client_ca_file", "client_auth_type")
        if not any(cfg.get(k) for k in enabling):
            return None  # the toolkit serves plain HTTP when no TLS field is set
        for req in ("cert_file", "key_file"):
            if not cfg.get(req):
                raise self.fail(f"{sect}.{req}", "is required when TLS is configured")
        auth = self.string(
            cfg.get("client_auth_type") or "NoClientCert", f"{sect}.client_auth_type"
        )
        if auth in _UNEXPRESSIBLE_CLIENT_AUTH:
            raise self.fail(
                f"{sect}.client_auth_type",
                f"{auth} (accept any certificate without verifying it) cannot be expressed "
                "with Python's ssl module; use RequireAndVerifyClientCert with client_ca_file",
            )
        if auth not in CLIENT_AUTH_TYPES:
            valid = ", ".join((*CLIENT_AUTH_TYPES, *_UNEXPRESSIBLE_CLIENT_AUTH[:1]))
            raise self.fail(f"{sect}.client_auth_type", f"must be one of {valid}, got {auth!r}")
        ca = cfg.get("client_ca_file")
        ca_file = self.file(ca, f"{sect}.client_ca_file") if ca else None
        verify = CLIENT_AUTH_TYPES[auth]
        if ca_file and auth == "NoClientCert":
            raise self.fail(f"{sect}.client_ca_file", "is set but client_auth_type is NoClientCert")
        if verify != ssl.CERT_NONE and not ca_file:
            raise self.fail(
                f"{sect}.client_ca_file",
                f"is required for {auth} (the system CA store is not trusted for clients)",
            )
        sans = self.sans(cfg.get("client_allowed_sans"), f"{sect}.client_allowed_sans")
        if sans and auth != "RequireAndVerifyClientCert":
            raise self.fail(
                f"{sect}.client_allowed_sans",
                "requires client_auth_type RequireAndVerifyClientCert",
            )
        low = self.version(cfg.get("min_version"), f"{sect}.min_version", "TLS12")
        high = self.version(cfg.get("max_version"), f"{sect}.max_version", "TLS13")
        if low > high:
            raise self.fail(f"{sect}.min_version", "is higher than max_version")
        prefer = cfg.get("prefer_server_cipher_suites", True)
        return TLSServerConfig(
            cert_file=self.file(cfg["cert_file"], f"{sect}.cert_file"),
            key_file=self.file(cfg["key_file"], f"{sect}.key_file"),
            client_auth_type=auth,
            client_ca_file=ca_file,
            min_version=low,
            max_version=high,
            prefer_server_cipher_suites=self.boolean(prefer, f"{sect}.prefer_server_cipher_suites"),
            client_allowed_sans=sans,
        )

    def version(self, value: Any, field_path: str, default: str) -> ssl.TLSVersion:
        name = self.string(default if value is None else value, field_path)
        if name not in TLS_VERSIONS:
            raise self.fail(field_path, f"must be one of {', '.join(TLS_VERSIONS)}, got {name!r}")
        return TLS_VERSIONS[name]

    def sans(self, value: Any, field_path: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail(field_path, f"must be a list of strings, got {value!r}")
        return tuple(self.string(v, f"{field_path}[{i}]") for i, v in enumerate(value))

    def users(self, raw: Any) -> dict[str, bytes]:
        sect = "basic_auth_users"
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise self.fail(sect, f"must be a mapping of user to bcrypt hash, got {raw!r}")
        users: dict[str, bytes] = {}
        for name, hashed in raw.items():
            if not isinstance(name, str) or not name or ":" in name:
                raise self.fail(
                    f"{sect}.{name}", "user name must be a non-empty string without ':'"
                )
            where = f"{sect}.{name}"
            text = self.string(hashed, where) if hashed is not None else ""
            match = _BCRYPT_HASH.match(text)
            if not match or not 4 <= int(match.group(1)) <= 31:
                # Never echo the value: it may be a plain password pasted by mistake.
                raise self.fail(where, "must be a bcrypt hash ($2a$, $2b$ or $2y$, 60 characters)")
            users[name] = text.encode("ascii")
        return users

    def http(self, raw: Any) -> tuple[tuple[tuple[str, str], ...], bool]:
        sect = "http_server_config"
        cfg = self.mapping(raw, sect, _HTTP_KEYS)
        http2 = self.boolean(cfg.get("http2", True), f"{sect}.http2")  # accepted, unused
        headers_raw = cfg.get("headers")
        if headers_raw is None:
            return (), http2
        if not isinstance(headers_raw, dict):
            raise self.fail(f"{sect}.headers", f"must be a mapping, got {headers_raw!r}")
        headers: list[tuple[str, str]] = []
        for name, value in headers_raw.items():
            where = f"{sect}.headers.{name}"
            if name not in ALLOWED_HEADERS:
                raise self.fail(
                    where, f"cannot be configured; allowed: {', '.join(ALLOWED_HEADERS)}"
                )
            text = self.string(value, where)
            if "\r" in text or "\n" in text:
                raise self.fail(where, "must not contain line breaks")
            choices = ALLOWED_HEADERS[name]
            if choices and text not in choices:
                raise self.fail(where, f"must be one of {', '.join(choices)}, got {text!r}")
            headers.append((name, text))
        return tuple(headers), http2
