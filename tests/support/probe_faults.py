"""Every failure reason of the two probes, each provoked by a real fault on loopback.

One table per probe: the probe tests take their faults from it, and the reason
check runs the whole table and compares the reasons the probes really gave with
the documented label values. A reason nothing here provokes, or one the README
does not list, fails that check.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from botocore.credentials import ReadOnlyCredentials

from agent.probes import sts
from agent.probes.dns import lookup
from agent.results import DnsLookup, DnsReason, Resolver, StsProbe, StsReason
from agent.simulate.ca import Authority
from agent.simulate.dns_server import DnsServer
from agent.simulate.sts_server import StsServer

REGIONAL = "sts.us-east-2.amazonaws.com"
GLOBAL = "sts.amazonaws.com"
ENI = "127.10.138.148"
DNS_TIMEOUT = 0.4
STS_TIMEOUT = 0.6
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
CREDS = ReadOnlyCredentials("AKIAIOSFODNN7EXAMPLE", SECRET, None)


# -- DNS ------------------------------------------------------------------------------
def at(server: DnsServer) -> Resolver:
    return Resolver(server.address, server.port)


@dataclass(frozen=True)
class DnsFault:
    """A resolver (or a name) that fails one way, and the reason the probe must give."""

    id: str
    reason: DnsReason
    provoke: Callable[[DnsServer], DnsLookup]  # given a running server of its own


def _served(fault: str) -> Callable[[DnsServer], DnsLookup]:
    """The server knows the name but misbehaves in the way `fault` names."""

    def provoke(server: DnsServer) -> DnsLookup:
        server.set_records(REGIONAL, [ENI])
        server.fault = fault
        return lookup(REGIONAL, at(server), DNS_TIMEOUT)

    return provoke


def _asked(name: str) -> Callable[[DnsServer], DnsLookup]:
    """A healthy server that serves REGIONAL only, asked for `name`."""

    def provoke(server: DnsServer) -> DnsLookup:
        server.set_records(REGIONAL, [ENI])
        return lookup(name, at(server), DNS_TIMEOUT)

    return provoke


def _without_addresses(server: DnsServer) -> DnsLookup:
    server.set_records(REGIONAL, [])
    return lookup(REGIONAL, at(server), DNS_TIMEOUT)


def _nobody_listening(server: DnsServer) -> DnsLookup:
    """A closed UDP port on loopback gives no error to an unconnected socket: it times out."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return lookup(REGIONAL, Resolver("127.0.0.1", port), DNS_TIMEOUT)


def _unsendable(server: DnsServer) -> DnsLookup:
    """The kernel refuses the send itself: UDP to port 0 is EINVAL, and stays on loopback
    (the broadcast address, refused without SO_BROADCAST, would leave the host if allowed)."""
    return lookup(REGIONAL, Resolver("127.0.0.1", 0), DNS_TIMEOUT)


DNS_FAULTS: dict[str, DnsFault] = {
    f.id: f
    for f in (
        DnsFault("servfail", "servfail", _served("servfail")),
        DnsFault("nxdomain", "nxdomain", _served("nxdomain")),
        DnsFault("garbage", "malformed", _served("garbage")),
        DnsFault("refused", "refused", _served("refused")),
        DnsFault("timeout", "timeout", _served("timeout")),
        DnsFault("unknown_name", "nxdomain", _asked("sts.eu-west-9.amazonaws.com")),
        DnsFault("no_addresses", "nodata", _without_addresses),
        DnsFault("nobody_listening", "timeout", _nobody_listening),
        DnsFault("unsendable", "network", _unsendable),
        # names no DNS message can carry: an over-long label, an empty one, an over-long name
        DnsFault("long_label", "malformed", _asked("a" * 64 + ".amazonaws.com")),
        DnsFault("empty_label", "malformed", _asked("sts..amazonaws.com")),
        DnsFault("long_name", "malformed", _asked("x." * 130)),
    )
}


# -- STS ------------------------------------------------------------------------------
def probe_at(
    server: StsServer,
    context: ssl.SSLContext,
    *,
    credentials: ReadOnlyCredentials | None = CREDS,
    signed: bool = True,
    host: str = REGIONAL,
    timeout: float = STS_TIMEOUT,
) -> StsProbe:
    """One probe of `host` at the server's address, signed for us-east-2."""
    return sts.probe(
        sts.Target(host, server.host, server.port, "us-east-2"),
        context=context,
        credentials=credentials,
        timeout=timeout,
        signed=signed,
    )


