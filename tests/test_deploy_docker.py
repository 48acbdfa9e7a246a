"""Container packaging: Dockerfile, .dockerignore, Kubernetes, ECS and IAM files.

No container engine runs here, so nothing is built or scheduled.  What can be
checked for real is: hadolint on the Dockerfile, that the build context
.dockerignore leaves is enough to build the package, that the image's
HEALTHCHECK command works against the real daemon, and that every manifest
hands the agent settings it accepts, on the port and paths it really uses.
"""

from __future__ import annotations

import http.server
import json
import re
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.cli import _parser
from agent.config import DEFAULT_PORT, build
from testbed import ROOT
from testbed.ports import free_port
from testbed.require import require_binary
from tests.support.systemd_unit import agent_as_the_unit_runs_it

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S = ROOT / "deploy" / "kubernetes"
ECS_TASK = ROOT / "deploy" / "ecs" / "task-definition.json"
IAM = ROOT / "deploy" / "iam"
RUNTIME_USER = 65532

# --- Dockerfile -----------------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, args in instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, args))
    return found


def global_args() -> dict[str, str]:
    out: dict[str, str] = {}
    for keyword, args in instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = args.partition("=")
            out[name] = default
    return out


def only(stage: list[tuple[str, str]], keyword: str) -> str:
    matches = [args for k, args in stage if k == keyword]
    assert len(matches) == 1, f"expected one {keyword}, found {matches}"
    return matches[0]


def healthcheck_command() -> list[str]:
    args = only(stages()[-1], "HEALTHCHECK")
    _, _, exec_form = args.partition(" CMD ")
    cmd = json.loads(exec_form)
    assert isinstance(cmd, list) and all(isinstance(c, str) for c in cmd)
    return cmd


def hadolint() -> str:
    return require_binary("hadolint", str(Path(sys.executable).parent / "hadolint"))


def test_hadolint_is_clean() -> None:
    out = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.strip() == "", out.stdout + out.stderr


def test_hadolint_really_lints(tmp_path: Path) -> None:
    """Guards the test above: a careless Dockerfile must be rejected."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y gcc\n")
    out = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert out.returncode != 0
    assert "DL3007" in out.stdout  # "latest" tag


def test_base_image_is_a_pinned_slim_python() -> None:
    base = global_args()["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.1[1-9]\.\d+-slim-bookworm", base), base
    assert [only(s, "FROM").split()[0] for s in stages()] == ["${PYTHON_IMAGE}"] * 2


def test_final_stage_is_non_root_read_only_ready_and_tool_free() -> None:
    final = stages()[-1]
    keywords = [k for k, _ in final]
    assert "RUN" not in keywords, "no package manager or compiler may run in the final stage"
    copies = [a for k, a in final if k == "COPY"]
    assert copies == ["--from=builder /opt/sts-agent /opt/sts-agent"]
    user = only(final, "USER").split(":")
    assert all(int(part) == RUNTIME_USER for part in user)
    assert only(final, "EXPOSE") == str(DEFAULT_PORT)
    assert json.loads(only(final, "ENTRYPOINT")) == ["sts-agent"]
    assert json.loads(only(final, "CMD")) == ["serve"]
    env = " ".join(a for k, a in final if k == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # read-only root: never write .pyc
    assert "PATH=/opt/sts-agent/bin:" in env
    labels = only(final, "LABEL")
    for key in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels


# --- build context ----------------------------------------------------------------------


def ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (is_exception, regex); the last matching line decides."""
    out = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pat = line.lstrip("!").strip("/")
        rx = ""
        i = 0
        while i < len(pat):
            if pat.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif pat.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif pat[i] == "*":
                rx, i = rx + "[^/]*", i + 1
            elif pat[i] == "?":
                rx, i = rx + "[^/]", i + 1
            else:
                rx, i = rx + re.escape(pat[i]), i + 1
        out.append((negate, re.compile(rx)))
    return out


