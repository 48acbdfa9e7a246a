"""Prometheus scrape configs and alerting rules, checked by promtool and Prometheus.

promtool checks every config and the rules, and runs the rules' unit tests.
The relabelling of the EC2 and Kubernetes configs is then exercised by a real
Prometheus: the service-discovery block is swapped for a file holding the
same `__meta_*` labels that discovery would produce, with loopback addresses,
and the resulting targets are read back from Prometheus's API.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed import ROOT
from testbed.prometheus import prometheus_process
from testbed.require import require_binary
from tests.support.promql import AGENT_METRICS, metric_names

PROM = ROOT / "deploy" / "prometheus"
RULES = PROM / "rules" / "sts-agent.rules.yml"
RULE_TESTS = PROM / "rules" / "sts-agent.rules.test.yml"
FLEET_RULES = PROM / "rules" / "sts-agent-fleet.rules.yml"
FLEET_RULE_TESTS = PROM / "rules" / "sts-agent-fleet.rules.test.yml"
RULE_FILES = {RULES: RULE_TESTS, FLEET_RULES: FLEET_RULE_TESTS}
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "sts-agent-alertmanager.yml"
CONFIGS = ["prometheus-static.yml", "prometheus-ec2-sd.yml", "prometheus-kubernetes.yml"]
NO_K8S_SD = "field kubernetes_sd_configs not found"
REGIONAL = "sts.eu-west-1.amazonaws.com"


def promtool(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    tool = require_binary("promtool")
    return subprocess.run([tool, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def rules(*files: Path) -> list[dict[str, Any]]:
    docs = [yaml.safe_load(f.read_text()) for f in files or RULE_FILES]
    return [r for doc in docs for g in doc["groups"] for r in g["rules"]]


def alerts(*files: Path) -> list[dict[str, Any]]:
    return [r for r in rules(*files) if "alert" in r]


def recorded() -> set[str]:
    return {r["record"] for r in rules() if "record" in r}


def alert_cases() -> list[dict[str, Any]]:
    """Every alert_rule_test case of both unit-test files."""
    return [
        case
        for tests in RULE_FILES.values()
        for test in yaml.safe_load(tests.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]


def scrape_config(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((PROM / name).read_text())
    return doc


# --- rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rule_file", list(RULE_FILES), ids=lambda p: p.name)
def test_rules_pass_promtool_check(rule_file: Path) -> None:
    out = promtool("check", "rules", str(rule_file))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules(rule_file))} rules found" in out.stdout


@pytest.mark.parametrize("tests", list(RULE_FILES.values()), ids=lambda p: p.name)
def test_rule_unit_tests_pass(tests: Path) -> None:
    out = promtool("test", "rules", str(tests))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_rule_unit_tests_can_fail(tmp_path: Path) -> None:
    """Guards the test above: a wrong expectation must make promtool fail."""
    shutil.copy(RULES, tmp_path / RULES.name)
    broken = RULE_TESTS.read_text().replace(
        'exp_labels: {severity: critical, job: sts-agent, instance: "ip-10-0-1-15:9472", '
        "endpoint: sts.eu-west-1.amazonaws.com}",
        'exp_labels: {severity: warning, job: sts-agent, instance: "ip-10-0-1-15:9472", '
        "endpoint: sts.eu-west-1.amazonaws.com}",
        1,
    )
    assert broken != RULE_TESTS.read_text()
    (tmp_path / RULE_TESTS.name).write_text(broken)
    out = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert out.returncode != 0 and "FAILED" in out.stdout + out.stderr


def test_every_alert_is_actionable() -> None:
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names))
    for a in alerts():
        assert a["labels"]["severity"] in ("critical", "warning"), a["alert"]
        assert a["annotations"]["summary"].strip(), a["alert"]
        assert len(a["annotations"]["description"].split()) >= 20, f"{a['alert']}: say what to do"
        assert "for" in a, f"{a['alert']}: a single bad scrape must not page"


def test_every_alert_is_tested_firing_and_silent() -> None:
    cases: dict[str, set[bool]] = {}
    for case in alert_cases():
        cases.setdefault(case["alertname"], set()).add(bool(case["exp_alerts"]))
    for a in alerts():
        assert cases.get(a["alert"]) == {True, False}, f"{a['alert']}: needs both cases"


def test_every_recording_rule_is_tested() -> None:
    tests = yaml.safe_load(FLEET_RULE_TESTS.read_text())["tests"]
    checked = {
        name
        for test in tests
        for case in test.get("promql_expr_test", [])
        for name in metric_names(case["expr"])
    }
    # The threshold is exercised through StsFleetOffDesignedPath, firing and not.
    assert recorded() - checked == {"fleet:sts_agent_off_path_threshold:ratio"}


def test_rules_use_only_agent_metrics() -> None:
    for r in rules():
        names = metric_names(r["expr"])
        known = AGENT_METRICS | {"up"} | recorded()
        assert names <= known, f"{r.get('alert') or r['record']}: {names - known}"
        assert names or r.get("record") == "fleet:sts_agent_off_path_threshold:ratio", r


def test_fleet_alerts_are_scoped_and_record_names_follow_the_convention() -> None:
    for a in alerts(FLEET_RULES):
        assert a["labels"]["scope"] == "fleet", a["alert"]
    for name in recorded():
        level, metric, ops = name.split(":")
        assert level and metric.startswith("sts_agent") and ops, name


def test_threshold_override_per_vpc(tmp_path: Path) -> None:
    """The documented convention: a rule with a vpc_id label overrides the default for it.

    Both VPCs have two hosts in eight off the path (25 %); the override of 50 %
    keeps vpc-tolerant quiet, vpc-default still alerts on the 10 % default.
    """
    threshold = "fleet:sts_agent_off_path_threshold:ratio"
    override = {"record": threshold, "expr": "vector(0.5)", "labels": {"vpc_id": "vpc-tolerant"}}
    series = []
    for vpc in ("vpc-default", "vpc-tolerant"):
        for i in range(8):
            host = f'job="sts-agent", instance="{vpc}-{i}"'
            met = "sts_agent_endpoint_expectation_met"
            series += [
                {"series": f'sts_agent_host_info{{{host}, vpc_id="{vpc}"}}', "values": "1x30"},
                {"series": f'{met}{{{host}, endpoint="{REGIONAL}"}}', "values": f"{int(i > 1)}x30"},
            ]
    firing = 'ALERTS{alertname="StsFleetOffDesignedPath", alertstate="firing"}'
    test = {
        "rule_files": [FLEET_RULES.name, "thresholds.rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": f"count by (vpc_id) ({firing})",
                        "eval_time": "20m",
                        "exp_samples": [{"labels": '{vpc_id="vpc-default"}', "value": 1}],
                    }
                ],
            }
        ],
    }
    shutil.copy(FLEET_RULES, tmp_path / FLEET_RULES.name)
    (tmp_path / "override.test.yml").write_text(yaml.safe_dump(test))
    thresholds = tmp_path / "thresholds.rules.yml"
    thresholds.write_text(yaml.safe_dump({"groups": [{"name": "t", "rules": [override]}]}))
    out = promtool("test", "rules", "override.test.yml", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    # And without the override both VPCs alert: the test above can fail.
    thresholds.write_text("groups: []\n")
    out = promtool("test", "rules", "override.test.yml", cwd=tmp_path)
    assert out.returncode != 0 and "vpc-tolerant" in out.stdout + out.stderr


def firing_labels(alertname: str) -> list[dict[str, str]]:
    return [
        {str(k): str(v) for k, v in exp["exp_labels"].items()}
        for case in alert_cases()
        if case["alertname"] == alertname
        for exp in case["exp_alerts"]
    ]


def matcher_names(matchers: list[str]) -> set[str]:
    names: set[str] = set()
    for m in matchers:
        key, op, value = re.fullmatch(r'(\w+)(=~|=)"([^"]*)"', m).groups()  # type: ignore[union-attr]
        assert key == "alertname", m
        names |= set(value.split("|")) if op == "=~" else {value}
    return names


def for_seconds(alertname: str) -> int:
    """An alert's `for`, in seconds: the fleet alert must be active before its targets."""
    duration = next(a["for"] for a in alerts() if a["alert"] == alertname)
    return int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600}[duration[-1]]


