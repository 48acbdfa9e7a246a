"""Settings: one schema feeds the TOML file, `STS_AGENT_*` variables and CLI flags.

Precedence is flag > environment > file > discovered > default.  Discovered
values (region, VPC CIDRs) are filled in later by discovery, only where the
user left the setting empty.  Every error names the field and the bad value
on one line, so a typo never turns into a silent default.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlsplit

from agent import config_values as parsers
from agent import sts_hosts
from agent.addresses import bracketed, join_host_port
from agent.results import Endpoint, EndpointKind

DEFAULT_PORT = 9472
ENV_PREFIX = "STS_AGENT_"


#: user:password@ in a URL: kept out of error messages, which reach the journal.
_USERINFO = re.compile(r"(://)[^/@\s'\"]*@")


class ConfigError(ValueError):
    """A setting is wrong.  str() is the one line shown to the user."""

    def __init__(
        self, field_path: str, value: object, problem: str, source: str = "", *, echo: bool = True
    ) -> None:
        self.field_path = field_path
        self.value = value
        self.problem = problem
        self.source = source
        where = f" (from {source})" if source else ""
        # A setting under the wrong name may still be a secret (a proxy URL with its
        # password, say): callers leave an unknown one's value out (echo=False), and a
        # shown one loses URL user info.
        shown = _USERINFO.sub(r"\1***@", repr(value))
        got = f", got {shown}" if echo else ""
        super().__init__(f"{field_path}: {problem}{got}{where}")


@dataclass(frozen=True)
class Settings:
    regions: tuple[str, ...] = ()
    interval: float = 30.0
    timeout: float = 5.0
    port: int = 443
    credentials: str = "chain"  # chain | none
    ca_bundle: str | None = None
    vpc_cidrs: tuple[str, ...] = ()
    resolvers: tuple[str, ...] = ("system",)
    resolv_conf: str = "/etc/resolv.conf"
    hosts_file: str | None = "/etc/hosts"  # "" in the file / env turns the check off
    nsswitch_conf: str = "/etc/nsswitch.conf"
    max_addresses_per_endpoint: int = 8
    endpoints_regional: bool = True
    endpoints_global: bool = True
    endpoints_fips: bool = False
    endpoints_dualstack: bool = False
    endpoints_extra: tuple[str, ...] = ()
    expect: tuple[tuple[str, str], ...] = ()
    imds_enabled: bool = True
    imds_address: str = "169.254.169.254"
    imds_timeout: float = 1.0
    discovery_interval: float = 300.0
    cert_warning_days: float = 14.0
    web_listen_address: str = f":{DEFAULT_PORT}"
    web_config_file: str | None = None
    web_probe_rate: float = 1.0
    web_probe_remote: bool = False
    log_format: str = "plain"  # plain | json
    log_level: str = "info"
    audit_processes: bool = False
    audit_connections: bool = True
    audit_vpc_endpoints: bool = False
    metrics_histogram_phases: tuple[str, ...] = ("total",)
    vpce_dns_names: tuple[str, ...] = ()
    host_availability_zone: str | None = None
    host_vpc_id: str | None = None
    host_account_id: str | None = None

    def expectation_for(self, endpoint_kind: EndpointKind, hostname: str) -> str | None:
        table = dict(self.expect)
        return table.get(hostname) or table.get(endpoint_kind)

    def endpoints(self, region: str | None) -> tuple[Endpoint, ...]:
        """The STS hostnames to watch for one region, in a stable order."""
        return sts_hosts.watched_endpoints(self, region)


@dataclass(frozen=True)
class Field:
    path: str  # dotted TOML path; the Settings attribute is the same with "_" for "."
    parse: Callable[[Any], Any]
    help: str
    flag_name: str | None = None  # where exporter habit dictates another spelling

    @property
    def attr(self) -> str:
        return self.path.replace(".", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.path.replace(".", "_").upper()

    @property
    def flag(self) -> str:
        return self.flag_name or "--" + self.path.replace("_", "-")


FIELDS: tuple[Field, ...] = (
    Field("regions", parsers.listing(parsers.region), "regions to watch (default: discovered)"),
    Field("interval", parsers.interval, "seconds between probe rounds"),
    Field("timeout", parsers.timeout, "per-probe timeout in seconds"),
    Field("port", parsers.port, "STS TCP port"),
    Field("credentials", parsers.choice("chain", "none"), "chain or none (unsigned)"),
    Field("ca_bundle", parsers.optional_path, "CA bundle for STS TLS (default AWS_CA_BUNDLE)"),
    Field("vpc_cidrs", parsers.listing(parsers.cidr), "this VPC's CIDRs (default: from IMDS)"),
    Field("resolvers", parsers.resolvers, "'system' or address[:port] list"),
    Field("resolv_conf", parsers.text, "resolv.conf to read for 'system'"),
    Field("hosts_file", parsers.optional_path, "hosts file checked for pinned STS names"),
    Field("nsswitch_conf", parsers.text, "says whether the hosts file precedes DNS"),
    Field(
        "max_addresses_per_endpoint",
        parsers.address_cap,
        "cap on probed addresses (and label values) per endpoint",
    ),
    Field("endpoints.regional", parsers.boolean, "watch sts.<region>.amazonaws.com"),
    Field("endpoints.global", parsers.boolean, "watch sts.amazonaws.com"),
    Field("endpoints.fips", parsers.boolean, "watch sts-fips.<region>.amazonaws.com"),
    Field("endpoints.dualstack", parsers.boolean, "watch sts.<region>.api.aws"),
    Field("endpoints.extra", parsers.listing(parsers.hostname), "more hostnames to watch"),
    Field("expect", parsers.expect, "expected path per endpoint kind or hostname"),
    Field("imds.enabled", parsers.boolean, "ask IMDSv2 for region and VPC"),
    Field("imds.address", parsers.imds_address, "IMDS address (host or host:port)"),
    Field("imds.timeout", parsers.seconds, "total IMDS time budget, seconds"),
    Field("discovery_interval", parsers.seconds, "seconds between rediscovery"),
    Field("cert_warning_days", parsers.positive(float), "warn this early on certs"),
    Field("web.listen_address", parsers.listen_address, "HOST:PORT for /metrics"),
    Field(
        "web.config_file",
        parsers.optional_path,
        "web config YAML (TLS, basic auth)",
        "--web.config.file",
    ),
    Field("web.probe_rate", parsers.positive(float), "new /probe rounds per second"),
    Field("web.probe_remote", parsers.boolean, "/probe from other hosts without auth"),
    Field("log.format", parsers.choice("plain", "json"), "plain or json"),
    Field("log.level", parsers.choice("debug", "info", "warning", "error"), "log level"),
    Field("audit.processes", parsers.boolean, "inspect other processes' AWS settings"),
    Field("audit.connections", parsers.boolean, "count live connections to STS"),
    Field("audit.vpc_endpoints", parsers.boolean, "confirm the VPC endpoint via EC2 API"),
    Field(
        "metrics.histogram_phases",
        parsers.histogram_phases,
        "request phases with a latency histogram per endpoint",
    ),
    Field(
        "vpce_dns_names",
        parsers.listing(parsers.vpce_name),
        "STS endpoints' regional vpce DNS names; their zonal names give each ENI's AZ",
    ),
    Field(
        "host.availability_zone",
        parsers.matching(r"[a-z0-9-]{1,64}", "us-east-2a"),
        "this host's AZ (default: from IMDS)",
    ),
    Field(
        "host.vpc_id",
        parsers.matching(r"vpc-[0-9a-f]{8,17}", "vpc-0a1b2c3d4e5f60718"),
        "this host's VPC id (default: from IMDS)",
    ),
    Field(
        "host.account_id",
        parsers.matching(r"\d{12}", "123456789012"),
        "this host's AWS account id (default: from IMDS)",
    ),
)
_BY_PATH = {f.path: f for f in FIELDS}
_TABLES = {p.split(".")[0] for p in _BY_PATH if "." in p} | {"expect"}


def _flatten(doc: Mapping[str, Any], source: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "expect":
            flat["expect"] = value
        elif key in _TABLES and isinstance(value, Mapping):
            for sub, v in value.items():
                flat[f"{key}.{sub}"] = v
        elif key in _TABLES:
            raise ConfigError(key, value, "must be a table", source)
        else:
            flat[key] = value
    for path, value in flat.items():
        if path not in _BY_PATH:
            # A misspelt table ([endpoint]) is closest to the table, not to one of its keys.
            names = [*_BY_PATH, *_TABLES] if isinstance(value, Mapping) else list(_BY_PATH)
            close = difflib.get_close_matches(path, names, n=1)
            name = f"the [{close[0]}] table" if close and close[0] in _TABLES else None
            hint = f" (did you mean {name or repr(close[0])}?)" if close else ""
            raise ConfigError(path, value, f"unknown setting{hint}", source, echo=False)
    return flat


def read_file(path: str) -> dict[str, Any]:
    """The file's settings, flattened to dotted paths.  Raises ConfigError."""
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("config", path, "file not found") from None
    except PermissionError:
        raise ConfigError("config", path, "file not readable (permission denied)") from None
    except IsADirectoryError:
        raise ConfigError("config", path, "is a directory, not a file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("config", path, f"invalid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError("config", path, "invalid TOML: not UTF-8") from None
    return _flatten(doc, path)


def read_env(environ: Mapping[str, str]) -> dict[str, Any]:
    known = {f.env: f.path for f in FIELDS}
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX) and name != ENV_PREFIX + "CONFIG":
            if name not in known:
                close = difflib.get_close_matches(name, list(known), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(name, value, f"unknown environment setting{hint}", "environment")
            out[known[name]] = value
    return out


METADATA_DISABLED = "AWS_EC2_METADATA_DISABLED"


def metadata_disabled(environ: Mapping[str, str]) -> bool:
    """botocore's IMDS switch, honoured so the agent never asks where the SDK won't."""
    return environ.get(METADATA_DISABLED, "").strip().lower() == "true"


def imds_off_because(environ: Mapping[str, str]) -> str:
    """Why IMDS is not asked, for reports: the variable when it is set, else the setting."""
    why = f"{METADATA_DISABLED}=true" if metadata_disabled(environ) else "imds.enabled = false"
    return f"{why}; using the configured region and VPC CIDRs"


@dataclass
class Loaded:
    settings: Settings
    sources: dict[str, str] = field(default_factory=dict)  # path -> file|environment|flag


#: PEM blocks OpenSSL takes from a CA file; without one it loads nothing and fails the context.
_PEM_TRUST = (b"-----BEGIN CERTIFICATE-----", b"-----BEGIN TRUSTED CERTIFICATE-----")
_CA_SCAN_BYTES = 16 << 20
_PEM_BLOCK = re.compile(rb"-----BEGIN (?:TRUSTED )?CERTIFICATE-----(.*?)-----END", re.DOTALL)


def ca_bundle_problem(path: str) -> str | None:
    """Why `path` cannot be a CA bundle, in a few words; None when it may be one.

    Cheaper than building a TLS context (about a MiB in OpenSSL 3.0) just to
    check: a file without a PEM certificate, or with a mangled one, is what fails
    in practice (an empty file, a key, a DER certificate, a truncated copy, the
    wrong path under AWS_CA_BUNDLE).  A block that decodes but is no certificate
    is left to OpenSSL, when the probes' context is built.
    """
    try:
        if not os.path.isfile(path):
            return "is not a regular file" if os.path.exists(path) else "file not found"
        with open(path, "rb") as fh:
            head = fh.read(_CA_SCAN_BYTES)
    except OSError as e:
        return f"cannot be read: {e.strerror or e}"
    if not any(marker in head for marker in _PEM_TRUST):
        return "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    for block in _PEM_BLOCK.findall(head):
        try:
            base64.b64decode(b"".join(block.split()), validate=True)
        except binascii.Error:
            return "holds a PEM certificate whose base64 does not decode"
    return None


def build(
    file: str | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Loaded:
    """Merge the three sources over the defaults and validate every value."""
    environ = os.environ if environ is None else environ
    layers: list[tuple[str, dict[str, Any]]] = []
    if file:
        layers.append((file, read_file(file)))
    layers.append(("environment", read_env(environ)))
    layers.append(("flag", {k: v for k, v in (flags or {}).items() if v is not None}))
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, layer in layers:
        for path, raw in layer.items():
            f = _BY_PATH.get(path)
            if f is None:
                raise ConfigError(path, raw, "unknown setting", source, echo=False)
            try:
                values[f.attr] = f.parse(raw)
            except ValueError as e:
                raise ConfigError(path, raw, str(e), _typed(f, source)) from None
            sources[path] = source
    settings = replace(Settings(), **values)
    if "timeout" not in sources and settings.timeout >= settings.interval / 2:
        # A short interval alone should just work: a round can spend a DNS timeout
        # and then an STS timeout, so the default shrinks to fit half the interval.
        settings = replace(settings, timeout=settings.interval / 2)
        sources["timeout"] = "default, shrunk to interval / 2"
    if settings.timeout >= settings.interval:
        # Both sides: the interval may come from elsewhere than the timeout (env over file).
        by = _typed(_BY_PATH["interval"], sources.get("interval", "default"))
        raise ConfigError(
            "timeout",
            settings.timeout,
            f"must be less than interval, which is {settings.interval!r} (from {by})",
            _typed(_BY_PATH["timeout"], sources.get("timeout", "default")),
        )
    if settings.ca_bundle:
        problem = ca_bundle_problem(settings.ca_bundle)
        if problem:
            raise ConfigError("ca_bundle", settings.ca_bundle, problem, sources["ca_bundle"])
    elif environ.get("AWS_CA_BUNDLE"):
        # boto3's own setting: one it cannot load fails boto3 too, which is a finding about
        # the host (SDK_CA_BUNDLE_UNUSABLE), so the probes keep botocore's default instead.
        problem = ca_bundle_problem(environ["AWS_CA_BUNDLE"])
        if problem is None:
            settings = replace(settings, ca_bundle=environ["AWS_CA_BUNDLE"])
            sources["ca_bundle"] = "environment AWS_CA_BUNDLE"
        else:
            sources["ca_bundle"] = f"default; AWS_CA_BUNDLE {problem}"
    if settings.imds_enabled and metadata_disabled(environ):
        settings = replace(settings, imds_enabled=False)
        sources["imds.enabled"] = f"environment {METADATA_DISABLED}=true"
    if "imds.address" not in sources and settings.imds_enabled:
        # Only when IMDS is asked: botocore too ignores its endpoint once IMDS is off.
        derived = _imds_address_from_env(environ)
        if derived is not None:
            settings = replace(settings, imds_address=derived[0])
            sources["imds.address"] = f"environment {derived[1]}"
    return Loaded(settings, sources)


def _typed(f: Field, source: str) -> str:
    """Where a value came from, naming the variable or flag the user actually typed."""
    where = {"environment": f"environment {f.env}", "flag": f"flag {f.flag}"}
    return where.get(source, source)


def _imds_address_from_env(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """botocore's IMDS endpoint variables, so discovery asks where the SDK asks.

    On an IPv6-only instance the SDK is told AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6
    (or a full endpoint); an agent still asking 169.254.169.254 would only time out.
    """
    var = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
    url = environ.get(var, "").strip()
    if url:
        try:  # urlsplit itself raises on an unclosed bracket, .port on a port past 65535
            parts = urlsplit(url if "://" in url else f"http://{url}")
            host, port = parts.hostname, parts.port
            if not host:
                raise ValueError(url)
            address = join_host_port(host, port) if port else bracketed(host)
            parsers.imds_address(address)  # "not a url" has a hostname, but names no host
        except ValueError:
            raise ConfigError(
                "imds.address", url, "is not a URL like http://[fd00:ec2::254]", var
            ) from None
        return address, var
    if environ.get(f"{var}_MODE", "").strip().lower() == "ipv6":
        return "fd00:ec2::254", f"{var}_MODE=IPv6"
    return None


def as_toml_dict(settings: Settings) -> dict[str, Any]:
    """The effective settings as nested plain values, for `config check`."""
    out: dict[str, Any] = {}
    by_attr = {f.attr: f for f in FIELDS}
    for fl in fields(settings):
        value = getattr(settings, fl.name)
        path = by_attr[fl.name].path
        if fl.name == "expect":
            value = dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        head, _, tail = path.partition(".")
        if tail:
            out.setdefault(head, {})[tail] = value
        else:
            out[head] = value
    return out
