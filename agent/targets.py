"""Targets: settings + discovery + DNS answers -> the probe plan.

Which endpoints a round watches, and which addresses of each it probes: pins from
the hosts file first, then VPC-endpoint ENIs, then the rest, up to the cap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.addresses import blocks
from agent.config import Settings
from agent.results import DnsLookup, Endpoint, Resolver
from agent.verdicts.classify import classify

if TYPE_CHECKING:  # agent.discovery reads watched_endpoints for the hosts file
    from agent.discovery.facts import Discovery


def watched_endpoints(settings: Settings, regions: Sequence[str]) -> list[Endpoint]:
    """Every region's names once, then the global one."""
    endpoints: list[Endpoint] = []
    for region in regions or (None,):
        for ep in settings.endpoints(region):
            if all(e.hostname != ep.hostname for e in endpoints):
                endpoints.append(ep)
    endpoints.sort(key=lambda e: e.kind == "global")  # stable sort keeps the region order
    return endpoints


def round_endpoints(
    settings: Settings, regions: Sequence[str], only_endpoint: str | None = None
) -> list[Endpoint]:
    """The watched endpoints, or the one hostname or kind asked for."""
    endpoints = watched_endpoints(settings, regions)
    if only_endpoint is None:
        return endpoints
    return [e for e in endpoints if e.hostname == only_endpoint or e.kind == only_endpoint]


#: No address outlives its answer by more than this, whatever TTL DNS sends.
MAX_REMEMBERED_TTL = 300


def answered(lookups: Sequence[DnsLookup]) -> list[str]:
    """Every address the latest answers hold, once each, in answer order."""
    return list(dict.fromkeys(a for lk in lookups for a in lk.addresses))


@dataclass
class AddressBook:
    """Addresses seen per endpoint, kept until their DNS TTL runs out.

    Clients cache answers for the TTL, so an ENI that rotated out of the
    latest answer is still in use and still worth probing until it expires.
    What is kept is bounded whatever DNS sends: a TTL counts for at most
    MAX_REMEMBERED_TTL, and beside the current answer at most `limit` past
    addresses are remembered (ENIs first, then those expiring last), since no
    more are probed.
    With `is_eni`, ENIs come first in the answer, so a cap never trades a
    stable ENI for a rotating public address, and only ENIs are remembered
    while DNS answers: public addresses share one label, so probing the ones
    that rotated out would add signed calls to STS, not information.  When no
    resolver answers at all, the public ones are probed too until they expire,
    as clients still call them from their caches.
    """

    expiry: dict[str, dict[str, float]] = field(default_factory=dict)

    def update(
        self,
        endpoint: str,
        lookups: Sequence[DnsLookup],
        now: float,
        limit: int = 8,
        is_eni: Callable[[str], bool] | None = None,
    ) -> list[str]:
        book = self.expiry.setdefault(endpoint, {})
        for lk in lookups:
            for q in lk.queries:
                for a in q.answers:
                    ttl = min(max(a.ttl, 1), MAX_REMEMBERED_TTL)
                    book[a.address] = max(book.get(a.address, 0.0), now + ttl)
        current = answered(lookups)

        def other(address: str) -> bool:
            return is_eni is not None and not is_eni(address)

        older = [
            a
            for a, exp in book.items()
            if a not in current and exp >= now and (not current or not other(a))
        ]
        older.sort(key=lambda a: (other(a), -book[a], a))  # ENIs first (public: outage only)
        keep = set(current) | set(older[:limit])
        for addr in [a for a in book if a not in keep]:
            del book[addr]
        ordered = current + sorted(older[:limit])
        return sorted(ordered, key=other)  # stable: ENIs first, each group in its order


@dataclass(frozen=True)
class EndpointPlan:
    """One endpoint's part of a round: its lookups and the addresses to probe."""

    endpoint: Endpoint
    lookups: tuple[DnsLookup, ...]
    pins: tuple[str, ...]
    addresses: tuple[str, ...]
    dropped: int  # pinned or answered addresses the cap left out (not remembered ones)


def eni_test(disc: Discovery) -> Callable[[str], bool]:
    """An ENI: an address of a known endpoint, or any in a private range (this VPC or a hub)."""

    def is_eni(address: str) -> bool:
        return address in disc.eni_zones or classify(address, disc.vpc_cidrs) != "public"

    return is_eni


def plan(
    settings: Settings,
    disc: Discovery,
    endpoints: Sequence[Endpoint],
    lookups: Mapping[tuple[str, Resolver], DnsLookup],
    book: AddressBook,
    now: float,
) -> list[EndpointPlan]:
    """Per endpoint: pinned addresses first (what programs here connect to), then the rest."""
    cap = settings.max_addresses_per_endpoint
    is_eni = eni_test(disc)
    plans = []
    for ep in endpoints:
        found = tuple(lookups[(ep.hostname, r)] for r in disc.resolvers)
        candidates = book.update(ep.hostname, found, now, cap, is_eni)
        pins = disc.hosts.pinned(ep.hostname) if disc.hosts else ()
        # A block is reported (the pins) but never dialled: it would reach this host itself.
        dialled = [a for a in pins if not blocks(a)]
        candidates = [*dialled, *(a for a in candidates if a not in pins)]
        probed = candidates[:cap]
        # Remembered addresses that did not fit are simply not re-probed; only what DNS or
        # the hosts file gives now and the cap leaves out is "dropped" (and a finding).
        dropped = sum(a not in probed for a in dict.fromkeys([*dialled, *answered(found)]))
        plans.append(EndpointPlan(ep, found, pins, tuple(probed), dropped))
    return plans
