"""`check`'s text report: lines a person reads, each fact said once."""

from __future__ import annotations

from agent.config import Settings
from agent.results import DnsLookup, DnsQuery
from agent.surfaces.report_text import render
from agent.verdicts.findings import evaluate
from tests.support.minimal_rounds import AMAZON_DNS, REGIONAL, endpoint, probe, report


def _failed(reason: str, detail: str, rcode: str | None = None) -> str:
    q = DnsQuery("A", 0.001, rcode, (), reason=reason, detail=detail)  # type: ignore[arg-type]
    lk = DnsLookup(REGIONAL, AMAZON_DNS, (q,))
    text = render(report(endpoint(lookups=(lk,), probes=())))
    (line,) = [ln.strip() for ln in text.splitlines() if "no address" in ln]
    return line


def test_a_failed_lookup_says_its_reason_once() -> None:
    assert _failed("servfail", "SERVFAIL", "SERVFAIL") == "no address: SERVFAIL"
    assert _failed("timeout", "no answer from 127.10.0.2 in 0.8s") == (
        "no address: timeout: no answer from 127.10.0.2 in 0.8s"
    )
    assert _failed("nodata", "") == "no address: nodata"


def test_expiring_certificates_name_every_address_that_presents_them() -> None:
    soon = 1_000_000.0 + 2 * 86400
    ep = endpoint(
        probes=(
            probe("127.10.138.148", cert_not_after=soon),
            probe("127.10.139.20", cert_not_after=soon),
        )
    )
    r = report(ep)
    (f,) = [f for f in evaluate(r, Settings(), 1_000_000.0) if f.code == "CERT_EXPIRING"]
    assert "certificate at 127.10.138.148, 127.10.139.20 expires in 2.0 days" in f.message
