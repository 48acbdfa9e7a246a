"""Stops a test's own process from sending to anything but loopback.

The tests talk to servers they start on 127.0.0.0/8 and ::1; a test that
forgets to point the agent at them (the default resolvers are the host's
resolv.conf) would otherwise ask the machine's real DNS server, and connect
to whatever it answers.  Python's audit hooks see every name lookup, connect
and sendto before it happens; this one refuses any that leave the host and
remembers them, so the test fails even where the refusal itself was
swallowed (a probe thread records it as one more failed probe).  Child
processes are not covered: they get their resolvers and addresses from the
test's config.  Nor is a name handed straight to connect() or sendto(): CPython
resolves it inside the call without an audit event, so code under test is
expected to look names up with getaddrinfo first, as the stdlib's helpers do.
"""

from __future__ import annotations

import ipaddress
import sys
from typing import Any

_EVENTS = frozenset({"socket.connect", "socket.sendto", "socket.sendmsg"})
#: Name lookups go through the system resolver (a DNS query off the host) before any connect.
_LOOKUPS = frozenset(
    {
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.gethostbyname_ex",
        "socket.gethostbyaddr",  # a PTR query, e.g. from socket.getfqdn()
    }
)
refused: list[str] = []


def _leaves_host(address: Any) -> str | None:
    """The destination when `address` is an IP one off this host; None when it stays here."""
    if not isinstance(address, tuple) or not address or not isinstance(address[0], str):
        return None  # AF_UNIX paths, netlink, packet sockets
    host = address[0].split("%", 1)[0]
    if host in ("", "localhost"):
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host  # a name would be resolved by the system: off the host as far as we know
    mapped = getattr(ip, "ipv4_mapped", None)
    if ip.is_loopback or (mapped is not None and mapped.is_loopback):
        return None
    return str(ip)


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.getnameinfo" and args:
        where = _leaves_host(args[0])  # (address, port): a PTR query for that address
    elif event in _LOOKUPS and args:
        host = args[0].decode() if isinstance(args[0], bytes) else args[0]
        where = _leaves_host((host,)) if isinstance(host, str) else None
    elif event in _EVENTS and len(args) >= 2:
        where = _leaves_host(args[1])
    else:
        return
    if where is not None:
        refused.append(f"{event} to {where}")
        raise PermissionError(f"tests send only to loopback: {event} to {where} refused")


def install() -> None:
    sys.addaudithook(_hook)
