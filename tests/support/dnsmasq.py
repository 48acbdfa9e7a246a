"""A real dnsmasq on loopback, so DNS tests exercise an actual resolver and not a stub.

Address records live in an addn-hosts file: dnsmasq re-reads it on SIGHUP, which lets a
test flip a name at runtime (say, from a VPC-endpoint address to a public one) without
restarting the server. CNAMEs, upstreams and local domains are fixed at start.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

from agent.lifecycle import Service
from testbed.ports import family_of, free_port
from testbed.procs import stop_process

Records = Mapping[str, Sequence[str]]
"""Name -> addresses (IPv4 and IPv6 mixed) that dnsmasq answers for A and AAAA."""

Upstream = tuple[str, int]
"""An upstream DNS server as (IP, port)."""

GENERATION_NAME = "generation.fixture.invalid"
"""Reserved name whose A record counts reloads, so a caller knows a flip took effect."""

_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_START_ATTEMPTS = 5


def _check_name(field: str, name: str) -> str:
    bare = name.rstrip(".")
    if not bare or len(bare) > 253 or not all(_LABEL.fullmatch(p) for p in bare.split(".")):
        raise ValueError(f"{field}: {name!r} is not a valid DNS name")
    return bare.lower()


def _check_ip(field: str, value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{field}: {value!r} is not an IP address") from None


def _check_upstream(field: str, upstream: Upstream) -> str:
    ip, port = upstream
    if not 0 < port < 65536:
        raise ValueError(f"{field}: port {port!r} is out of range")
    return f"{_check_ip(field, ip)}#{port}"


def _generation_ip(generation: int) -> str:
    return str(ipaddress.IPv4Address("127.255.0.0") + (generation % 65536))


def dnsmasq_binary() -> str:
    """Path to dnsmasq; skips the test locally and fails it under CI when it is absent."""
    from testbed.require import require_binary

    return require_binary("dnsmasq", "/usr/sbin/dnsmasq")


def _run_as() -> list[str]:
    # As root dnsmasq drops to "nobody", who could not read our private temp dir; as any
    # other user it keeps its identity and needs no flag.
    return ["--user=root"] if os.geteuid() == 0 else []


class Dnsmasq(Service):
    """dnsmasq listening on one loopback address; use as a context manager.

    `records` maps names to IPv4/IPv6 addresses, `cnames` maps alias -> target (the target
    must be one of `records`). `upstreams` forward every other name, `domain_upstreams`
    forward one domain each, and `local_domains` answer NXDOMAIN for unknown names under
    them instead of REFUSED. With `authoritative`, a record name and its subnames are never
    forwarded: a missing type is NODATA and a subname NXDOMAIN, as from a private zone.
    """

    def __init__(
        self,
        records: Records | None = None,
        *,
        cnames: Mapping[str, str] | None = None,
        listen: str = "127.0.0.1",
        port: int = 0,
        ttl: int = 0,
        upstreams: Sequence[Upstream] = (),
        domain_upstreams: Mapping[str, Upstream] | None = None,
        local_domains: Sequence[str] = (),
        cache_size: int | None = None,
        log_queries: bool = False,
        authoritative: bool = True,
        extra_args: Sequence[str] = (),
        binary: str | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        family_of(listen)
        if not 0 <= port < 65536:
            raise ValueError(f"port: {port!r} is out of range")
        if ttl < 0:
            raise ValueError(f"ttl: {ttl!r} must not be negative")
        if cache_size is not None and cache_size < 0:
            raise ValueError(f"cache_size: {cache_size!r} must not be negative")
        self._records = self._normalise(records or {})
        self._authoritative = authoritative
        self._listen = listen
        self._fixed_port = port
        self._port = port
        self._binary = binary
        self._start_timeout = start_timeout
        self._generation = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        args = [f"--local-ttl={ttl}"]
        for alias, target in (cnames or {}).items():
            args.append(f"--cname={_check_name('cnames', alias)},{_check_name('cnames', target)}")
            if authoritative:
                args.append(f"--local=/{_check_name('cnames', alias)}/")
        args += [f"--server={_check_upstream('upstreams', u)}" for u in upstreams]
        for domain, upstream in (domain_upstreams or {}).items():
            name = _check_name("domain_upstreams", domain)
            args.append(f"--server=/{name}/{_check_upstream('domain_upstreams', upstream)}")
        args += [f"--local=/{_check_name('local_domains', d)}/" for d in local_domains]
        if cache_size is not None:
            args.append(f"--cache-size={cache_size}")
        if log_queries:
            args.append("--log-queries")
        self._args = [*args, *extra_args]

    @staticmethod
    def _normalise(records: Records) -> dict[str, list[str]]:
        if isinstance(records, str | bytes):
            raise ValueError("records: expected a mapping of name -> addresses")
        out: dict[str, list[str]] = {}
        for name, addresses in records.items():
            if isinstance(addresses, str | bytes):
                raise ValueError(f"records: addresses for {name!r} must be a list, not a string")
            key = _check_name("records", name)
            if key == GENERATION_NAME:
                raise ValueError(f"records: {name!r} is reserved")
            out[key] = [_check_ip(f"records[{name!r}]", a) for a in addresses]
        return out

    @property
    def address(self) -> str:
        return self._listen

    @property
    def port(self) -> int:
        return self._port

    @property
    def nameserver(self) -> Upstream:
        """(IP, port) to hand to a resolver, or to another dnsmasq as its upstream."""
        return (self._listen, self._port)

    @property
    def log_path(self) -> Path:
        return self._dir / "dnsmasq.log"

    @property
    def _dir(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("dnsmasq is not running")
        return Path(self._tmp.name)

    @property
    def _hosts_path(self) -> Path:
        return self._dir / "hosts"

    @property
    def _servers_path(self) -> Path:
        return self._dir / "servers"

    def resolver(self, *, lifetime: float = 2.0) -> dns.resolver.Resolver:
        """A dnspython resolver that asks this server only."""
        res = dns.resolver.Resolver(configure=False)
        res.nameservers = [self._listen]
        res.port = self._port
        res.lifetime = lifetime
        res.cache = None
        return res

    def query(self, name: str, rdtype: str = "A", *, tcp: bool = False) -> dns.message.Message:
        """One raw query, so a test can look at the rcode and flags, not just answers."""
        msg = dns.message.make_query(name, dns.rdatatype.from_text(rdtype))
        send = dns.query.tcp if tcp else dns.query.udp
        return send(msg, self._listen, port=self._port, timeout=2.0)

    @staticmethod
    def _replace(path: Path, lines: list[str]) -> None:
        tmp = path.with_suffix(".new")
        tmp.write_text("".join(f"{line}\n" for line in lines), encoding="ascii")
        os.replace(tmp, path)

    def _write_data(self) -> None:
        # Both files are re-read on SIGHUP; the servers file keeps record names local.
        hosts = [f"{_generation_ip(self._generation)} {GENERATION_NAME}"]
        hosts += [f"{ip} {name}" for name, ips in self._records.items() for ip in ips]
        self._replace(self._hosts_path, hosts)
        local = [f"server=/{name}/" for name in self._records] if self._authoritative else []
        self._replace(self._servers_path, local)

    def set_records(self, records: Records) -> None:
        """Replace every address record and wait until dnsmasq serves the new set."""
        if self._proc is None:
            raise RuntimeError("dnsmasq is not running")
        self._records = self._normalise(records)
        self._generation += 1
        self._write_data()
        self._proc.send_signal(signal.SIGHUP)
        self._wait_generation(self._start_timeout)

    def _argv(self) -> list[str]:
        binary = self._binary or dnsmasq_binary()
        return [
            binary,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            f"--listen-address={self._listen}",
            f"--port={self._port}",
            f"--pid-file={self._dir / 'dnsmasq.pid'}",
            f"--addn-hosts={self._hosts_path}",
            f"--servers-file={self._servers_path}",
            f"--log-facility={self.log_path}",
            *_run_as(),
            *self._args,
        ]

    def _answered_generation(self) -> bool:
        msg = dns.message.make_query(GENERATION_NAME, dns.rdatatype.A)
        try:
            # Short timeout: a datagram sent before dnsmasq binds is silently lost.
            reply = dns.query.udp(msg, self._listen, port=self._port, timeout=0.2)
        except (OSError, dns.exception.DNSException):
            return False
        want = _generation_ip(self._generation)
        return reply.rcode() == dns.rcode.NOERROR and any(
            rr.to_text() == want for rrset in reply.answer for rr in rrset
        )

    def _wait_generation(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise RuntimeError(f"dnsmasq exited: {self._stderr_tail()}")
            if self._answered_generation():
                return
            time.sleep(0.02)
        raise TimeoutError(f"dnsmasq on {self._listen}:{self._port} did not answer in {timeout}s")

    def _stderr_tail(self) -> str:
        try:
            text = (self._dir / "stderr").read_text(errors="replace").strip()
        except OSError:
            return "(no output)"
        return " | ".join(text.splitlines()[-3:]) or "(no output)"

    def start(self) -> Dnsmasq:
        if self._proc is not None:
            raise RuntimeError("dnsmasq already started")
        self._tmp = tempfile.TemporaryDirectory(prefix="dnsmasq-")
        self._write_data()
        try:
            for attempt in range(_START_ATTEMPTS):
                self._port = self._fixed_port or free_port(self._listen)
                with open(self._dir / "stderr", "wb") as err:
                    self._proc = subprocess.Popen(
                        self._argv(), stdin=subprocess.DEVNULL, stdout=err, stderr=err
                    )
                try:
                    self._wait_generation(self._start_timeout)
                    return self
                except RuntimeError:
                    # Someone took the free port between probing and binding: try another.
                    in_use = "Address already in use" in self._stderr_tail()
                    self._reap()
                    if self._fixed_port or not in_use or attempt == _START_ATTEMPTS - 1:
                        raise
            raise AssertionError("unreachable")
        except BaseException:
            self.stop()
            raise

    def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        stop_process(proc, timeout=5)

    def stop(self) -> None:
        try:
            self._reap()
        finally:
            tmp, self._tmp = self._tmp, None
            if tmp is not None:
                tmp.cleanup()
