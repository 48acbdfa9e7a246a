"""DNS probe: asks one resolver for one STS name, exactly as a client on this host would.

dnspython talks to the resolver directly (not through the libc stub), so each
configured resolver is judged on its own answer rather than on whichever one
the system happened to pick.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import dns.exception
import dns.flags
import dns.inet
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype

from agent.probes.wire import StampedDatagram
from agent.results import DnsAnswer, DnsLookup, DnsQuery, DnsReason, Resolver

# When the A question could not reach the resolver, asking AAAA too only doubles the wait.
_UNREACHABLE: frozenset[DnsReason | None] = frozenset({"timeout", "network", "refused"})

_RCODE_REASONS: dict[int, DnsReason] = {
    dns.rcode.SERVFAIL: "servfail",
    dns.rcode.NXDOMAIN: "nxdomain",
    dns.rcode.REFUSED: "refused",
}


def _query_once(
    hostname: str, rdtype: Literal["A", "AAAA"], resolver: Resolver, timeout: float
) -> DnsQuery:
    started = time.perf_counter()
    took: float | None = None

    def done(reason: DnsReason | None = None, **kw: Any) -> DnsQuery:
        duration = time.perf_counter() - started if took is None else took
        return DnsQuery(rdtype=rdtype, duration=duration, reason=reason, **kw)

    try:
        # A name no DNS message can carry (an empty or over-long label) is malformed too:
        # the probe reports it rather than raising out of the round.
        request = dns.message.make_query(hostname, rdtype)
    except (dns.exception.DNSException, ValueError) as e:
        return done(reason="malformed", detail=f"cannot ask for {hostname[:80]!r}: {e}")
    request.flags |= dns.flags.RD
    try:
        with StampedDatagram(dns.inet.af_for_address(resolver.address)) as sock:
            response, used_tcp = dns.query.udp_with_fallback(
                request, resolver.address, timeout=timeout, port=resolver.port, udp_sock=sock
            )
            took = _wire_time(response, used_tcp, sock.round_trip(), time.perf_counter() - started)
    except dns.exception.Timeout:
        return done(reason="timeout", detail=f"no answer from {resolver.label} in {timeout:g}s")
    except (dns.exception.FormError, dns.message.ShortHeader, dns.message.TrailingJunk) as e:
        return done(reason="malformed", detail=f"unparseable reply: {e}")
    except dns.query.UnexpectedSource as e:
        return done(reason="malformed", detail=str(e))
    except dns.query.BadResponse as e:
        return done(reason="malformed", detail=f"reply does not match the question: {e}")
    except dns.exception.DNSException as e:
        return done(reason="malformed", detail=f"{type(e).__name__}: {e}")
    except (OSError, EOFError) as e:
        return done(reason="network", detail=f"{resolver.label}: {e}")

    rcode = response.rcode()
    rcode_text = dns.rcode.to_text(rcode)
    if rcode in _RCODE_REASONS:
        return done(rcode=rcode_text, reason=_RCODE_REASONS[rcode], detail=rcode_text, tcp=used_tcp)
    if rcode != dns.rcode.NOERROR:
        return done(rcode=rcode_text, reason="servfail", detail=rcode_text, tcp=used_tcp)

    wanted = dns.rdatatype.from_text(rdtype)
    answers: list[DnsAnswer] = []
    cnames: list[str] = []
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.CNAME:
            cnames.extend(r.target.to_text(omit_final_dot=True) for r in rrset)
        elif rrset.rdtype == wanted:
            answers.extend(DnsAnswer(r.address, int(rrset.ttl)) for r in rrset)
    if not answers:
        return done(
            rcode=rcode_text,
            cnames=tuple(cnames),
            reason="nodata",
            detail=f"no {rdtype} record",
            tcp=used_tcp,
        )
    return done(rcode=rcode_text, answers=tuple(answers), cnames=tuple(cnames), tcp=used_tcp)


def _wire_time(
    response: dns.message.Message, used_tcp: bool, stamped: float | None, elapsed: float
) -> float:
    """Send-to-arrival time: neither parsing the reply (about 0.3 ms of Python) nor the
    probe's wait to wake and read it counts.

    `stamped` is the kernel's arrival stamp less the send; without one, dnspython's
    own stamp (taken once the reply was read).  After a fallback to TCP the UDP
    attempt counts too, and a stamp the clock stepped under is not trusted, so
    both of those keep the whole elapsed time.
    """
    if used_tcp:
        return elapsed
    for took in (stamped, getattr(response, "time", None)):
        if isinstance(took, float) and 0.0 <= took <= elapsed:
            return took
    return elapsed


def lookup(hostname: str, resolver: Resolver, timeout: float = 2.0) -> DnsLookup:
    """A and AAAA for `hostname` at `resolver`, each with the full timeout.

    No retries: a flaky resolver must show up as failures, not be papered over.
    """
    started = time.time()
    first = _query_once(hostname, "A", resolver, timeout)
    queries: tuple[DnsQuery, ...] = (first,)
    if first.reason not in _UNREACHABLE:
        queries += (_query_once(hostname, "AAAA", resolver, timeout),)
    return DnsLookup(endpoint=hostname, resolver=resolver, queries=queries, started=started)
