"""Connection audit: live TCP connections from this host to the STS addresses.

Resolving names shows where traffic would go; counting established
connections to those addresses shows where it actually goes, including from
programs the process audit cannot see.  The socket table itself is readable
by any user on Linux, so counts work without privileges; only the owning
process of another user's socket needs root (psutil then leaves pid empty),
so owner names are best effort and capped to keep output bounded.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import psutil

MAX_OWNERS_PER_GROUP = 10

Group = tuple[str, str]  # (endpoint kind, path)


@dataclass(frozen=True)
class ConnectionAudit:
    counts: dict[Group, int]  # every group in `known` appears, zero included
    owners: dict[Group, tuple[str, ...]]  # process names, sorted, at most 10 per group
    error: str | None = None


def normalise_ip(text: str) -> str:
    """Canonical text of an address, with IPv4-mapped IPv6 turned back into IPv4."""
    addr = ipaddress.ip_address(text)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def _process_name(pid: int, cache: dict[int, str | None]) -> str | None:
    if pid not in cache:
        try:
            cache[pid] = psutil.Process(pid).name()
        except psutil.Error:
            cache[pid] = None
    return cache[pid]


def count_connections(
    known: Mapping[str, tuple[str, str]], ports: Collection[int] = (443,)
) -> ConnectionAudit:
    """Count ESTABLISHED TCP connections to `known` addresses on `ports`, by group.

    Raises ValueError naming the key when `known` holds something that is not
    an IP address; failures to read the socket table come back in `error`.
    """
    table: dict[str, Group] = {}
    for ip, kind_path in known.items():
        try:
            table[normalise_ip(ip)] = kind_path
        except ValueError:
            raise ValueError(f"known: {ip!r} is not an IP address") from None
    counts: dict[Group, int] = dict.fromkeys(table.values(), 0)
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError) as exc:
        return ConnectionAudit(counts, {}, f"cannot read the socket table: {exc}".splitlines()[0])
    wanted_ports = frozenset(ports)
    names: dict[Group, set[str]] = {}
    cache: dict[int, str | None] = {}
    for conn in conns:
        if conn.status != psutil.CONN_ESTABLISHED or not conn.raddr:
            continue
        if conn.raddr.port not in wanted_ports:
            continue
        try:
            group = table.get(normalise_ip(conn.raddr.ip))
        except ValueError:
            continue
        if group is None:
            continue
        counts[group] += 1
        name = _process_name(conn.pid, cache) if conn.pid else None
        if name:
            names.setdefault(group, set()).add(name)
    owners = {g: tuple(sorted(n)[:MAX_OWNERS_PER_GROUP]) for g, n in names.items()}
    return ConnectionAudit(counts, owners)
