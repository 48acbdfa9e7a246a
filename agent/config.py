"""Settings: one schema feeds the TOML file, `STS_AGENT_*` variables and CLI flags.

Precedence is flag > environment > file > discovered > default.  Discovered
values (region, VPC CIDRs) are filled in later by discovery, only where the
user left the setting empty.  Every error names the field and the bad value
on one line, so a typo never turns into a silent default.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from agent.results import Endpoint

EXPECT_VALUES = ("vpce", "private", "public", "any")
DEFAULT_PORT = 9472
ENV_PREFIX = "STS_AGENT_"


class ConfigError(ValueError):
    """A setting is wrong.  str() is the one line shown to the user."""

    def __init__(self, field_path: str, value: object, problem: str, source: str = "") -> None:
        self.field_path = field_path
        self.value = value
        self.problem = problem
        self.source = source
        where = f" (from {source})" if source else ""
        super().__init__(f"{field_path}: {problem}, got {value!r}{where}")


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

    def expectation_for(self, endpoint_kind: str, hostname: str) -> str | None:
        table = dict(self.expect)
        return table.get(hostname) or table.get(endpoint_kind)

    def endpoints(self, region: str | None) -> tuple[Endpoint, ...]:
        """The STS hostnames to watch for one region, in a stable order."""
        out: list[Endpoint] = []

        def add(host: str, kind: Any, signing: str) -> None:
            if all(e.hostname != host for e in out):
                out.append(Endpoint(host, kind, signing, self.expectation_for(kind, host)))

        if region:
            if self.endpoints_regional:
                add(f"sts.{region}.amazonaws.com", "regional", region)
            if self.endpoints_fips:
                add(f"sts-fips.{region}.amazonaws.com", "fips", region)
            if self.endpoints_dualstack:
                add(f"sts.{region}.api.aws", "dualstack", region)
        if self.endpoints_global:
            add("sts.amazonaws.com", "global", "us-east-1")
        for host in self.endpoints_extra:
            add(host, "custom", _region_in_hostname(host) or region or "us-east-1")
        return tuple(out)


def _region_in_hostname(host: str) -> str | None:
    m = re.search(r"\.sts(?:-fips)?\.([a-z0-9-]+)\.(?:vpce\.)?amazonaws\.com$", host)
    if m is None:
        m = re.match(r"sts(?:-fips)?\.([a-z]{2}(?:-[a-z]+)+-\d+)\.", host)
    return m.group(1) if m else None


# --- value parsers: each takes raw input (TOML value or string) and returns the typed value


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(v, str) and v.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _positive(kind: type) -> Callable[[Any], Any]:
    def parse(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int | float | str):
            raise ValueError(f"must be a positive {kind.__name__}")
        try:
            n = kind(v)
        except ValueError:
            raise ValueError(f"must be a positive {kind.__name__}") from None
        if n <= 0:
            raise ValueError(f"must be a positive {kind.__name__}")
        return n

    return parse


def _port(v: Any) -> int:
    n = _positive(int)(v)
    if n > 65535:
        raise ValueError("must be a port between 1 and 65535")
    return int(n)


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        if not isinstance(v, str) or v.lower() not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return v.lower()

    return parse


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError("must be a non-empty string")
    return v.strip()


def _opt_path(v: Any) -> str | None:
    if v is None or v == "":
        return None
    return _str(v)


def _list(item: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, ...]]:
    def parse(v: Any) -> tuple[Any, ...]:
        if isinstance(v, str):
            v = [p for p in (s.strip() for s in v.split(",")) if p]
        if not isinstance(v, list | tuple):
            raise ValueError("must be a list")
        out = []
        for i, x in enumerate(v):
            try:
                out.append(item(x))
            except ValueError as e:
                raise ValueError(f"item {i} {x!r} {e}") from None
        return tuple(dict.fromkeys(out))

    return parse


def _cidr(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError("must be a CIDR such as 10.0.0.0/16")
    try:
        return str(ipaddress.ip_network(v.strip(), strict=False))
    except ValueError:
        raise ValueError("must be a CIDR such as 10.0.0.0/16") from None


@lru_cache(maxsize=1)
def known_regions() -> frozenset[str]:
    """Every region botocore's bundled endpoint data knows, across partitions."""
    import botocore.session

    sess = botocore.session.get_session()
    regions: set[str] = set()
    for partition in sess.get_available_partitions():
        regions.update(sess.get_available_regions("sts", partition_name=partition))
        regions.update(sess.get_available_regions("ec2", partition_name=partition))
    return frozenset(regions)