@dataclass(frozen=True)
class StsRig:
    """A CA the probe trusts, a verifying context for it and an STS server it issued for."""

    authority: Authority
    context: ssl.SSLContext
    server: StsServer

    def run(
        self,
        server: StsServer | None = None,
        *,
        context: ssl.SSLContext | None = None,
        credentials: ReadOnlyCredentials | None = CREDS,
    ) -> StsProbe:
        return probe_at(server or self.server, context or self.context, credentials=credentials)


@dataclass(frozen=True)
class StsFault:
    """An STS server, certificate or port that fails one way, and the probe's reason for it."""

    id: str
    reason: StsReason
    provoke: Callable[[StsRig], StsProbe]


def _server_fault(fault: str) -> Callable[[StsRig], StsProbe]:
    def provoke(rig: StsRig) -> StsProbe:
        rig.server.fault = fault
        return rig.run()

    return provoke


def _error(code: str, reason: StsReason) -> StsFault:
    return StsFault(f"error:{code}", reason, _server_fault(f"error:{code}"))


def _without_credentials(rig: StsRig) -> StsProbe:
    return rig.run(credentials=None)


def _certificate(
    names: list[str], stem: str, *, expired: bool = False
) -> Callable[[StsRig], StsProbe]:
    """A server whose certificate, from the trusted CA, covers `names` (or has expired)."""

    def provoke(rig: StsRig) -> StsProbe:
        cert, key = rig.authority.issue(names, name=stem, expired=expired)
        with StsServer("127.0.0.1", 0, cert, key) as other:
            return rig.run(other)

    return provoke


def _untrusted_ca(rig: StsRig) -> StsProbe:
    stranger = Authority.create(Path(rig.authority.ca_path).parent / "stranger")
    return rig.run(context=sts.tls_context(str(stranger.ca_path)))


def closed_port() -> int:
    """A loopback TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _closed_port(rig: StsRig) -> StsProbe:
    return sts.probe(
        sts.Target(REGIONAL, "127.0.0.1", closed_port(), "us-east-2"),
        context=rig.context,
        credentials=CREDS,
        timeout=STS_TIMEOUT,
    )


def _full_accept_queue(rig: StsRig) -> StsProbe:
    """A listener that never accepts: once its queue is full, SYNs go unanswered."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers: list[socket.socket] = []
        try:
            for _ in range(4):
                f = socket.socket()
                f.settimeout(0.2)
                fillers.append(f)
                try:
                    f.connect(("127.0.0.1", port))
                except TimeoutError:
                    break
            else:
                pytest.skip("the kernel kept accepting connections")
            return sts.probe(
                sts.Target(REGIONAL, "127.0.0.1", port, "us-east-2"),
                context=rig.context,
                credentials=CREDS,
                timeout=0.3,
            )
        finally:
            for f in fillers:
                f.close()


STS_FAULTS: dict[str, StsFault] = {
    f.id: f
    for f in (
        # STS answers with an error code (400 for throttling and unknown codes, else 403)
        _error("Throttling", "throttled"),
        _error("ExpiredToken", "expired_token"),
        _error("InvalidClientTokenId", "invalid_token"),
        _error("AccessDenied", "access_denied"),
        _error("SignatureDoesNotMatch", "signature"),
        _error("SomethingNew", "other"),
        StsFault("http_503", "http_5xx", _server_fault("http_503")),
        StsFault("http_500", "http_5xx", _server_fault("http_500")),
        StsFault("no_credentials", "credentials_missing", _without_credentials),
        # TLS
        StsFault("wrong_name", "tls_hostname_mismatch", _certificate(["sts.example.org"], "other")),
        StsFault("expired", "tls_error", _certificate([REGIONAL], "expired", expired=True)),
        StsFault("untrusted_ca", "tls_error", _untrusted_ca),
        # transport
        StsFault("hang_accept", "timeout", _server_fault("hang_accept")),  # no TLS answer
        StsFault("reset_handshake", "tls_error", _server_fault("reset_handshake")),
        StsFault("plain_http", "tls_error", _server_fault("plain_http")),
        StsFault("hang", "timeout", _server_fault("hang")),  # after the request was sent
        StsFault("slow_drip", "timeout", _server_fault("slow_drip")),
        StsFault("reset_response", "connection_reset", _server_fault("reset_response")),
        StsFault("huge_body", "bad_response", _server_fault("huge_body")),
        StsFault("malformed", "bad_response", _server_fault("malformed")),
        # more than 100 header lines: http.client's own limit must not escape the probe
        StsFault("header_flood", "bad_response", _server_fault("header_flood")),
        StsFault("closed_port", "connect_refused", _closed_port),
        StsFault("full_accept_queue", "connect_timeout", _full_accept_queue),
    )
}