def in_context(rel: str) -> bool:
    """Docker's rule: a pattern matches a path or any of its parent directories."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    keep = True
    for negate, rx in ignore_patterns():
        if any(rx.fullmatch(p) for p in prefixes):
            keep = negate
    return keep


def context_files() -> Iterator[Path]:
    exceptions = [line for line in DOCKERIGNORE.read_text().split() if line.startswith("!")]
    for top in ROOT.iterdir():
        named = any(e.lstrip("!").startswith(top.name) for e in exceptions)
        if top.is_dir() and not named and not in_context(top.name + "/x"):
            continue  # excluded as a whole (.git, .venv, tests, ...): no need to walk it
        paths = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for p in paths:
            if in_context(p.relative_to(ROOT).as_posix()):
                yield p


@pytest.mark.parametrize(
    ("path", "wanted"),
    [
        ("pyproject.toml", True),
        ("constraints.txt", True),
        ("agent/cli.py", True),
        ("agent/py.typed", True),
        ("agent/probes/dns.py", True),
        ("agent/__pycache__/cli.cpython-311.pyc", False),
        (".venv/bin/python", False),
        (".git/config", False),
        ("tests/conftest.py", False),
        (".env", False),
        ("deploy/iam/policy.json", False),
    ],
)
def test_dockerignore_keeps_only_the_package(path: str, wanted: bool) -> None:
    assert in_context(path) is wanted


def test_context_holds_every_copy_source_and_builds_the_package(tmp_path: Path) -> None:
    builder = stages()[0]
    for args in (a for k, a in builder if k == "COPY"):
        for src in args.split()[:-1]:
            assert (ROOT / src).exists(), f"COPY source {src} missing from the repository"
            assert in_context(src + ("/x" if (ROOT / src).is_dir() else "")), src
    ctx = tmp_path / "context"
    for f in context_files():
        dest = ctx / f.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest)
    out = subprocess.run(
        [sys.executable, "-c", "import setuptools.build_meta as b; print(b.build_sdist('dist'))"],
        cwd=ctx,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    sdist = ctx / "dist" / out.stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        entry = next(n for n in names if n.endswith(".egg-info/entry_points.txt"))
        handle = tar.extractfile(entry)
        assert handle is not None
        entry_points = handle.read().decode()
    assert any(n.endswith("/agent/cli.py") for n in names)
    assert any(n.endswith("/agent/py.typed") for n in names)
    assert re.search(r"^sts-agent = agent\.cli:main$", entry_points, re.M), entry_points


# --- HEALTHCHECK ---------------------------------------------------------------------


def run_healthcheck(port: int) -> int:
    cmd = healthcheck_command()
    assert cmd[0] == "python"  # resolved through the venv on PATH inside the image
    env = {"STS_AGENT_WEB_LISTEN_ADDRESS": f":{port}", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, *cmd[1:]], env=env, capture_output=True).returncode


def test_healthcheck_passes_against_the_real_daemon(tmp_path: Path) -> None:
    with agent_as_the_unit_runs_it(tmp_path) as agent:
        agent.wait_for("READY=1")
        agent.wait_ready(timeout=60)
        assert run_healthcheck(agent.port) == 0


def test_healthcheck_fails_when_nothing_listens() -> None:
    assert run_healthcheck(free_port()) != 0


def test_healthcheck_fails_on_an_error_status() -> None:
    class Unhealthy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Unhealthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert run_healthcheck(server.server_address[1]) != 0
    finally:
        server.shutdown()
        server.server_close()


# --- Kubernetes ------------------------------------------------------------------------


def k8s_docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]
    return spec["template"]["spec"] if "template" in spec else spec


def pod_annotations(doc: dict[str, Any]) -> dict[str, str]:
    meta = doc["spec"]["template"]["metadata"] if "template" in doc["spec"] else doc["metadata"]
    return dict(meta.get("annotations", {}))


MANIFESTS = ["daemonset.yaml", "daemonset-hostnetwork.yaml", "sidecar-pod.yaml"]


def workload(name: str) -> dict[str, Any]:
    return next(d for d in k8s_docs(name) if d["kind"] in ("DaemonSet", "Pod"))


def agent_container(name: str) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod_spec(workload(name))["containers"]
    return next(c for c in containers if c["name"] == "sts-agent")


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_runs_the_agent_locked_down(name: str) -> None:
    spec = pod_spec(workload(name))
    pod_sc = spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == RUNTIME_USER
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    c = agent_container(name)
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert "cpu" not in c["resources"].get("limits", {}), "CPU throttling distorts latency"
    assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["memory"]


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_probes_and_scrape_target_match_the_agent(name: str, tmp_path: Path) -> None:
    docs = k8s_docs(name)
    c = agent_container(name)
    args = _parser().parse_args(c["args"])
    assert args.command == "serve"
    config_path = Path(args.config)
    mount = next(m for m in c["volumeMounts"] if Path(m["mountPath"]) == config_path.parent)
    volume = next(v for v in pod_spec(workload(name))["volumes"] if v["name"] == mount["name"])
    cm = next(
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == volume["configMap"]["name"]
    )
    toml_file = tmp_path / config_path.name
    toml_file.write_text(cm["data"][config_path.name])
    settings = build(file=str(toml_file), environ={}).settings  # raises on a bad setting
    listen_port = int(settings.web_listen_address.rpartition(":")[2])

    port = next(p for p in c["ports"] if p["name"] == "sts-metrics")
    assert port["containerPort"] == listen_port == DEFAULT_PORT
    assert c["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "sts-metrics"}
    ann = pod_annotations(workload(name))
    assert ann["prometheus.io/scrape"] == "true"
    assert ann["prometheus.io/port"] == str(listen_port)
    assert ann["prometheus.io/path"] == "/metrics"


def test_daemonsets_gate_readiness_on_the_first_round() -> None:
    for name in ("daemonset.yaml", "daemonset-hostnetwork.yaml"):
        probe = agent_container(name)["readinessProbe"]["httpGet"]
        assert probe == {"path": "/-/ready", "port": "sts-metrics"}


def test_sidecar_never_takes_the_application_out_of_service() -> None:
    """A pod is ready only if every container is: the agent must not gate the app."""
    assert "readinessProbe" not in agent_container("sidecar-pod.yaml")


def test_sidecar_audits_the_applications_sdk_settings() -> None:
    containers = pod_spec(workload("sidecar-pod.yaml"))["containers"]
    app = next(c for c in containers if c["name"] != "sts-agent")
    assert app["envFrom"] == agent_container("sidecar-pod.yaml")["envFrom"]


def test_host_network_daemonset_uses_the_nodes_resolver() -> None:
    spec = pod_spec(workload("daemonset-hostnetwork.yaml"))
    assert spec["hostNetwork"] is True
    # "Default" inherits the node's resolv.conf; ClusterFirstWithHostNet would
    # show cluster DNS, the pods' view, which daemonset.yaml already covers.
    assert spec["dnsPolicy"] == "Default"
    assert "hostNetwork" not in pod_spec(workload("daemonset.yaml"))


# --- ECS ---------------------------------------------------------------------------------


def ecs_containers() -> dict[str, dict[str, Any]]:
    task = json.loads(ECS_TASK.read_text())
    assert task["networkMode"] == "awsvpc"
    return {c["name"]: c for c in task["containerDefinitions"]}


def test_ecs_sidecar_is_locked_down_and_cannot_stop_the_app() -> None:
    containers = ecs_containers()
    agent, app = containers["sts-agent"], containers["app"]
    assert app["essential"] is True and agent["essential"] is False
    assert agent["readonlyRootFilesystem"] is True
    assert agent["user"].split(":")[0] == str(RUNTIME_USER)
    assert agent["linuxParameters"]["capabilities"]["drop"] == ["ALL"]
    assert [p["containerPort"] for p in agent["portMappings"]] == [DEFAULT_PORT]


def test_ecs_healthcheck_is_the_images_healthcheck() -> None:
    hc = ecs_containers()["sts-agent"]["healthCheck"]
    assert hc["command"] == ["CMD", *healthcheck_command()]


def test_ecs_environment_is_accepted_by_the_agent() -> None:
    agent = ecs_containers()["sts-agent"]
    env = {e["name"]: e["value"] for e in agent["environment"]}
    settings = build(environ=env).settings  # raises on an unknown or bad STS_AGENT_* value
    assert settings.imds_enabled is False, "Fargate has no IMDS"
    assert settings.vpc_cidrs, "without IMDS the VPC CIDRs must be given"
    app_env = {e["name"]: e["value"] for e in ecs_containers()["app"]["environment"]}
    for name, value in app_env.items():
        if name.startswith("AWS_"):
            assert env.get(name) == value, f"the agent must audit the app's {name}"


# --- IAM ----------------------------------------------------------------------------------


def policy_actions(name: str) -> set[str]:
    doc = json.loads((IAM / name).read_text())
    assert doc["Version"] == "2012-10-17"
    actions: set[str] = set()
    for st in doc["Statement"]:
        assert st["Effect"] == "Allow" and st["Resource"]
        acts = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        actions.update(acts)
    assert not any("*" in a for a in actions), "no wildcard actions"
    return actions


def api_actions(source: Path, service: str, rename: dict[str, str]) -> set[str]:
    """IAM actions for the AWS API calls the agent's code makes."""
    text = source.read_text()
    ops = set(re.findall(r'"((?:describe|list|get)_[a-z0-9_]+)"', text))
    ops |= set(re.findall(r"client\.((?:describe|list|get)_[a-z0-9_]+)\(", text))
    ops.discard("get_paginator")
    camel = {"".join(w.title() for w in op.split("_")) for op in ops}
    return {f"{service}:{rename.get(c, c)}" for c in camel}


