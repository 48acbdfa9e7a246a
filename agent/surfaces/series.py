"""Which `address` label value each probed address exports under.

Endpoint ENIs (class `vpce` and `private`) are few and stable, and a series per
ENI is what an operator reads ("the ENI in us-east-2b fails"), so they keep
their IP.  Public addresses are drawn from large pools with short TTLs: a label
per IP would start and end a set of series with every DNS rotation, so they all
share `address="public"`.  The concrete IPs stay in `check`, the JSON report,
the status page and the logs; a change is still visible through
`sts_agent_endpoint_public_address_hash`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from agent.results import AddressClass, EndpointReport, StsProbe
from agent.verdicts.classify import classify

PUBLIC = "public"


def address_label(address: str, klass: AddressClass) -> str:
    return PUBLIC if klass == "public" else address


def probe_classes(ep: EndpointReport, vpc_cidrs: Sequence[str]) -> dict[str, AddressClass]:
    """The class of every probed address, also of those only the address book still holds."""
    known = ep.classes
    return {p.address: known.get(p.address) or classify(p.address, vpc_cidrs) for p in ep.probes}


@dataclass(frozen=True)
class LabelledProbes:
    """The probes of one endpoint that export under one `address` value."""

    label: str
    klass: AddressClass
    probes: tuple[StsProbe, ...]

    @property
    def success(self) -> bool:
        """True only if every address behind the label answered."""
        return all(p.success for p in self.probes)

    def phases(self) -> dict[str, float]:
        """Each phase's seconds; for several addresses the largest of those that reached
        it, so one address failing early does not hide the phases the others got to."""
        out: dict[str, float] = {}
        for p in self.probes:
            for k, v in p.phases.as_dict().items():
                if v is not None:
                    out[k] = max(v, out.get(k, v))
        return out

    @property
    def cert_not_after(self) -> float | None:
        """The earliest certificate expiry behind the label."""
        times = [p.cert_not_after for p in self.probes if p.cert_not_after]
        return min(times) if times else None


def by_label(ep: EndpointReport, vpc_cidrs: Sequence[str]) -> list[LabelledProbes]:
    """The endpoint's probes grouped by `address` label, ENIs in probe order, then public."""
    classes = probe_classes(ep, vpc_cidrs)
    groups: dict[str, list[StsProbe]] = {}
    for p in ep.probes:
        groups.setdefault(address_label(p.address, classes[p.address]), []).append(p)
    return [
        LabelledProbes(label, "public" if label == PUBLIC else classes[ps[0].address], tuple(ps))
        for label, ps in sorted(groups.items(), key=lambda kv: kv[0] == PUBLIC)
    ]


def public_address_hash(ep: EndpointReport) -> int:
    """CRC-32 of the endpoint's sorted public addresses this round; 0 when it has none."""
    public = sorted(a for a, k in ep.classes.items() if k == "public")
    return zlib.crc32(",".join(public).encode()) if public else 0
