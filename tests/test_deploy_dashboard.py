"""The Grafana dashboard: every query names real agent metrics and is valid PromQL.

PromQL is parsed by promtool itself: each panel expression becomes a
recording rule in a temporary rules file, which `promtool check rules` parses.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed import ROOT
from testbed.require import require_binary
from tests.support.promql import AGENT_METRICS, PATH_STATES, metric_names

DASHBOARD = ROOT / "deploy" / "grafana" / "sts-agent-dashboard.json"
FLEET_DASHBOARD = ROOT / "deploy" / "grafana" / "sts-agent-fleet-dashboard.json"
FLEET_RULES = ROOT / "deploy" / "prometheus" / "rules" / "sts-agent-fleet.rules.yml"


def promql_errors(exprs: list[str], tmp_path: Path) -> str:
    """promtool's complaints about the expressions; empty when all parse."""
    promtool = require_binary("promtool")
    rules = [{"record": f"check:expr_{i}", "expr": e} for i, e in enumerate(exprs)]
    f = tmp_path / "exprs.rules.yml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "exprs", "rules": rules}]}))
    out = subprocess.run(
        [promtool, "check", "rules", str(f)], capture_output=True, text=True, timeout=60
    )
    return "" if out.returncode == 0 else out.stdout + out.stderr


def grafana_to_promql(expr: str) -> str:
    """Replace Grafana's variables with values Prometheus accepts in the same places."""
    for var, value in (("$__rate_interval", "5m"), ("$__interval", "1m"), ("$__range", "1h")):
        expr = expr.replace(var, value)
    return re.sub(r"\$\{?\w+(?::\w+)?\}?", ".*", expr)


def dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def panels(path: Path = DASHBOARD) -> list[dict[str, Any]]:
    return [p for p in dashboard(path)["panels"] if p["type"] != "row"]


def exprs(path: Path = DASHBOARD) -> list[str]:
    return [t["expr"] for p in panels(path) for t in p["targets"]]


def fleet_records() -> set[str]:
    doc = yaml.safe_load(FLEET_RULES.read_text())
    return {r["record"] for g in doc["groups"] for r in g["rules"] if "record" in r}


BOTH = pytest.mark.parametrize("path", [DASHBOARD, FLEET_DASHBOARD], ids=lambda p: p.stem)


def by_title(title: str) -> dict[str, Any]:
    return next(p for p in panels() if p["title"] == title)


def test_metric_name_extraction() -> None:
    """Guards the checks below: the extractor finds names and skips the rest."""
    expr = (
        "histogram_quantile(0.99, sum by (le, endpoint) (rate(sts_agent_request_duration_seconds_"
        'bucket{phase="total"}[5m]))) > 0.5 and on (instance) up == 1 unless sts_agnet_typo'
    )
    assert metric_names(expr) == {"sts_agent_request_duration_seconds", "up", "sts_agnet_typo"}


def test_every_expression_uses_only_agent_metrics() -> None:
    used: set[str] = set()
    for e in exprs():
        names = metric_names(grafana_to_promql(e))
        assert names, f"no metric in {e!r}"
        assert names <= AGENT_METRICS, f"unknown metric {names - AGENT_METRICS} in {e!r}"
        used |= names
    assert used == AGENT_METRICS, f"metrics shown nowhere: {sorted(AGENT_METRICS - used)}"


def test_fleet_rows_show_every_fleet_record_and_nothing_unknown() -> None:
    """Each fleet query names recording rules that exist (or agent metrics), and all are shown."""
    known = AGENT_METRICS | fleet_records()
    used: set[str] = set()
    for e in exprs(FLEET_DASHBOARD):
        names = metric_names(grafana_to_promql(e))
        assert names & fleet_records() or "sts_agent_host_info" in names, e
        assert names <= known, f"unknown {names - known} in {e!r}"
        used |= names
    assert fleet_records() <= used, f"records shown nowhere: {sorted(fleet_records() - used)}"


def test_fleet_panels_follow_the_vpc_variable() -> None:
    for p in panels(FLEET_DASHBOARD):
        for t in p["targets"]:
            if "threshold" not in t["expr"]:
                assert '"$vpc_id"' in t["expr"], f"{p['title']}: ignores $vpc_id"
            assert "$__rate_interval" in t["expr"] or "rate(" not in t["expr"], p["title"]
    variables = {v["name"]: v for v in dashboard(FLEET_DASHBOARD)["templating"]["list"]}
    assert variables["vpc_id"]["definition"] == "label_values(sts_agent_host_info, vpc_id)"


@BOTH
def test_every_expression_parses(path: Path, tmp_path: Path) -> None:
    queries = [grafana_to_promql(e) for e in exprs(path)]
    variables = [v for v in dashboard(path)["templating"]["list"] if v["type"] == "query"]
    for v in variables:
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", v["definition"])
        assert m, v["definition"]
        queries.append(grafana_to_promql(m.group(1)))
        assert metric_names(grafana_to_promql(m.group(1))) <= AGENT_METRICS
    assert promql_errors(queries, tmp_path) == ""


def test_promql_check_rejects_a_broken_expression(tmp_path: Path) -> None:
    """Guards the check above: promtool must really parse what we hand it."""
    assert "parse error" in promql_errors(["sum by (endpoint (sts_agent_probe_success)"], tmp_path)


