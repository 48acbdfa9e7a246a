"""STS names that the hosts file pins ahead of DNS.

glibc with `files` before `dns` in nsswitch.conf (the usual order), musl and
systemd-resolved all answer from /etc/hosts before asking DNS.  A pinned STS
name never reaches the VPC's resolver, so what the agent hears from DNS is not
what programs on the host use, and a pin left behind after an endpoint's ENIs
change breaks every SDK call.  Kubernetes hostAliases and Docker's
`--add-host` write this file too.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

log = logging.getLogger("agent.discovery.hosts_file")

#: nsswitch sources that answer from the hosts file (systemd-resolved reads it too).
_FILES = frozenset({"files", "resolve"})
#: Sources that ask DNS servers directly.
_DNS = frozenset({"dns"})


@dataclass(frozen=True)
class HostsPins:
    """What the hosts file says about the watched names, and whether it wins."""

    path: str
    consulted_first: bool = False
    pins: dict[str, tuple[str, ...]] = field(default_factory=dict)
    error: str | None = None

    def pinned(self, hostname: str) -> tuple[str, ...]:
        """Addresses programs get for `hostname` without asking DNS; () if DNS decides."""
        if not self.consulted_first:
            return ()
        return self.pins.get(hostname.lower().rstrip("."), ())


def parse_hosts(text: str, wanted: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Addresses per wanted name, in file order; bad lines are skipped as the resolver does."""
    names = {n.lower().rstrip(".") for n in wanted}
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        try:
            address = str(ipaddress.ip_address(fields[0].split("%", 1)[0]))
        except ValueError:
            continue
        for name in fields[1:]:
            key = name.lower().rstrip(".")
            if key in names and address not in found.setdefault(key, []):
                found[key].append(address)
    return {k: tuple(v) for k, v in found.items()}


def files_before_dns(nsswitch: str | None) -> bool:
    """Whether the `hosts:` database reads the hosts file before asking DNS.

    No nsswitch.conf (musl, minimal images) or no `hosts:` line means files
    first, which is what musl does and glibc's built-in default starts with.
    """
    if nsswitch is None:
        return True
    for line in nsswitch.splitlines():
        key, _, rest = line.split("#", 1)[0].partition(":")
        if key.strip() != "hosts":
            continue
        sources = [s for s in rest.split() if not s.startswith("[")]
        for source in sources:
            if source in _FILES:
                return True
            if source in _DNS:
                return False
        return False  # neither: the hosts file is not consulted at all
    return True


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return None


def read_pins(hosts_path: str, nsswitch_path: str, wanted: Iterable[str]) -> HostsPins:
    """The pins for `wanted`; a file that cannot be read is reported, never fatal."""
    try:
        text = _read(hosts_path)
        order = files_before_dns(_read(nsswitch_path))
    except OSError as e:
        log.warning("cannot read %s or %s: %s", hosts_path, nsswitch_path, e)
        return HostsPins(hosts_path, error=f"{type(e).__name__}: {e.strerror or e}")
    if text is None:
        return HostsPins(hosts_path)
    return HostsPins(hosts_path, order, parse_hosts(text, wanted))
