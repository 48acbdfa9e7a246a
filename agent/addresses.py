"""IP addresses and `host:port` text: one grammar for every setting, URL and message.

Wherever a host and a port are read the forms are `host`, `host:port`, `[v6]`,
`[v6]:port` and, where the port may be left out, a bare IPv6 address.  An IPv6
address followed by a port always goes in brackets: `:::9472` or `::1:80` are
refused rather than guessed at.  Ports are 1-65535; 0 ("any free port") only
where a caller asks for it.  Errors name the setting and the value on one line.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

_HOSTNAME = re.compile(r"(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
_PORT = re.compile(r"[0-9]{1,5}")


class AddressError(ValueError):
    """`value` is not an address of the form `field` takes.  str() is one line."""

    def __init__(self, field: str, value: str, problem: str) -> None:
        self.field = field
        self.value = value
        self.problem = problem
        super().__init__(f"{field}: {problem}, got {value!r}")


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def blocks(address: str) -> bool:
    """0.0.0.0 or :: for a name (a hosts-file block): dialling it reaches this host itself."""
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


def is_hostname(text: str) -> bool:
    """A lower-case DNS name of two or more labels, without the trailing dot."""
    return _HOSTNAME.fullmatch(text) is not None


def bracketed(host: str) -> str:
    """`host` as written before `:port` or in a URL: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def join_host_port(host: str, port: int) -> str:
    return f"{bracketed(host)}:{port}"


def split_host_port(
    text: str,
    field: str,
    default_port: int | None = None,
    *,
    empty_host: bool = False,
    port_zero: bool = False,
) -> tuple[str, int]:
    """(host, port) of `text`, the host without brackets and otherwise unchecked.

    Without `default_port` the port is required; `empty_host` allows `:PORT`
    (every interface) and `port_zero` allows port 0.
    """
    value = text.strip()
    forms = _forms(default_port is None, empty_host)
    if "://" in value:
        # Else `http://169.254.169.254` reads as host "http" and port "//169…": "bad port".
        raise AddressError(
            field, text, f"a URL was given where {forms} is expected{_as_host(value)}"
        )
    port_text: str | None = None
    if value.startswith("["):
        host, closed, rest = value[1:].partition("]")
        if not closed or not _is_ipv6(host):
            raise AddressError(field, text, "brackets must hold an IPv6 address, as [v6]:PORT")
        if rest and not rest.startswith(":"):
            raise AddressError(field, text, f"must be {forms}")
        port_text = rest[1:] if rest else None
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
    elif ":" in value:
        if default_port is None or not _is_ipv6(value):
            raise AddressError(field, text, "an IPv6 address with a port goes in brackets")
        host = value
    else:
        host = value
    if not host and not empty_host:
        raise AddressError(field, text, f"the host is empty; must be {forms}")
    if port_text is None:
        if default_port is None:
            raise AddressError(field, text, f"must be {forms}")
        return host, default_port
    lowest = 0 if port_zero else 1
    if not _PORT.fullmatch(port_text) or not lowest <= int(port_text) <= 65535:
        raise AddressError(field, text, f"the port must be between {lowest} and 65535")
    return host, int(port_text)


def parse_ip_port(text: str, field: str, default_port: int) -> tuple[str, int]:
    """An IP address with an optional port (a DNS server): the address in canonical form."""
    host, port = split_host_port(text, field, default_port)
    if not is_ip(host):
        raise AddressError(field, text, "must be an IP address with an optional :port")
    return str(ipaddress.ip_address(host)), port


def parse_service(text: str, field: str, default_port: int) -> tuple[str, int]:
    """An IP address or DNS name with an optional port (a service such as IMDS)."""
    host, port = split_host_port(text, field, default_port)
    if not is_ip(host) and not is_hostname(host.lower().rstrip(".")):
        raise AddressError(field, text, "the host must be an IP address or a DNS name")
    return host, port


def parse_listen(text: str, field: str, *, port_zero: bool = False) -> tuple[str, int]:
    """Where to listen: an IP address, localhost or nothing (every interface), and a port."""
    host, port = split_host_port(text, field, empty_host=True, port_zero=port_zero)
    if host and host != "localhost" and not is_ip(host):
        raise AddressError(field, text, "the host must be an IP address, localhost, or empty")
    return host, port


def _as_host(url: str) -> str:
    """How to write `url`'s host and port instead, as advice; "" when it names none."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return ""
    if not host:
        return ""
    return f" (write {join_host_port(host, port) if port else bracketed(host)!r})"


def _is_ipv6(text: str) -> bool:
    return ":" in text and is_ip(text)  # only an IPv6 address has a colon


def _forms(port_required: bool, empty_host: bool) -> str:
    if not port_required:
        return "HOST, HOST:PORT or [v6]:PORT"
    return "HOST:PORT, :PORT or [v6]:PORT" if empty_host else "HOST:PORT or [v6]:PORT"
