"""Synthetic rounds for the history: Reports built from a few facts per address.

The history keeps only paths, classes, outcomes and total times, so a round
described as `{endpoint: (path, [(address, class, total or None), ...])}` is
all the page and its benchmark need; `None` marks a failed call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agent.results import (
    AddressClass,
    AddressVerdict,
    Endpoint,
    EndpointReport,
    Finding,
    ImdsInfo,
    Path,
    PathVerdict,
    Phases,
    Report,
    StsProbe,
    StsReason,
)

Call = tuple[str, AddressClass, float | None]
Round = Mapping[str, tuple[Path, Sequence[Call]]]


def synthetic_report(
    at: float,
    endpoints: Round,
    findings: Sequence[tuple[str, str | None]] = (),
    *,
    reason: StsReason = "http_5xx",
) -> Report:
    """One finished round at `at`; findings are (code, endpoint) pairs, all warnings."""
    reports = []
    for host, (path, calls) in endpoints.items():
        verdict = PathVerdict(
            host, "127.10.0.2", path, tuple(AddressVerdict(a, k) for a, k, _ in calls)
        )
        probes = tuple(
            StsProbe(
                endpoint=host,
                address=a,
                port=443,
                success=total is not None,
                phases=Phases(total=total),
                reason=None if total is not None else reason,
                error=None if total is not None else f"{reason} from {a}",
            )
            for a, _, total in calls
        )
        reports.append(
            EndpointReport(
                Endpoint(host, "regional", "us-east-2", "vpce"),
                path,
                verdicts=(verdict,),
                probes=probes,
            )
        )
    return Report(
        started=at - 0.2,
        finished=at,
        region="us-east-2",
        region_source="config",
        imds=ImdsInfo(available=False, reason="disabled"),
        resolvers=(),
        vpc_cidrs=("127.10.0.0/16",),
        sdk=None,
        endpoints=tuple(reports),
        findings=tuple(
            Finding(code, "warning", f"{code} seen", endpoint=ep) for code, ep in findings
        ),
    )
