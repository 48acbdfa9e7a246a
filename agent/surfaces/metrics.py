"""Prometheus surface: turns Reports into metrics.

Histograms and counters accumulate as rounds arrive (prometheus-client's own
types, in a private registry); everything describing *current* state is built
fresh at scrape time by a custom collector from the latest Report.  A scrape
therefore only reads memory and never waits for a probe.

Cardinality: `endpoint` and `resolver` come from configuration and discovery;
`address` is an ENI's IP (few and stable, capped by max_addresses_per_endpoint)
or the one value "public" for every public address (see agent.surfaces.series).
Series of an endpoint, resolver or ENI that a round no longer has are removed
at once (Metrics._prune).  Latency distributions are per endpoint; per ENI the
latest round's phases are gauges.
"""

from __future__ import annotations

import contextlib
import platform
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from agent import __version__
from agent.results import PATHS, Report
from agent.surfaces.series import address_label, by_label, probe_classes, public_address_hash
from agent.verdicts.serving import cross_region
from agent.verdicts.zones import cross_az_ratio, local_az_eni

if TYPE_CHECKING:
    from agent.audit.host import HostAuditResult

# 2.5 ms .. 10 s, about x2 a step: VPC-endpoint calls take a few ms to tens of ms, the
# global name from far away hundreds; 0.5 s is the SLO of the shipped alert.
REQUEST_BUCKETS = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
# A DNS question is sub-millisecond from a cache and seconds only when it times out.
DNS_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.5, 2.5)
DEFAULT_HISTOGRAM_PHASES = ("total",)

# `_created` series double the output and no dashboard here uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

#: What keeps a counter or histogram child exported: (kind, endpoint, resolver | address | phase).
_Owner = tuple[str, str, str]
_M = TypeVar("_M", bound=MetricWrapperBase)


class _SnapshotRegistry(CollectorRegistry):
    """Collects once per change, so the scrapes between two rounds share one snapshot.

    Only Metrics writes to these metrics and it calls invalidate() after every
    write; collecting holds the lock, so a write that lands mid-collect still
    clears the snapshot.  For six targets this takes about 1.4 ms (a third of
    a scrape's CPU) off every scrape but the first after a round.
    """

    def __init__(self) -> None:
        super().__init__(auto_describe=True)
        self._snapshot_lock = threading.Lock()
        self._snapshot: list[Metric] | None = None
        self._text: bytes | None = None
        self._generation = 0  # bumped by every write

    def collect(self) -> Iterator[Metric]:
        with self._snapshot_lock:
            if self._snapshot is None:
                self._snapshot = list(super().collect())
            return iter(self._snapshot)

    def exposition(self) -> bytes:
        """The text format, rendered once per change like the snapshot it comes from."""
        with self._snapshot_lock:
            text, generation = self._text, self._generation
        if text is None:
            text = generate_latest(self)
            with self._snapshot_lock:
                if self._generation == generation:  # no write landed while rendering
                    self._text = text
        return text

    def invalidate(self) -> None:
        with self._snapshot_lock:
            self._snapshot = None
            self._text = None
            self._generation += 1


