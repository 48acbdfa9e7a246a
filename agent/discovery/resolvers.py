"""Which DNS servers this host really asks, and which of them are Amazon's.

Private DNS for an STS VPC endpoint only works through the Amazon-provided
resolver, so the agent must look past systemd-resolved's loopback stub to the
upstream servers and recognise Amazon's resolver by every address it has.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence

from agent.addresses import parse_ip_port
from agent.results import Resolver

log = logging.getLogger(__name__)

SYSTEMD_UPSTREAM_CONF = "/run/systemd/resolve/resolv.conf"
SYSTEMD_STUBS = frozenset({"127.0.0.53", "127.0.0.54"})
AMAZON_LINK_LOCAL = frozenset(
    {ipaddress.ip_address("169.254.169.253"), ipaddress.ip_address("fd00:ec2::253")}
)
GLIBC_MAXNS = 3  # glibc ignores nameserver lines beyond the third


class ResolverConfigError(ValueError):
    """A resolver source is missing or wrong.  str() is the one line shown to the user."""


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except FileNotFoundError:
        raise ResolverConfigError(f"resolv_conf: {path}: file not found") from None
    except PermissionError:
        raise ResolverConfigError(
            f"resolv_conf: {path}: not readable (permission denied)"
        ) from None
    except IsADirectoryError:
        raise ResolverConfigError(f"resolv_conf: {path}: is a directory, not a file") from None
    except OSError as e:
        raise ResolverConfigError(f"resolv_conf: {path}: {e.strerror or e}") from None


def parse_nameservers(text: str, path: str = "resolv.conf") -> list[str]:
    """The nameserver addresses in resolv.conf syntax, zone ids stripped.

    Lines the C library would ignore are ignored here too (with a warning),
    so the list matches what the host actually uses.
    """
    out: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0] != "nameserver":
            continue
        if len(words) < 2:
            log.warning("%s:%d: nameserver line without an address ignored", path, lineno)
            continue
        raw = words[1]
        try:
            addr = str(ipaddress.ip_address(raw.split("%", 1)[0]))
        except ValueError:
            log.warning("%s:%d: nameserver %r is not an IP address; ignored", path, lineno, raw)
            continue
        if addr not in out:
            out.append(addr)
    return out


def is_amazon_provided(address: str, vpc_cidrs: Sequence[str]) -> bool:
    """True for the Amazon DNS resolver: its link-local addresses or VPC base + 2.

    Raises ValueError naming the value when a VPC CIDR is not a CIDR.
    """
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if ip in AMAZON_LINK_LOCAL:
        return True
    for cidr in vpc_cidrs:
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ValueError(f"vpc_cidrs: not a CIDR, got {cidr!r}") from None
        is_v4 = net.version == 4 and net.num_addresses > 2
        if is_v4 and ip == net.network_address + 2:
            return True
    return False


def system_resolvers(
    resolv_conf: str = "/etc/resolv.conf",
    vpc_cidrs: Sequence[str] = (),
    systemd_resolv_conf: str = SYSTEMD_UPSTREAM_CONF,
) -> tuple[Resolver, ...]:
    """The servers glibc would query, looking through systemd-resolved's stub.

    A missing upstream file keeps the stub: it is still what the host asks,
    and reporting it beats reporting nothing.
    """
    addrs = parse_nameservers(_read(resolv_conf), resolv_conf)
    if not addrs:
        log.warning("%s has no usable nameserver; glibc then asks 127.0.0.1", resolv_conf)
        addrs = ["127.0.0.1"]
    if len(addrs) > GLIBC_MAXNS:
        log.warning("%s: only the first %d nameservers are used", resolv_conf, GLIBC_MAXNS)
        addrs = addrs[:GLIBC_MAXNS]
    source = "resolv.conf"
    if len(addrs) == 1 and addrs[0] in SYSTEMD_STUBS:
        try:
            upstream = parse_nameservers(_read(systemd_resolv_conf), systemd_resolv_conf)
        except ResolverConfigError as e:
            log.info("systemd-resolved stub in use, upstreams unknown (%s)", e)
            upstream = []
        upstream = [a for a in upstream if a not in SYSTEMD_STUBS]
        if upstream:
            addrs, source = upstream, "systemd-resolved"
    return tuple(Resolver(a, 53, is_amazon_provided(a, vpc_cidrs), source) for a in addrs)


def resolvers_from_specs(
    specs: Sequence[str],
    resolv_conf: str = "/etc/resolv.conf",
    vpc_cidrs: Sequence[str] = (),
    systemd_resolv_conf: str = SYSTEMD_UPSTREAM_CONF,
) -> tuple[Resolver, ...]:
    """Expand the `resolvers` setting ("system" or address[:port]) into records."""
    out: dict[tuple[str, int], Resolver] = {}
    for spec in specs:
        if spec.strip() == "system":
            found = system_resolvers(resolv_conf, vpc_cidrs, systemd_resolv_conf)
        else:
            try:
                addr, port = parse_ip_port(spec, "resolvers", 53)
            except ValueError as e:
                raise ResolverConfigError(str(e)) from None
            found = (Resolver(addr, port, is_amazon_provided(addr, vpc_cidrs), "config"),)
        for r in found:
            out.setdefault((r.address, r.port), r)
    return tuple(out.values())
