"""The agent's metric families, and the names a PromQL expression selects from them.

Shared by the dashboard, Prometheus and collector tests, which check that what they
query or receive is something the agent exports.
"""

from __future__ import annotations

import re

# Metric names as the agent exposes them (histograms without _bucket/_sum/_count).
AGENT_METRICS = frozenset(
    {
        "sts_agent_dns_lookup_duration_seconds",
        "sts_agent_dns_lookups_total",
        "sts_agent_dns_lookup_failures_total",
        "sts_agent_endpoint_path",
        "sts_agent_endpoint_address_info",
        "sts_agent_endpoint_expectation_met",
        "sts_agent_request_duration_seconds",
        "sts_agent_requests_total",
        "sts_agent_request_failures_total",
        "sts_agent_probe_success",
        "sts_agent_tls_certificate_expiry_timestamp_seconds",
        "sts_agent_sdk_endpoint_info",
        "sts_agent_sdk_proxied",
        "sts_agent_imds_available",
        "sts_agent_resolver_info",
        "sts_agent_build_info",
        "sts_agent_probe_last_run_timestamp_seconds",
        "sts_agent_findings",
        "sts_agent_endpoint_addresses_dropped",
        "sts_agent_host_connections",
        "sts_agent_process_sdk_mode",
        "sts_agent_round_duration_seconds",
        "sts_agent_rounds_total",
        "sts_agent_rounds_skipped_total",
        "sts_agent_host_info",
        "sts_agent_request_phase_seconds",
        "sts_agent_endpoint_local_az_eni",
        "sts_agent_endpoint_cross_az_ratio",
        "sts_agent_endpoint_public_address_hash",
    }
)
HISTOGRAMS = frozenset(
    {"sts_agent_dns_lookup_duration_seconds", "sts_agent_request_duration_seconds"}
)
PATH_STATES = ("vpce", "private", "public", "mixed", "unresolved")

_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
    | {"bool", "offset", "inf", "nan"}
)


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects, histogram suffixes folded into the family."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges and subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", s):
        word = m.group(0)
        if s[m.end() :].lstrip().startswith("(") or word.lower() in _KEYWORDS:
            continue  # a function call or an operator keyword
        family = re.sub(r"_(bucket|sum|count)$", "", word)
        names.add(family if family in HISTOGRAMS else word)
    return names
