"""A tiny authoritative DNS server whose answers and failures are set at runtime.

dnsmasq cannot be told to time out, truncate or babble on demand; the demo and the
fault tests need exactly that, on loopback, from any machine.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import socketserver
import threading
from collections.abc import Sequence
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from agent.lifecycle import Service

FAULTS = ("timeout", "servfail", "nxdomain", "refused", "truncate", "garbage")
_RCODES = {
    "servfail": dns.rcode.SERVFAIL,
    "nxdomain": dns.rcode.NXDOMAIN,
    "refused": dns.rcode.REFUSED,
}
_MAX_CHAIN = 8
_POLL = 0.1


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _absolute(name: str) -> dns.name.Name:
    try:
        return dns.name.from_text(name)
    except dns.exception.DNSException as exc:
        raise ValueError(f"DnsServer: name {name!r} is not a valid DNS name ({exc})") from None


class DnsServer(Service):
    """Answers A/AAAA/CNAME from an in-memory zone over UDP and TCP on one port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, ttl: int = 60) -> None:
        self.host = host
        self._want_port = port
        self.ttl = ttl
        self.delay = 0.0
        self._fault: str | None = None
        self._lock = threading.Lock()
        self._queries = 0
        self._records: dict[dns.name.Name, dict[dns.rdatatype.RdataType, list[str]]] = {}
        self._cnames: dict[dns.name.Name, dns.name.Name] = {}
        self._rotations: dict[dns.name.Name, tuple[int, int]] = {}  # name -> (next, per answer)
        self._stopping = threading.Event()
        self._servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []
        self.port = 0

    # -- configuration -------------------------------------------------------
    @property
    def fault(self) -> str | None:
        return self._fault

    @fault.setter
    def fault(self, value: str | None) -> None:
        if value is not None and value not in FAULTS:
            raise ValueError(f"DnsServer.fault: unknown fault {value!r} (one of {FAULTS})")
        self._fault = value

    @property
    def address(self) -> str:
        """The IP clients should use as their nameserver (with `port`)."""
        return self.host

    @property
    def queries(self) -> int:
        with self._lock:
            return self._queries

    def set_records(self, name: str, addresses: Sequence[str]) -> None:
        """Replace every address of `name`; an empty list leaves the name known but empty."""
        by_type: dict[dns.rdatatype.RdataType, list[str]] = {}
        for text in addresses:
            try:
                ip = ipaddress.ip_address(text)
            except ValueError:
                raise ValueError(f"set_records: address {text!r} is not an IP address") from None
            rdtype = dns.rdatatype.AAAA if ip.version == 6 else dns.rdatatype.A
            by_type.setdefault(rdtype, []).append(str(ip))
        key = _absolute(name)
        with self._lock:
            self._cnames.pop(key, None)
            self._rotations.pop(key, None)
            self._records[key] = by_type

    def rotate(self, name: str, pool: Sequence[str], per_answer: int = 1) -> None:
        """Answer `name` with the next `per_answer` addresses of `pool` on every A/AAAA
        question, round-robin, as a large public front door's DNS does."""
        self.set_records(name, pool)
        with self._lock:
            self._rotations[_absolute(name)] = (0, per_answer)

    def set_cname(self, name: str, target: str) -> None:
        key, dest = _absolute(name), _absolute(target)
        with self._lock:
            self._records.pop(key, None)
            self._cnames[key] = dest

    def clear(self, name: str) -> None:
        key = _absolute(name)
        with self._lock:
            self._records.pop(key, None)
            self._cnames.pop(key, None)

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> DnsServer:
        family = _family(self.host)
        for _ in range(20):
            udp = _Udp((self.host, self._want_port), family, self)
            port = udp.server_address[1]
            try:
                tcp = _Tcp((self.host, port), family, self)
            except OSError as exc:
                udp.server_close()
                if exc.errno == errno.EADDRINUSE and self._want_port == 0:
                    continue
                raise
            break
        else:
            raise OSError(f"DnsServer: no port free for both UDP and TCP on {self.host}")
        self.port = port
        self._stopping.clear()
        self._servers = [udp, tcp]
        for srv in self._servers:
            t = threading.Thread(
                target=srv.serve_forever, args=(_POLL,), name=f"dns-{port}", daemon=True
            )
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stopping.set()
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
        for t in self._threads:
            t.join(timeout=1)
        self._servers, self._threads = [], []

    # -- answering -----------------------------------------------------------
    def _count(self) -> None:
        with self._lock:
            self._queries += 1

    def _pause(self) -> bool:
        """Apply the configured delay; False if the server stopped meanwhile."""
        return not (self.delay > 0 and self._stopping.wait(self.delay))

    def _reply(self, wire: bytes, over_tcp: bool) -> bytes | None:
        """The bytes to send back for one query, or None to stay silent."""
        self._count()
        fault = self._fault
        if fault == "timeout" or not self._pause():
            return None
        if fault == "garbage":
            # Shorter than a DNS header, so no client can mistake it for an answer.
            return os.urandom(7)
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if fault in _RCODES:
            response.set_rcode(_RCODES[fault])
        elif fault == "truncate" and not over_tcp:
            response.flags |= dns.flags.TC
        elif query.question:
            self._answer(response, query.question[0].name, query.question[0].rdtype)
        if over_tcp:
            return bytes(response.to_wire())
        try:
            return bytes(response.to_wire(max_size=max(512, query.payload)))
        except dns.exception.TooBig:
            response.answer.clear()
            response.flags |= dns.flags.TC
            return bytes(response.to_wire())

    def _answer(
        self, response: dns.message.Message, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> None:
        with self._lock:
            for _ in range(_MAX_CHAIN):
                target = self._cnames.get(name)
                if target is None or rdtype == dns.rdatatype.CNAME:
                    break
                response.answer.append(
                    dns.rrset.from_text(
                        name, self.ttl, dns.rdataclass.IN, dns.rdatatype.CNAME, target.to_text()
                    )
                )
                name = target
            if rdtype == dns.rdatatype.CNAME and name in self._cnames:
                response.answer.append(
                    dns.rrset.from_text(
                        name,
                        self.ttl,
                        dns.rdataclass.IN,
                        dns.rdatatype.CNAME,
                        self._cnames[name].to_text(),
                    )
                )
                return
            records = self._records.get(name)
            if records is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
                return
            values = records.get(rdtype, [])
            if values and name in self._rotations:
                start, n = self._rotations[name]
                self._rotations[name] = ((start + n) % len(values), n)
                values = [values[(start + i) % len(values)] for i in range(min(n, len(values)))]
            if values:
                response.answer.append(
                    dns.rrset.from_text_list(name, self.ttl, dns.rdataclass.IN, rdtype, values)
                )


class _Listening(socketserver.ThreadingMixIn, socketserver.BaseServer):
    """One listener of the simulated server: UDP and TCP differ only in their handler."""

    daemon_threads = True
    block_on_close = False
    handler: type[socketserver.BaseRequestHandler]
    address_family: int

    def __init__(self, addr: tuple[str, int], family: socket.AddressFamily, sim: DnsServer):
        self.address_family = family
        self.sim = sim
        super().__init__(addr, self.handler)


class _UdpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        wire, sock = cast(tuple[bytes, socket.socket], self.request)
        answer = cast(_Udp, self.server).sim._reply(wire, over_tcp=False)
        if answer is not None:
            sock.sendto(answer, self.client_address)


class _TcpHandler(socketserver.BaseRequestHandler):
    """Serves length-prefixed queries until the client hangs up or the server stops."""

    def handle(self) -> None:
        sim = cast(_Tcp, self.server).sim
        conn = cast(socket.socket, self.request)
        conn.settimeout(_POLL)
        buf = b""
        while not sim._stopping.is_set():
            try:
                chunk = conn.recv(65537)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while len(buf) >= 2 and len(buf) >= 2 + int.from_bytes(buf[:2], "big"):
                size = int.from_bytes(buf[:2], "big")
                wire, buf = buf[2 : 2 + size], buf[2 + size :]
                answer = sim._reply(wire, over_tcp=True)
                if answer is not None:
                    try:
                        conn.sendall(len(answer).to_bytes(2, "big") + answer)
                    except OSError:
                        return


class _Udp(_Listening, socketserver.UDPServer):
    handler = _UdpHandler


class _Tcp(_Listening, socketserver.TCPServer):
    allow_reuse_address = True
    handler = _TcpHandler
