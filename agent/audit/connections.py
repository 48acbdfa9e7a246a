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
import logging
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass

import psutil

from agent.audit import sockdiag

log = logging.getLogger("agent.audit")

MAX_OWNERS_PER_GROUP = 10
# Share of one CPU the per-round audit may use.  Even asked through sock_diag the kernel
# walks its whole connection hash (about 0.2 µs a socket), so on a host with tens of
# thousands of sockets the audit runs less often than every round, never above this.
DUTY = 0.002

Group = tuple[str, str]  # (endpoint kind, path)


@dataclass(frozen=True)
class ConnectionAudit:
    counts: dict[Group, int]  # every group in `known` appears, zero included
    owners: dict[Group, tuple[str, ...]]  # process names, sorted, at most 10 per group
    error: str | None = None
    source: str = "psutil"  # what read the socket table: netlink, proc or psutil

    @property
    def labelled_counts(self) -> dict[str, int]:
        """Counts by `kind/path`, the name `check` and its JSON give a group."""
        return {"/".join(g): n for g, n in self.counts.items()}

    @property
    def labelled_owners(self) -> dict[str, tuple[str, ...]]:
        return {"/".join(g): names for g, names in self.owners.items()}


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


_TCP_TABLES = (("/proc/net/tcp", 4), ("/proc/net/tcp6", 6))
_ESTABLISHED = "01"


def _decode(hex_addr: str, version: int) -> str:
    """The kernel prints addresses as native-endian 32-bit words; x86 and arm are little."""
    raw = bytes.fromhex(hex_addr)
    if version == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return normalise_ip(str(ipaddress.IPv6Address(words)))


def _proc_remotes(ports: Collection[int]) -> Iterator[str]:
    """Remote addresses of ESTABLISHED sockets to `ports`, straight from /proc/net.

    psutil.net_connections() also maps every socket to its process by walking
    every /proc/<pid>/fd, which was a third of a round's CPU on a busy host;
    counts need none of that, so the daemon reads the kernel's tables itself.
    """
    wanted = {f"{p:04X}" for p in ports}
    for path, version in _TCP_TABLES:
        try:
            fh = open(path, encoding="ascii")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            continue
        with fh:
            next(fh, None)
            for line in fh:
                fields = line.split(None, 4)
                if len(fields) < 4 or fields[3] != _ESTABLISHED:
                    continue
                addr, _, port = fields[2].partition(":")
                if port in wanted:
                    yield _decode(addr, version)


def count_connections(
    known: Mapping[str, tuple[str, str]],
    ports: Collection[int] = (443,),
    *,
    with_owners: bool = True,
    reader: str = "auto",
) -> ConnectionAudit:
    """Count ESTABLISHED TCP connections to `known` addresses on `ports`, by group.

    `with_owners=False` skips the owner lookup (the daemon's per-round path) and
    asks the kernel for the matching sockets alone (sock_diag), or reads
    /proc/net where a sandbox refuses netlink; `source` says which ran.
    `reader="proc"` skips netlink (to compare the two).  `check` keeps the
    names (psutil, the whole table).  Raises ValueError naming
    the key when `known` holds something that is not an IP address; failures to
    read the socket table come back in `error`.
    """
    table: dict[str, Group] = {}
    for ip, kind_path in known.items():
        try:
            table[normalise_ip(ip)] = kind_path
        except ValueError:
            raise ValueError(f"known: {ip!r} is not an IP address") from None
    counts: dict[Group, int] = dict.fromkeys(table.values(), 0)
    if not with_owners:
        return _count_without_owners(table, counts, ports, reader)
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


_refused: list[str] = []  # why netlink was refused, once, so the log says it once


def _count_without_owners(
    table: Mapping[str, Group], counts: dict[Group, int], ports: Collection[int], reader: str
) -> ConnectionAudit:
    remotes: list[str] | None = None
    if reader != "proc":
        try:
            remotes = list(sockdiag.established_remotes(table, ports))
        except OSError as exc:
            if not _refused:
                _refused.append(str(exc))
                log.warning("sock_diag refused (%s): the connection audit reads /proc/net", exc)
    source = "proc" if remotes is None else "netlink"
    if remotes is None:
        try:
            remotes = list(_proc_remotes(ports))
        except (OSError, ValueError) as exc:
            return ConnectionAudit(counts, {}, f"cannot read the socket table: {exc}", source)
    for remote in remotes:
        group = table.get(remote)
        if group is not None:
            counts[group] += 1
    return ConnectionAudit(counts, {}, None, source)


class PacedCounter:
    """count_connections for the daemon's rounds, at a pace that keeps it under DUTY.

    An audit that cost c seconds of CPU is reused for c / DUTY seconds (5 s
    after a 10 ms audit); a change in the groups being counted (a path that
    changed) asks again at once.  `age` says how old the counts are.
    """

    def __init__(self) -> None:
        self._last: tuple[float, float, frozenset[Group], ConnectionAudit] | None = None
        self.age = 0.0

    def count(
        self, known: Mapping[str, tuple[str, str]], ports: Collection[int]
    ) -> ConnectionAudit:
        now = time.monotonic()
        groups = frozenset(known.values())
        if self._last is not None:
            when, cost, seen, audit = self._last
            if seen == groups and now - when < cost / DUTY and audit.error is None:
                self.age = now - when
                return audit
        started = time.thread_time()
        audit = count_connections(known, ports, with_owners=False)
        self._last = (now, time.thread_time() - started, groups, audit)
        self.age = 0.0
        return audit