class Metrics:
    """Owns the registry; `observe` is called once per finished round."""

    def __init__(self, histogram_phases: Iterable[str] = DEFAULT_HISTOGRAM_PHASES) -> None:
        self.histogram_phases = frozenset(histogram_phases)
        self.registry = _SnapshotRegistry()
        self._lock = threading.Lock()
        self.latest: Report | None = None
        self.rounds = 0
        self.rounds_skipped = 0
        r = self.registry
        self.dns_duration, self.dns_lookups, self.dns_failures = _timed_with_counts(
            r,
            DNS_BUCKETS,
            (
                "sts_agent_dns_lookup_duration_seconds",
                "Time for one DNS question (A or AAAA) about an STS name to one resolver.",
                ["endpoint", "resolver"],
            ),
            (
                "sts_agent_dns_lookups_total",
                "DNS lookups (A and AAAA together) of an STS name at one resolver.",
                ["endpoint", "resolver"],
            ),
            (
                "sts_agent_dns_lookup_failures_total",
                "DNS lookups that yielded no address, by reason.",
                ["endpoint", "resolver", "reason"],
            ),
        )
        self.req_duration, self.requests, self.req_failures = _timed_with_counts(
            r,
            REQUEST_BUCKETS,
            (
                "sts_agent_request_duration_seconds",
                "Phases of a signed GetCallerIdentity to an STS endpoint, over all its addresses "
                '(phase="total" unless metrics.histogram_phases says more).',
                ["endpoint", "phase"],
            ),
            (
                "sts_agent_requests",
                "GetCallerIdentity requests sent to one ENI of an STS endpoint, or "
                'address="public".',
                ["endpoint", "address"],
            ),
            (
                "sts_agent_request_failures",
                "GetCallerIdentity requests that failed, by reason.",
                ["endpoint", "address", "reason"],
            ),
        )
        # Every counter and histogram child written, with the owner that keeps it exported.
        self._owners: dict[tuple[MetricWrapperBase, tuple[str, ...]], _Owner] = {}
        r.register(_StateCollector(self))

    def observe(self, report: Report) -> None:
        """Count one full round; what it lacks is pruned, so a one-endpoint round (/probe)
        must go to a Metrics of its own, as the daemon does, not to this one."""
        with self._lock:
            present: set[_Owner] = set()
            for ep in report.endpoints:
                host = ep.endpoint.hostname
                for lk in ep.lookups:
                    res = lk.resolver.label
                    at = ("resolver", host, res)
                    present.add(at)
                    for q in lk.queries:
                        self._child(self.dns_duration, at, host, res).observe(q.duration)
                    self._child(self.dns_lookups, at, host, res).inc()
                    if lk.reason:
                        self._child(self.dns_failures, at, host, res, lk.reason).inc()
                present.update(("phase", host, phase) for phase in self.histogram_phases)
                classes = probe_classes(ep, report.vpc_cidrs)
                for p in ep.probes:
                    label = address_label(p.address, classes[p.address])
                    addr = ("address", host, label)
                    present.add(addr)
                    self._child(self.requests, addr, host, label).inc()
                    for phase, value in p.phases.as_dict().items():
                        if value is not None and phase in self.histogram_phases:
                            dur = self._child(
                                self.req_duration, ("phase", host, phase), host, phase
                            )
                            dur.observe(value)
                    if not p.success and p.reason:
                        self._child(self.req_failures, addr, host, label, p.reason).inc()
            self._prune(present)
            self.latest = report
            self.rounds += 1
        self.registry.invalidate()

    def _child(self, metric: _M, owner: _Owner, *labels: str) -> _M:
        """The child with these label values, remembered under the owner that keeps it."""
        self._owners[(metric, labels)] = owner
        return metric.labels(*labels)

    def _prune(self, present: set[_Owner]) -> None:
        """Drop every child whose owner this round no longer has.

        An owner is an (endpoint, resolver) pair looked up, an (endpoint, address label)
        probed, or an (endpoint, phase) of a watched endpoint that histogram_phases still
        wants (it may change on reload).  So a resolver, endpoint or ENI that leaves the
        configuration or discovery stops being exported, where it would otherwise repeat
        its last values until a restart; a counter whose label set returns starts from 0,
        which rate() reads as a reset.  Children of owners still present stay as they are,
        failure reasons that did not recur this round included.
        """
        for key in [k for k, owner in self._owners.items() if owner not in present]:
            metric, labels = key
            with contextlib.suppress(KeyError):
                metric.remove(*labels)
            del self._owners[key]

    def count_skipped(self, n: int = 1) -> None:
        with self._lock:
            self.rounds_skipped += n
        self.registry.invalidate()


_Family = tuple[str, str, list[str]]  # name, help text, label names


def _timed_with_counts(
    registry: CollectorRegistry,
    buckets: tuple[float, ...],
    timed: _Family,
    attempts: _Family,
    failures: _Family,
) -> tuple[Histogram, Counter, Counter]:
    """The three families of one kind of probe: how long it took, how often, how often failed."""
    return (
        Histogram(*timed, buckets=buckets, registry=registry),
        Counter(*attempts, registry=registry),
        Counter(*failures, registry=registry),
    )


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    """An empty gauge family, built fresh for each scrape."""
    return GaugeMetricFamily(name, doc, labels=list(labels))