def test_alertmanager_inhibition_matches_the_alert_labels() -> None:
    """Each inhibit rule's `equal` labels are on its source and its target alerts.

    Read from the promtool unit tests' expected labels, so this checks the
    labels the rules really produce, not what they claim.  amtool is not
    packaged here; the file's shape is checked instead.
    """
    doc = yaml.safe_load(ALERTMANAGER.read_text())
    assert {r["name"] for r in doc["receivers"]} >= {doc["route"]["receiver"]}
    names = {a["alert"] for a in alerts()}
    inhibited: set[str] = set()
    for rule in doc["inhibit_rules"]:
        sources = matcher_names(rule["source_matchers"])
        targets = matcher_names(rule["target_matchers"])
        assert sources <= names and targets <= names, rule
        for alert in sources | targets:
            assert any(set(rule["equal"]) <= set(labels) for labels in firing_labels(alert)), (
                f"{alert} never fires with {rule['equal']}"
            )
        inhibited |= targets
    assert {a["alert"] for a in alerts(FLEET_RULES)} <= {
        n for r in doc["inhibit_rules"] for n in matcher_names(r["source_matchers"])
    }
    assert inhibited == {
        "StsEndpointPathNotAsExpected",
        "StsPrivateDnsFlippedToPublic",
        "StsProbeFailing",
        "StsSdkCaBundleUnusable",
        "StsSdkGlobalServedInUsEast1",
        "StsEndpointUnreachable",
        "StsEndpointUnresolved",
    }
    for rule in doc["inhibit_rules"]:
        for source in matcher_names(rule["source_matchers"]):
            for target in matcher_names(rule["target_matchers"]):
                # A minute apart: the fleet alert reads another group's recording rules.
                assert for_seconds(source) + 60 <= for_seconds(target), (source, target)
    fleet_route = next(r for r in doc["route"]["routes"] if r["matchers"] == ['scope="fleet"'])
    assert fleet_route is doc["route"]["routes"][0], "fleet alerts must route before severity"


