"""The README is a contract: every setting, metric and finding code must be in it."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from agent.audit.connections import ConnectionAudit
from agent.audit.host import HostAuditResult
from agent.audit.processes import ProcessAudit
from agent.config import FIELDS
from agent.runner import Prober, discover, run_round
from agent.simulate.demo import simulated_vpc
from agent.surfaces.metrics import Metrics
from agent.verdicts.codes import CODES

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.path)
def test_every_setting_is_documented_with_its_variable_and_flag(field: object) -> None:
    f = field
    assert f"`{f.path}`" in README  # type: ignore[attr-defined]
    assert f"`{f.env}`" in README  # type: ignore[attr-defined]
    assert f"`{f.flag}`" in README  # type: ignore[attr-defined]


def documented_findings() -> dict[str, str]:
    """Code -> severity, from the rows of the README's findings table."""
    section = README.split("\n## Findings\n", 1)[1].split("\n## ", 1)[0]
    found: dict[str, str] = {}
    for row in re.finditer(r"^\| (`[A-Z0-9_]+`(?:, `[A-Z0-9_]+`)*) \| (\w+) \|", section, re.M):
        for code in re.findall(r"`([A-Z0-9_]+)`", row.group(1)):
            assert code not in found, f"{code} has two rows in the README's findings table"
            found[code] = row.group(2)
    return found


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_finding_code_is_documented_with_its_severity(code: str) -> None:
    assert documented_findings().get(code) == CODES[code].severity


def test_every_documented_finding_code_is_in_the_registry() -> None:
    documented = documented_findings()
    assert len(documented) >= 20, documented  # the table was found and read
    assert set(documented) - set(CODES) == set()


def test_readme_opens_with_the_two_setup_commands() -> None:
    block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert block is not None
    commands = [line for line in block.group(1).splitlines() if line.strip()]
    assert [c.split("#")[0].strip() for c in commands] == [
        "bash scripts/demo.sh",
        "bash scripts/test.sh",
    ]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci


def test_every_exported_metric_is_documented(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run one real round against the simulated VPC and read the metric names it exports."""
    with simulated_vpc(tmp_path) as vpc:
        for name in [n for n in os.environ if n.startswith("AWS_")]:
            monkeypatch.delenv(name)
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", vpc.imds.url)
        monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-2")
        settings = vpc.settings(interval=5, listen="127.0.0.1:0")
        report = run_round(settings, discover(settings), Prober(settings))
        audit = HostAuditResult(
            connections=ConnectionAudit({("regional", "vpce"): 0}, {}),
            processes=ProcessAudit(True, 1, 0, counts_by_mode={"regional": 1}),
        )
        report = dataclasses.replace(report, audit=audit)
    metrics = Metrics()
    metrics.observe(report)
    text = generate_latest(metrics.registry).decode()
    histograms = set(re.findall(r"^# TYPE (\S+) histogram", text, re.M))
    names = set()
    for sample in re.findall(r"^([a-z_]+)[{ ]", text, re.M):
        base = re.sub(r"_(bucket|sum|count)$", "", sample)
        names.add(base if base in histograms else sample)
    assert len(names) >= 20, names
    for name in sorted(names):
        assert f"`{name}`" in README, f"{name} is exported but not in the README"