class _StateCollector(Collector):
    """Current state, rebuilt from the latest Report on every scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        m = self.m
        build = _gauge(
            "sts_agent_build_info", "Agent version; always 1.", ["version", "python_version"]
        )
        build.add_metric([__version__, platform.python_version()], 1)
        yield build
        rounds = CounterMetricFamily("sts_agent_rounds", "Probe rounds completed.")
        rounds.add_metric([], m.rounds)
        yield rounds
        skipped = CounterMetricFamily(
            "sts_agent_rounds_skipped",
            "Scheduled rounds skipped because the previous round was still running.",
        )
        skipped.add_metric([], m.rounds_skipped)
        yield skipped
        report = m.latest
        if report is None:
            return
        yield from _report_families(report)


def _report_families(report: Report) -> Iterator[Metric]:
    last = _gauge("sts_agent_probe_last_run_timestamp_seconds", "When the latest round finished.")
    last.add_metric([], report.finished)
    yield last
    dur = _gauge("sts_agent_round_duration_seconds", "Wall time of the latest round.")
    dur.add_metric([], report.finished - report.started)
    yield dur

    yield from _endpoint_families(report)
    yield _host_info(report)

    imds = _gauge("sts_agent_imds_available", "1 if IMDSv2 answered during the latest discovery.")
    imds.add_metric([], 1.0 if report.imds.available else 0.0)
    yield imds
    resolvers = _gauge(
        "sts_agent_resolver_info",
        "Resolvers in use and whether each is the Amazon-provided DNS; always 1.",
        ["resolver", "amazon_provided"],
    )
    for r in report.resolvers:
        resolvers.add_metric([r.label, "true" if r.amazon_provided else "false"], 1)
    yield resolvers
    if report.sdk is not None:
        sdk = _gauge(
            "sts_agent_sdk_endpoint_info",
            "STS endpoint boto3 on this host resolves to from the agent's environment; always 1.",
            ["endpoint_url", "mode"],
        )
        sdk.add_metric([report.sdk.endpoint_url or "", report.sdk.mode], 1)
        yield sdk
        proxied = _gauge(
            "sts_agent_sdk_proxied",
            "1 if boto3 on this host would send STS calls through an HTTPS proxy (the proxy "
            "then decides the path); the proxy itself is in check output and the status page.",
            [],
        )
        proxied.add_metric([], 1 if report.sdk.proxy else 0)
        yield proxied
        # Where AWS serves a global call from this host (agent.verdicts.serving).
        if report.sdk.global_served_why and report.sdk.global_served_in:
            east = _gauge(
                "sts_agent_sdk_global_served_cross_region",
                "1 if a global STS call from this host is served in us-east-1 although the "
                "host is elsewhere (custom resolver or opt-in region), 0 if in its own region.",
                [],
            )
            served = (report.sdk.global_served_in, report.sdk.global_served_why)
            east.add_metric([], 1 if cross_region(*served) else 0)
            yield east
    findings = _gauge(
        "sts_agent_findings",
        "Active findings by stable code and severity (see the README for each code).",
        ["code", "severity"],
    )
    counts: dict[tuple[str, str], int] = {}
    for f in report.findings:
        counts[(f.code, f.severity)] = counts.get((f.code, f.severity), 0) + 1
    for (code, sev), n in sorted(counts.items()):
        findings.add_metric([code, sev], n)
    yield findings
    yield from _audit_families(report.audit)


def _host_info(report: Report) -> Metric:
    info = _gauge(
        "sts_agent_host_info",
        "This host's identity for joins in fleet rules, from IMDS or configuration "
        '("" when unknown); always 1.',
        ["region", "availability_zone", "vpc_id", "account_id"],
    )
    i = report.imds
    values = (report.region, i.availability_zone, i.vpc_id, i.account_id)
    info.add_metric([v or "" for v in values], 1)
    return info


def _endpoint_families(report: Report) -> Iterator[Metric]:
    path = _gauge(
        "sts_agent_endpoint_path",
        "Path an STS name takes per resolver: exactly one of vpce, private, public, mixed, "
        'unresolved is 1. resolver="hosts_file" when the hosts file pins the name ahead of DNS.',
        ["endpoint", "resolver", "path"],
    )
    addr_info = _gauge(
        "sts_agent_endpoint_address_info",
        'Probed addresses of an STS name: each ENI, and address="public" for all public ones; '
        "with the class and the ENI's Availability Zone where known; always 1.",
        ["endpoint", "address", "class", "availability_zone"],
    )
    met = _gauge(
        "sts_agent_endpoint_expectation_met",
        "1 if the endpoint's path matches the configured expectation, else 0.",
        ["endpoint"],
    )
    dropped = _gauge(
        "sts_agent_endpoint_addresses_dropped",
        "Addresses beyond max_addresses_per_endpoint that were not probed or exported.",
        ["endpoint"],
    )
    public_hash = _gauge(
        "sts_agent_endpoint_public_address_hash",
        "CRC-32 of the endpoint's sorted public addresses this round (0 if none): changes "
        "when DNS hands out other public addresses, without a series per address.",
        ["endpoint"],
    )
    success = _gauge(
        "sts_agent_probe_success",
        '1 if the latest GetCallerIdentity to this ENI succeeded; for address="public", if '
        "every public address probed this round did.",
        ["endpoint", "address"],
    )
    phase_gauge = _gauge(
        "sts_agent_request_phase_seconds",
        "Seconds each phase of the latest GetCallerIdentity to this ENI took (for "
        'address="public": the largest over the public addresses that reached the phase).',
        ["endpoint", "address", "phase"],
    )
    expiry = _gauge(
        "sts_agent_tls_certificate_expiry_timestamp_seconds",
        'notAfter of the certificate the address presented (address="public": the earliest).',
        ["endpoint", "address"],
    )
    local = _gauge(
        "sts_agent_endpoint_local_az_eni",
        "1 if the endpoint has an ENI in this host's Availability Zone; exported only when "
        "the AZs are known.",
        ["endpoint"],
    )
    cross = _gauge(
        "sts_agent_endpoint_cross_az_ratio",
        "Share of the ENI addresses this resolver handed out that lie in another AZ than "
        "this host's; exported only when the AZs are known.",
        ["endpoint", "resolver"],
    )
    zones, host_az = report.eni_zones, report.imds.availability_zone
    ids, host_az_id = report.eni_zone_ids, report.imds.availability_zone_id
    for ep in report.endpoints:
        host = ep.endpoint.hostname
        for resolver, p_now in ep.paths_by_source.items():
            for p in PATHS:
                path.add_metric([host, resolver, p], 1.0 if p_now == p else 0.0)
        if ep.expectation_met is not None:
            met.add_metric([host], 1.0 if ep.expectation_met else 0.0)
        dropped.add_metric([host], ep.dropped_addresses)
        public_hash.add_metric([host], public_address_hash(ep))
        for group in by_label(ep, report.vpc_cidrs):
            az = "" if group.klass == "public" else zones.get(group.label, "")
            addr_info.add_metric([host, group.label, group.klass, az], 1)
            success.add_metric([host, group.label], 1.0 if group.success else 0.0)
            for phase, seconds in group.phases().items():
                phase_gauge.add_metric([host, group.label, phase], seconds)
            if group.cert_not_after:
                expiry.add_metric([host, group.label], group.cert_not_after)
        has_local = local_az_eni(ep, zones, host_az, report.vpce_enis, ids, host_az_id)
        if has_local is not None:
            local.add_metric([host], 1.0 if has_local else 0.0)
        for v in ep.verdicts:
            ratio = cross_az_ratio(v.addresses, zones, host_az, ids, host_az_id)
            if ratio is not None:
                cross.add_metric([host, v.resolver], ratio)
    yield from (path, addr_info, met, dropped, public_hash, success, phase_gauge, expiry)
    yield from (local, cross)


def _audit_families(audit: HostAuditResult | None) -> Iterator[Metric]:
    """Counts from the host audits; they carry only bounded labels (kind, path, mode)."""
    if audit is None:
        return
    if audit.connections is not None:
        g = _gauge(
            "sts_agent_host_connections",
            "Established TCP connections from this host to addresses of the STS names.",
            ["endpoint_kind", "path"],
        )
        for (kind, p), n in sorted(
            audit.connections.counts.items(), key=lambda kv: "/".join(kv[0])
        ):
            g.add_metric([kind, p], n)
        yield g
    procs = audit.processes
    if procs is not None and procs.permitted:
        g = _gauge(
            "sts_agent_process_sdk_mode",
            "Audited processes by the STS endpoint mode their AWS settings resolve to.",
            ["mode"],
        )
        for mode, n in sorted(procs.counts_by_mode.items()):
            g.add_metric([mode], n)
        yield g
