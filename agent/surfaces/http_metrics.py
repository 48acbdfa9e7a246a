"""Series about the listener itself: how hard clients push and what the agent refused.

Read live at every scrape from the server's own counters (the round metrics
are a snapshot per round, which would hide a flood until the next round).
Reasons are fixed sets, so the label values stay bounded whatever clients send.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONNECTION_DROP_REASONS = ("limit", "deadline", "idle", "accept_error")
PROBE_REFUSAL_REASONS = ("busy", "rate", "timeout", "remote")
AUTH_REFUSAL_REASONS = ("busy",)

ConnectionStats = Callable[[], tuple[int, Mapping[str, int]]]
Counts = Callable[[], Mapping[str, int]]


class _ListenerCollector(Collector):
    def __init__(self, connections: ConnectionStats, probes: Counts, auth: Counts) -> None:
        self._connections = connections
        self._probes = probes
        self._auth = auth

    def collect(self) -> Iterator[Metric]:
        open_now, dropped = self._connections()
        yield GaugeMetricFamily(
            "sts_agent_http_connections_open", "Client connections open now", value=open_now
        )
        yield _counter(
            "sts_agent_http_connections_dropped",
            "Client connections the agent closed: over the cap, request head (a first one "
            "included) or TLS handshake not done in time, idle too long after an answer, "
            "or accept out of descriptors",
            CONNECTION_DROP_REASONS,
            dropped,
        )
        yield _counter(
            "sts_agent_probe_requests_refused",
            "/probe requests answered 403, 429 or 503 instead of running a round",
            PROBE_REFUSAL_REASONS,
            self._probes(),
        )
        yield _counter(
            "sts_agent_http_auth_refused",
            "Requests answered 503 because every basic-auth check slot stayed busy",
            AUTH_REFUSAL_REASONS,
            self._auth(),
        )


def _counter(
    name: str, doc: str, reasons: tuple[str, ...], counts: Mapping[str, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=["reason"])
    for reason in reasons:
        family.add_metric([reason], float(counts.get(reason, 0)))
    return family


class ListenerMetrics:
    """A registry of its own, rendered after the round metrics on /metrics."""

    def __init__(self, connections: ConnectionStats, probes: Counts, auth: Counts) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ListenerCollector(connections, probes, auth))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