@pytest.mark.parametrize(
    ("path", "names"),
    [(DASHBOARD, ("instance", "endpoint")), (FLEET_DASHBOARD, ("vpc_id", "endpoint"))],
)
def test_variables(path: Path, names: tuple[str, ...]) -> None:
    variables = {v["name"]: v for v in dashboard(path)["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    for name in names:
        v = variables[name]
        assert v["type"] == "query" and v["definition"].startswith("label_values(")
        assert v["datasource"]["uid"] == "${datasource}"
        assert v["multi"] and v["includeAll"] and v["allValue"] == ".*"


@BOTH
def test_every_panel_follows_the_datasource_variable(path: Path) -> None:
    for p in panels(path):
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"


def test_every_host_panel_follows_the_instance_variable() -> None:
    for p in panels():
        for t in p["targets"]:
            assert '"$instance"' in t["expr"], f"{p['title']}: ignores $instance"
            assert "$__rate_interval" in t["expr"] or "rate(" not in t["expr"], p["title"]


@BOTH
def test_layout_is_a_valid_grid(path: Path) -> None:
    doc = dashboard(path)
    assert doc["schemaVersion"] >= 39 and doc["uid"] and doc["title"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for p in doc["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def test_path_timeline_maps_every_state() -> None:
    p = by_title("Path per endpoint and resolver")
    assert p["type"] == "state-timeline"
    expr = p["targets"][0]["expr"]
    codes = {
        m.group(1): m.group(2)
        for m in re.finditer(r'sts_agent_endpoint_path\{[^}]*path="(\w+)"\} \* (\d+)', expr)
    }
    assert set(codes) == set(PATH_STATES)
    mapping = p["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert {code: mapping[code]["text"] for code in codes.values()} == {
        code: path for path, code in codes.items()
    }


@pytest.mark.parametrize(
    ("title", "kind", "metric"),
    [
        ("Path per endpoint and resolver", "state-timeline", "sts_agent_endpoint_path"),
        (
            "Latency distribution per endpoint (p50, p99)",
            "timeseries",
            "sts_agent_request_duration_seconds",
        ),
        ("Request latency by address", "timeseries", "sts_agent_request_phase_seconds"),
        ("Phases by address", "timeseries", "sts_agent_request_phase_seconds"),
        ("Host identity", "table", "sts_agent_host_info"),
        ("Request failures by reason", "timeseries", "sts_agent_request_failures_total"),
        ("DNS failures by reason", "timeseries", "sts_agent_dns_lookup_failures_total"),
        ("Probe success by address", "state-timeline", "sts_agent_probe_success"),
        ("SDK endpoint", "table", "sts_agent_sdk_endpoint_info"),
        ("Resolvers", "table", "sts_agent_resolver_info"),
        ("Findings", "table", "sts_agent_findings"),
        ("Live connections to STS", "timeseries", "sts_agent_host_connections"),
        ("Certificate expiry", "bargauge", "sts_agent_tls_certificate_expiry_timestamp_seconds"),
    ],
)
def test_required_panels(title: str, kind: str, metric: str) -> None:
    p = by_title(title)
    assert p["type"] == kind
    assert any(metric in metric_names(grafana_to_promql(t["expr"])) for t in p["targets"])
    if kind == "table":
        assert all(t.get("format") == "table" and t["instant"] for t in p["targets"])


def test_latency_panels_show_percentiles_per_endpoint_and_phases_per_address() -> None:
    """The histogram has no address label (per endpoint, phase="total"); per-ENI gauges do."""
    per_endpoint = by_title("Latency distribution per endpoint (p50, p99)")["targets"]
    quantiles = [re.findall(r"histogram_quantile\(([\d.]+)", t["expr"]) for t in per_endpoint]
    assert quantiles == [["0.5"], ["0.99"]]
    assert all("sum by (le, endpoint) (" in t["expr"] for t in per_endpoint)
    assert all('phase="total"' in t["expr"] for t in per_endpoint)
    by_address = by_title("Request latency by address")["targets"][0]["expr"]
    assert "max by (endpoint, address) (sts_agent_request_phase_seconds" in by_address
    by_phase = by_title("Phases by address")["targets"][0]["expr"]
    assert "max by (endpoint, address, phase)" in by_phase
    for e in exprs() + exprs(FLEET_DASHBOARD):
        if "sts_agent_request_duration_seconds" in e:
            assert "address" not in e and 'phase="total"' in e, e


@BOTH
def test_tables_of_counts_show_the_count(path: Path) -> None:
    """A table of info series hides their constant 1; a table of counts must not hide the
    number it exists for (Grafana names it Value, or Value #<refId> with several queries)."""
    for p in panels(path):
        if p["type"] != "table":
            continue
        counted = [t for t in p["targets"] if ":count" in t["expr"] or "count(" in t["expr"]]
        if not counted:
            continue
        org = next(t["options"] for t in p["transformations"] if t["id"] == "organize")
        hidden = {k for k, v in org["excludeByName"].items() if v}
        for t in counted:
            value = "Value" if len(p["targets"]) == 1 else f"Value #{t['refId']}"
            assert value not in hidden, f"{p['title']}: hides its count"
            assert org["renameByName"].get(value), f"{p['title']}: name the count's column"
        if len(p["targets"]) > 1:
            first = p["transformations"][0]["id"]
            assert first == "merge", f"{p['title']}: one table, not one per query"