# us-east-2, us-gov-west-1, eu-isoe-west-1, ap-southeast-5: the shape of every region name.
_REGION_SHAPE = re.compile(r"[a-z]{2,4}(?:-[a-z]+)+-\d{1,2}")


def region_shaped(v: Any) -> str:
    """`v` normalised if it has the shape of a region name, else ValueError.

    The check for values read at run time (environment, IMDS): it keeps odd
    characters out of hostnames and labels without loading botocore's endpoint
    data, which would stay resident in the daemon (about 27 MiB).
    """
    name = _str(v).lower()
    if not _REGION_SHAPE.fullmatch(name):
        raise ValueError("is not a region name (such as us-east-2)")
    return name


def validate_region(v: Any) -> str:
    name = _str(v).lower()
    known = known_regions()
    if name not in known:
        close = difflib.get_close_matches(name, sorted(known), n=3)
        # Offer every equally close region: us-eest-2 is as near us-west-2 as us-east-2.
        best = [c for c in close if _ratio(name, c) == _ratio(name, close[0])]
        hint = f" (did you mean {' or '.join(map(repr, sorted(best)))}?)" if best else ""
        raise ValueError(f"is not a region botocore knows{hint}")
    return name


def _ratio(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()


def _resolver(v: Any) -> str:
    s = _str(v)
    if s == "system":
        return s
    parse_resolver_spec(s)
    return s


def parse_resolver_spec(spec: str) -> tuple[str, int]:
    """`address`, `address:port`, `[v6]:port` or bare v6 -> (address, port)."""
    host, port = spec, 53
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError("must be address[:port]")
            port = _port(rest[1:])
    elif spec.count(":") == 1:
        host, p = spec.split(":")
        port = _port(p)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError("must be an IP address with an optional :port") from None
    return host, port


def _hostname(v: Any) -> str:
    s = _str(v).lower().rstrip(".")
    if not re.fullmatch(r"(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}", s):
        raise ValueError("must be a DNS hostname")
    return s


def _expect(v: Any) -> tuple[tuple[str, str], ...]:
    if isinstance(v, str):
        pairs: dict[str, Any] = {}
        for part in (p.strip() for p in v.split(",") if p.strip()):
            k, sep, val = part.partition("=")
            if not sep:
                raise ValueError("must be key=path pairs such as regional=vpce")
            pairs[k.strip()] = val.strip()
        v = pairs
    if not isinstance(v, Mapping):
        raise ValueError("must be a table of endpoint = path")
    out = []
    for k, val in v.items():
        if not isinstance(val, str) or val.lower() not in EXPECT_VALUES:
            raise ValueError(f"{k!r} must be one of {', '.join(EXPECT_VALUES)} (got {val!r})")
        key = k if k in ("regional", "global", "fips", "dualstack", "custom") else _hostname(k)
        out.append((key, val.lower()))
    return tuple(out)


def _imds_address(v: Any) -> str:
    from agent.discovery.imds import parse_address

    s = _str(v)
    try:
        host, _ = parse_address(s)
        if not _is_ip(host):
            _hostname(host)
    except ValueError:
        raise ValueError("must be HOST or HOST:PORT") from None
    return s


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _listen(v: Any) -> str:
    s = _str(v)
    host, sep, port = s.rpartition(":")
    if not sep:
        raise ValueError("must be HOST:PORT or :PORT")
    try:
        _port(port)
    except ValueError:
        raise ValueError("port must be between 1 and 65535") from None
    host = host.strip("[]")
    if host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost":
                raise ValueError("host must be an IP address, localhost, or empty") from None
    return s


def _phase(v: Any) -> str:
    from dataclasses import fields as dc_fields

    from agent.results import Phases

    names = [f.name for f in dc_fields(Phases)]
    if not isinstance(v, str) or v.strip().lower() not in names:
        raise ValueError(f"must be one of {', '.join(names)}")
    return v.strip().lower()


def _histogram_phases(v: Any) -> tuple[str, ...]:
    """Any phases, but always `total`: the latency SLO alert (StsLatencyOverSlo) reads it."""
    phases: tuple[str, ...] = _list(_phase)(v)
    if "total" not in phases:
        raise ValueError('must include "total" (the latency SLO alert reads phase="total")')
    return phases


def _vpce_name(v: Any) -> str:
    from agent.discovery.zones import REGIONAL_VPCE, zonal_names

    s = _hostname(v)
    if not REGIONAL_VPCE.fullmatch(s):
        raise ValueError(
            "must be an endpoint's regional DNS name, "
            "vpce-<id>-<suffix>.sts.<region>.vpce.amazonaws.com"
        )
    if not zonal_names(s, None):
        raise ValueError("names a region too long for its zonal names to be DNS names")
    return s


def _matching(pattern: str, example: str) -> Callable[[Any], str | None]:
    def parse(v: Any) -> str | None:
        if v is None or v == "":
            return None
        if not isinstance(v, str) or not re.fullmatch(pattern, v.strip()):
            raise ValueError(f"must look like {example}")
        return v.strip()

    return parse


@dataclass(frozen=True)
class Field:
    path: str  # dotted TOML path
    attr: str  # Settings attribute
    parse: Callable[[Any], Any]
    help: str
    flag_name: str | None = None  # where exporter habit dictates another spelling

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.path.replace(".", "_").upper()

    @property
    def flag(self) -> str:
        return self.flag_name or "--" + self.path.replace("_", "-")


FIELDS: tuple[Field, ...] = (
    Field("regions", "regions", _list(validate_region), "regions to watch (default: discovered)"),
    Field("interval", "interval", _positive(float), "seconds between probe rounds"),
    Field("timeout", "timeout", _positive(float), "per-probe timeout in seconds"),
    Field("port", "port", _port, "STS TCP port"),
    Field("credentials", "credentials", _choice("chain", "none"), "chain or none (unsigned)"),
    Field("ca_bundle", "ca_bundle", _opt_path, "CA bundle for STS TLS (default AWS_CA_BUNDLE)"),
    Field("vpc_cidrs", "vpc_cidrs", _list(_cidr), "this VPC's CIDRs (default: from IMDS)"),
    Field("resolvers", "resolvers", _list(_resolver), "'system' or address[:port] list"),
    Field("resolv_conf", "resolv_conf", _str, "resolv.conf to read for 'system'"),
    Field("hosts_file", "hosts_file", _opt_path, "hosts file checked for pinned STS names"),
    Field("nsswitch_conf", "nsswitch_conf", _str, "says whether the hosts file precedes DNS"),
    Field(
        "max_addresses_per_endpoint",
        "max_addresses_per_endpoint",
        _positive(int),
        "cap on probed addresses (and label values) per endpoint",
    ),
    Field("endpoints.regional", "endpoints_regional", _bool, "watch sts.<region>.amazonaws.com"),
    Field("endpoints.global", "endpoints_global", _bool, "watch sts.amazonaws.com"),
    Field("endpoints.fips", "endpoints_fips", _bool, "watch sts-fips.<region>.amazonaws.com"),
    Field("endpoints.dualstack", "endpoints_dualstack", _bool, "watch sts.<region>.api.aws"),
    Field("endpoints.extra", "endpoints_extra", _list(_hostname), "more hostnames to watch"),
    Field("expect", "expect", _expect, "expected path per endpoint kind or hostname"),
    Field("imds.enabled", "imds_enabled", _bool, "ask IMDSv2 for region and VPC"),
    Field("imds.address", "imds_address", _imds_address, "IMDS address (host or host:port)"),
    Field("imds.timeout", "imds_timeout", _positive(float), "total IMDS time budget, seconds"),
    Field(
        "discovery_interval", "discovery_interval", _positive(float), "seconds between rediscovery"
    ),
    Field("cert_warning_days", "cert_warning_days", _positive(float), "warn this early on certs"),
    Field("web.listen_address", "web_listen_address", _listen, "HOST:PORT for /metrics"),
    Field(
        "web.config_file",
        "web_config_file",
        _opt_path,
        "web config YAML (TLS, basic auth)",
        "--web.config.file",
    ),
    Field("web.probe_rate", "web_probe_rate", _positive(float), "new /probe rounds per second"),
    Field("web.probe_remote", "web_probe_remote", _bool, "/probe from other hosts without auth"),
    Field("log.format", "log_format", _choice("plain", "json"), "plain or json"),
    Field("log.level", "log_level", _choice("debug", "info", "warning", "error"), "log level"),
    Field("audit.processes", "audit_processes", _bool, "inspect other processes' AWS settings"),
    Field("audit.connections", "audit_connections", _bool, "count live connections to STS"),
    Field(
        "audit.vpc_endpoints", "audit_vpc_endpoints", _bool, "confirm the VPC endpoint via EC2 API"
    ),
    Field(
        "metrics.histogram_phases",
        "metrics_histogram_phases",
        _histogram_phases,
        "request phases with a latency histogram per endpoint",
    ),
    Field(
        "vpce_dns_names",
        "vpce_dns_names",
        _list(_vpce_name),
        "STS endpoints' regional vpce DNS names; their zonal names give each ENI's AZ",
    ),
    Field(
        "host.availability_zone",
        "host_availability_zone",
        _matching(r"[a-z0-9-]{1,64}", "us-east-2a"),
        "this host's AZ (default: from IMDS)",
    ),
    Field(
        "host.vpc_id",
        "host_vpc_id",
        _matching(r"vpc-[0-9a-f]{8,17}", "vpc-0a1b2c3d4e5f60718"),
        "this host's VPC id (default: from IMDS)",
    ),
    Field(
        "host.account_id",
        "host_account_id",
        _matching(r"\d{12}", "123456789012"),
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
            close = difflib.get_close_matches(path, list(_BY_PATH), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(path, value, f"unknown setting{hint}", source)
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


@dataclass
class Loaded:
    settings: Settings
    sources: dict[str, str] = field(default_factory=dict)  # path -> file|environment|flag


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
                raise ConfigError(path, raw, "unknown setting", source)
            try:
                values[f.attr] = f.parse(raw)
            except ValueError as e:
                # Name the variable or flag the user actually typed, not only the field.
                where = {"environment": f"environment {f.env}", "flag": f"flag {f.flag}"}
                raise ConfigError(path, raw, str(e), where.get(source, source)) from None
            sources[path] = source
    settings = replace(Settings(), **values)
    if "timeout" not in sources and settings.timeout >= settings.interval / 2:
        # A short interval alone should just work: a round can spend a DNS timeout
        # and then an STS timeout, so the default shrinks to fit half the interval.
        settings = replace(settings, timeout=settings.interval / 2)
        sources["timeout"] = "default, shrunk to interval / 2"
    if settings.timeout >= settings.interval:
        src = sources.get("timeout") or sources.get("interval") or "defaults"
        raise ConfigError("timeout", settings.timeout, "must be less than interval", src)
    if settings.ca_bundle is None and environ.get("AWS_CA_BUNDLE"):
        settings = replace(settings, ca_bundle=environ["AWS_CA_BUNDLE"])
        sources["ca_bundle"] = "environment (AWS_CA_BUNDLE)"
    if settings.ca_bundle and not os.path.isfile(settings.ca_bundle):
        raise ConfigError("ca_bundle", settings.ca_bundle, "file not found", sources["ca_bundle"])
    if "imds.address" not in sources:
        derived = _imds_address_from_env(environ)
        if derived is not None:
            settings = replace(settings, imds_address=derived[0])
            sources["imds.address"] = f"environment ({derived[1]})"
    return Loaded(settings, sources)


def _imds_address_from_env(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """botocore's IMDS endpoint variables, so discovery asks where the SDK asks.

    On an IPv6-only instance the SDK is told AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6
    (or a full endpoint); an agent still asking 169.254.169.254 would only time out.
    """
    var = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
    url = environ.get(var, "").strip()
    if url:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        try:
            host, port = parts.hostname, parts.port
        except ValueError:
            host = None
        if not host:
            raise ConfigError("imds.address", url, "is not a URL like http://[fd00:ec2::254]", var)
        host = f"[{host}]" if ":" in host else host
        return (f"{host}:{port}" if port else host), var
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
