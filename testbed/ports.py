"""Free ports on a chosen loopback address, for servers that cannot bind port 0 themselves."""

from __future__ import annotations

import contextlib
import ipaddress
import socket


def family_of(host: str) -> socket.AddressFamily:
    """Address family of a literal IP; servers here listen on addresses, never names."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"host {host!r} is not an IP address") from None
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


def free_port(host: str = "127.0.0.1", *, attempts: int = 50) -> int:
    """A port that is free for both UDP and TCP on `host` (DNS needs both).

    The port is released before returning, so a caller must still retry if another
    process grabs it in between.
    """
    family = family_of(host)
    for _ in range(attempts):
        with socket.socket(family, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(family, socket.SOCK_DGRAM) as udp, contextlib.suppress(OSError):
                udp.bind((host, port))
                return port
    raise RuntimeError(f"no port free for both UDP and TCP on {host} after {attempts} tries")