def test_agent_policy_covers_exactly_the_vpc_endpoint_audit() -> None:
    wanted = api_actions(ROOT / "agent" / "audit" / "vpc_endpoints.py", "ec2", {})
    assert wanted, "no EC2 calls found: has the audit moved?"
    assert policy_actions("policy.json") == wanted


def test_cloudtrail_policy_covers_the_s3_reader() -> None:
    wanted = api_actions(
        ROOT / "agent" / "audit" / "cloudtrail_read.py", "s3", {"ListObjectsV2": "ListBucket"}
    )
    assert wanted == {"s3:ListBucket", "s3:GetObject"}
    # logs:// and --athena-table: the calls they make, and what Athena needs to run one.
    audit = ROOT / "agent" / "audit"
    assert '"filter_log_events"' in (audit / "cloudtrail_logs.py").read_text()
    athena = (audit / "cloudtrail_athena.py").read_text()
    calls = {"start_query_execution", "get_query_execution", "get_query_results"}
    assert all(c in athena for c in calls | {"stop_query_execution"})
    readers = {
        "logs:FilterLogEvents",
        "athena:StartQueryExecution",
        "athena:GetQueryExecution",
        "athena:GetQueryResults",
        "athena:StopQueryExecution",
        "glue:GetDatabase",
        "glue:GetTable",
        "glue:GetPartitions",
        "s3:GetBucketLocation",
        "s3:PutObject",
        "s3:AbortMultipartUpload",
    }
    assert policy_actions("cloudtrail-audit-policy.json") == wanted | {"kms:Decrypt"} | readers


def test_no_policy_grants_sts() -> None:
    """GetCallerIdentity needs no permission; granting sts:* would only widen the role."""
    for f in IAM.glob("*.json"):
        assert not any(a.startswith("sts:") for a in policy_actions(f.name)), f.name


def test_deploy_guide_names_only_files_that_exist() -> None:
    doc = (ROOT / "docs" / "DEPLOY.md").read_text()
    named = set(re.findall(r"`((?:deploy|systemd)/[\w./-]+|Dockerfile)`", doc))
    assert len(named) >= 10
    missing = sorted(n for n in named if not (ROOT / n.rstrip("/")).exists())
    assert not missing, missing