@pytest.mark.parametrize(
    ("alert", "needle"),
    [
        ("StsEndpointPathNotAsExpected", "sts_agent_endpoint_expectation_met == 0"),
        ("StsProbeFailing", "sts_agent_probe_success == 0"),
        (
            "StsSdkUsesGlobalEndpoint",
            'code=~"SDK_USES_GLOBAL_ENDPOINT|PROCESS_USES_GLOBAL_ENDPOINT"',
        ),
        ("StsSdkGlobalServedInUsEast1", 'code="SDK_GLOBAL_SERVED_US_EAST_1"'),
        ("StsAgentDown", 'up{job="sts-agent"} == 0'),
        ("StsImdsUnreachable", "sts_agent_imds_available == 0"),
    ],
)
def test_alert_watches_the_documented_condition(alert: str, needle: str) -> None:
    expr = next(a["expr"] for a in alerts() if a["alert"] == alert)
    assert needle in " ".join(expr.split())


# --- scrape configs ------------------------------------------------------------------------


@pytest.mark.parametrize("name", CONFIGS)
def test_scrape_config_passes_promtool(name: str, tmp_path: Path) -> None:
    out = promtool("check", "config", name)
    if out.returncode != 0 and NO_K8S_SD in out.stdout + out.stderr:
        # Debian's Prometheus is built without Kubernetes discovery.  Check
        # everything else with that one block swapped for file discovery;
        # the relabelling test below runs the relabel rules for real.
        doc = scrape_config(name)
        for job in doc["scrape_configs"]:
            sd = job.pop("kubernetes_sd_configs")
            assert [c["role"] for c in sd] == ["pod"]
            job["file_sd_configs"] = [{"files": [str(tmp_path / "targets.json")]}]
        doc["rule_files"] = [str(PROM / f) for f in doc["rule_files"]]
        (tmp_path / name).write_text(yaml.safe_dump(doc))
        out = promtool("check", "config", name, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr


@pytest.mark.parametrize("name", CONFIGS)
def test_scrape_config_feeds_the_alerts(name: str) -> None:
    doc = scrape_config(name)
    assert [j["job_name"] for j in doc["scrape_configs"]] == ["sts-agent"]
    assert [(PROM / f).resolve() for f in doc["rule_files"]] == list(RULE_FILES)
    # Target labels named like sts_agent_host_info's would break the fleet join.
    for job in doc["scrape_configs"]:
        targets = {r.get("target_label") for r in job.get("relabel_configs", [])}
        assert not targets & {"vpc_id", "availability_zone", "region", "account_id"}, name


EC2_TARGET = {
    "targets": ["127.0.0.1:1"],  # discovery's own address; the config must replace it
    "labels": {
        "__meta_ec2_private_ip": "127.0.0.7",
        "__meta_ec2_public_ip": "127.0.0.70",
        "__meta_ec2_instance_id": "i-0123456789abcdef0",
        "__meta_ec2_availability_zone": "eu-west-1a",
        "__meta_ec2_vpc_id": "vpc-0a1b2c3d",
        "__meta_ec2_tag_Name": "billing-1",
    },
}


def k8s_pod(ip: str, port: int, port_name: str, scrape: str | None, phase: str) -> dict[str, Any]:
    labels = {
        "__meta_kubernetes_namespace": "sts-agent",
        "__meta_kubernetes_pod_name": f"pod-{ip}-{port_name}",
        "__meta_kubernetes_pod_node_name": "ip-10-0-1-15.eu-west-1.compute.internal",
        "__meta_kubernetes_pod_host_ip": ip,
        "__meta_kubernetes_pod_phase": phase,
        "__meta_kubernetes_pod_container_port_name": port_name,
        "__meta_kubernetes_pod_label_app_kubernetes_io_component": "pod-network",
        "__meta_kubernetes_pod_annotation_prometheus_io_path": "/metrics",
        "__meta_kubernetes_pod_annotation_prometheus_io_port": "9472",
    }
    if scrape is not None:
        labels["__meta_kubernetes_pod_annotation_prometheus_io_scrape"] = scrape
    return {"targets": [f"{ip}:{port}"], "labels": labels}


K8S_TARGETS = [
    k8s_pod("127.0.0.8", 9472, "sts-metrics", "true", "Running"),  # the agent: kept
    k8s_pod("127.0.0.9", 8080, "http", "true", "Running"),  # the app's own port
    k8s_pod("127.0.0.10", 9472, "sts-metrics", None, "Running"),  # not opted in
    k8s_pod("127.0.0.11", 9472, "sts-metrics", "true", "Pending"),
]


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus with both discovery configs on file targets and the rules loaded."""
    tmp = tmp_path_factory.mktemp("prometheus")
    jobs = []
    for name, sd_key, job, targets in (
        ("prometheus-ec2-sd.yml", "ec2_sd_configs", "sts-agent-ec2", [EC2_TARGET]),
        ("prometheus-kubernetes.yml", "kubernetes_sd_configs", "sts-agent-k8s", K8S_TARGETS),
    ):
        sd_file = tmp / f"{job}.json"
        sd_file.write_text(json.dumps(targets))
        cfg = scrape_config(name)["scrape_configs"][0]
        cfg.pop(sd_key)
        cfg["file_sd_configs"] = [{"files": [str(sd_file)]}]
        cfg["job_name"] = job
        jobs.append(cfg)
    config = {
        "global": {"scrape_interval": "1h", "evaluation_interval": "1h"},
        "rule_files": [str(f) for f in RULE_FILES],
        "scrape_configs": jobs,
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    with prometheus_process(
        tmp / "prometheus.yml", tmp, f"--storage.tsdb.path={tmp / 'data'}"
    ) as url:
        yield url


def discovered(base: str, expected: int) -> dict[str, Any]:
    """Active and dropped targets, once Prometheus has taken in every file target."""
    data: dict[str, Any] = {}
    for _ in range(120):
        try:
            data = get_json(f"{base}/api/v1/targets?state=any")["data"]
        except OSError:
            data = {}
        if len(data.get("activeTargets", [])) + len(data.get("droppedTargets", [])) >= expected:
            return data
        time.sleep(0.5)
    pytest.fail(f"Prometheus did not discover {expected} targets: {data}")


def test_relabelling_with_a_real_prometheus(prometheus: str) -> None:
    data = discovered(prometheus, 1 + len(K8S_TARGETS))
    active = {t["labels"]["job"]: t for t in data["activeTargets"]}
    assert set(active) == {"sts-agent-ec2", "sts-agent-k8s"}, data["activeTargets"]

    ec2 = active["sts-agent-ec2"]
    assert ec2["scrapeUrl"] == "http://127.0.0.7:9472/metrics"  # private IP, agent port
    assert {k: v for k, v in ec2["labels"].items() if k != "job"} == {
        "instance": "i-0123456789abcdef0",
        "instance_id": "i-0123456789abcdef0",
        "name": "billing-1",
    }

    k8s = active["sts-agent-k8s"]
    assert k8s["scrapeUrl"] == "http://127.0.0.8:9472/metrics"
    assert k8s["labels"]["namespace"] == "sts-agent"
    assert k8s["labels"]["node"] == "ip-10-0-1-15.eu-west-1.compute.internal"
    assert k8s["labels"]["component"] == "pod-network"
    dropped = {t["discoveredLabels"]["__address__"] for t in data["droppedTargets"]}
    assert dropped == {"127.0.0.9:8080", "127.0.0.10:9472", "127.0.0.11:9472"}


def test_prometheus_loads_every_alert(prometheus: str) -> None:
    groups = get_json(f"{prometheus}/api/v1/rules?type=alert")["data"]["groups"]
    loaded = {r["name"] for g in groups for r in g["rules"]}
    assert loaded == {a["alert"] for a in alerts()}
    groups = get_json(f"{prometheus}/api/v1/rules?type=record")["data"]["groups"]
    assert {r["name"] for g in groups for r in g["rules"]} == recorded()


def test_every_alert_is_documented() -> None:
    doc = (ROOT / "docs" / "DEPLOY.md").read_text()
    for a in alerts():
        row = next((line for line in doc.splitlines() if f"| `{a['alert']}` |" in line), "")
        assert f"| {a['labels']['severity']} |" in row, f"{a['alert']} missing from DEPLOY.md"
