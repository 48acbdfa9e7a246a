"""Parsers for setting values: raw TOML, environment or flag input in, typed value out.

Each raises ValueError saying what the value must be; `config.build` adds the
field, the value and where it came from, so the user sees one line.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any, get_args

from agent import addresses
from agent.regions import validate_region
from agent.results import EndpointKind, Phases
from agent.sts_hosts import REGIONAL_VPCE, zonal_names

EXPECT_VALUES = ("vpce", "private", "public", "any")
ENDPOINT_KINDS: tuple[str, ...] = get_args(EndpointKind)


def boolean(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(v, str) and v.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def positive(kind: type) -> Callable[[Any], Any]:
    """A number above 0.  For int, a TOML float is refused as int("443.5") refuses text:
    int(443.5) would silently truncate, so the file and the environment would disagree."""
    what = "whole number" if kind is int else kind.__name__

    def parse(v: Any) -> Any:
        if (
            isinstance(v, bool)
            or not isinstance(v, int | float | str)
            or (kind is int and isinstance(v, float))
        ):
            raise ValueError(f"must be a positive {what}")
        try:
            n = kind(v)
        except ValueError:
            raise ValueError(f"must be a positive {what}") from None
        if not math.isfinite(n) or n <= 0:  # NaN passes `n <= 0`, and probes in a tight loop
            raise ValueError(f"must be a positive {what}")
        return n

    return parse


#: The longest duration a setting may hold: a day between rounds is already no watch at all,
#: and a timed wait rejects values past about 292 years (OverflowError in the scheduler).
MOST_SECONDS = 86400.0


def seconds(v: Any) -> float:
    n = float(positive(float)(v))
    if n > MOST_SECONDS:
        raise ValueError(f"must be a number of seconds no greater than {MOST_SECONDS:g}")
    return n


#: The shortest timeout: below it no DNS answer or TLS handshake arrives, and each round is
#: only failures.  The shortest interval is twice that, so a timeout left unset, which shrinks
#: to interval / 2, is never below the shortest timeout.
LEAST_TIMEOUT = 0.1
LEAST_INTERVAL = 2 * LEAST_TIMEOUT


def _at_least(least: float) -> Callable[[Any], float]:
    def parse(v: Any) -> float:
        n = seconds(v)
        if n < least:
            raise ValueError(f"must be at least {least:g} seconds")
        return n

    return parse


#: Seconds between rounds: 1e-9 passed `positive` and probed STS in a busy loop.
interval = _at_least(LEAST_INTERVAL)
#: Seconds per probe; 5e-10 (half of such an interval) timed every probe out at once.
timeout = _at_least(LEAST_TIMEOUT)


def port(v: Any) -> int:
    n = positive(int)(v)
    if n > 65535:
        raise ValueError("must be a port between 1 and 65535")
    return int(n)


#: The most addresses probed (and exported as `address` label values) per endpoint.  An
#: interface endpoint has an ENI per AZ, each with an IPv4 and perhaps an IPv6 address, so
#: 64 holds any real one; past it the cap no longer bounds cardinality.
MOST_ADDRESSES = 64


def address_cap(v: Any) -> int:
    n = int(positive(int)(v))
    if n > MOST_ADDRESSES:
        raise ValueError(
            f"must be at most {MOST_ADDRESSES}: each address adds series per endpoint, "
            "and this cap is what bounds them"
        )
    return n


def choice(*allowed: str) -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        if not isinstance(v, str) or v.lower() not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return v.lower()

    return parse


def text(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError("must be a non-empty string")
    return v.strip()


def optional_path(v: Any) -> str | None:
    if v is None or v == "":
        return None
    return text(v)


def listing(item: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, ...]]:
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


def cidr(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError("must be a CIDR such as 10.0.0.0/16")
    try:
        return str(ipaddress.ip_network(v.strip(), strict=False))
    except ValueError:
        raise ValueError("must be a CIDR such as 10.0.0.0/16") from None


def region(v: Any) -> str:
    return validate_region(text(v))


def hostname(v: Any) -> str:
    s = text(v).lower().rstrip(".")
    if not addresses.is_hostname(s):
        raise ValueError("must be a DNS hostname")
    return s


def resolver(v: Any) -> str:
    s = text(v)
    if s != "system":
        _problem_of(lambda: addresses.parse_ip_port(s, "resolvers", 53))
    return s


def resolvers(v: Any) -> tuple[str, ...]:
    """A non-empty resolver list: an empty one would ask nobody and still report healthy."""
    out: tuple[str, ...] = listing(resolver)(v)
    if not out:
        raise ValueError("must not be empty; omit it to use the system's resolvers ('system')")
    return out


def imds_address(v: Any) -> str:
    s = text(v)
    _problem_of(lambda: addresses.parse_service(s, "imds.address", 80))
    return s


def listen_address(v: Any) -> str:
    s = text(v)
    _problem_of(lambda: addresses.parse_listen(s, "web.listen_address"))
    return s


def _problem_of(parse: Callable[[], object]) -> None:
    """Run an address parser, keeping only its problem: `build` names field and value."""
    try:
        parse()
    except addresses.AddressError as e:
        raise ValueError(e.problem) from None


def expect(v: Any) -> tuple[tuple[str, str], ...]:
    """Endpoint kind or hostname -> path.  A key given twice is refused, not last-one-wins:
    `regional=vpce,regional=public` would otherwise check only the second."""
    pairs: list[tuple[Any, Any]] = []
    if isinstance(v, str):
        for part in (p.strip() for p in v.split(",") if p.strip()):
            k, sep, val = part.partition("=")
            if not sep:
                raise ValueError("must be key=path pairs such as regional=vpce")
            pairs.append((k.strip(), val.strip()))
    elif isinstance(v, Mapping):
        pairs = list(v.items())
    else:
        raise ValueError("must be a table of endpoint = path")
    out: dict[str, str] = {}
    for k, val in pairs:
        if not isinstance(val, str) or val.lower() not in EXPECT_VALUES:
            raise ValueError(f"{k} = {val!r} is not one of {', '.join(EXPECT_VALUES)}")
        key = _expect_key(k)  # hostnames compare lower-cased, without a trailing dot
        if key in out:
            raise ValueError(f"{key!r} is given twice")
        out[key] = val.lower()
    return tuple(out.items())


def _expect_key(k: str) -> str:
    if k in ENDPOINT_KINDS:
        return k
    try:
        return hostname(k)
    except ValueError:
        kinds = ", ".join(ENDPOINT_KINDS)
        raise ValueError(f"{k!r} is neither an endpoint kind ({kinds}) nor a hostname") from None


def _phase(v: Any) -> str:
    names = [f.name for f in fields(Phases)]
    if not isinstance(v, str) or v.strip().lower() not in names:
        raise ValueError(f"must be one of {', '.join(names)}")
    return v.strip().lower()


def histogram_phases(v: Any) -> tuple[str, ...]:
    """Any phases, but always `total`: the latency SLO alert (StsLatencyOverSlo) reads it."""
    phases: tuple[str, ...] = listing(_phase)(v)
    if "total" not in phases:
        raise ValueError('must include "total" (the latency SLO alert reads phase="total")')
    return phases


def vpce_name(v: Any) -> str:
    s = hostname(v)
    if not REGIONAL_VPCE.fullmatch(s):
        raise ValueError(
            "must be an endpoint's regional DNS name, "
            "vpce-<id>-<suffix>.sts.<region>.vpce.amazonaws.com"
        )
    if not zonal_names(s, None):
        raise ValueError("names a region too long for its zonal names to be DNS names")
    return s


def matching(pattern: str, example: str) -> Callable[[Any], str | None]:
    def parse(v: Any) -> str | None:
        if v is None or v == "":
            return None
        if not isinstance(v, str) or not re.fullmatch(pattern, v.strip()):
            raise ValueError(f"must look like {example}")
        return v.strip()

    return parse
