"""A real Prometheus server scraping targets on loopback, queried over its HTTP API."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from testbed.agent_proc import http_get, wait_for
from testbed.ports import free_port
from testbed.procs import stop_process
from testbed.require import require_binary


class Prometheus:
    def __init__(self, base: str) -> None:
        self.base = base

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, body = http_get(url)
        doc = json.loads(body)
        assert status == 200 and doc["status"] == "success", body
        return list(doc["data"]["result"])

    def targets_up(self) -> bool:
        _, body = http_get(f"{self.base}/api/v1/targets")
        doc = json.loads(body)
        active = doc["data"]["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)


def _seconds(duration: str) -> float:
    """Seconds in a Prometheus duration of one unit ("1s", "500ms", "2m")."""
    for unit, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if duration.endswith(unit) and duration[: -len(unit)].replace(".", "", 1).isdigit():
            return float(duration[: -len(unit)]) * factor
    raise ValueError(f"unsupported duration {duration!r}")


@contextmanager
def prometheus_scraping(
    targets: Sequence[str],
    tmp: Path,
    job: str = "sts-agent",
    *,
    interval: str = "1s",
    rules: Sequence[Path] = (),
) -> Iterator[Prometheus]:
    """Scrapes `targets` every `interval` (timeout 90 % of it), with `rules` loaded."""
    binary = require_binary("prometheus")
    port = free_port()
    cfg = tmp / "prometheus.yml"
    timeout = f"{int(_seconds(interval) * 900)}ms"
    cfg.write_text(
        f"global:\n  scrape_interval: {interval}\n  scrape_timeout: {timeout}\n"
        f"  evaluation_interval: {interval}\n"
        f"rule_files: [{', '.join(repr(str(r)) for r in rules)}]\n"
        f"scrape_configs:\n  - job_name: {job}\n    static_configs:\n"
        f"      - targets: [{', '.join(repr(t) for t in targets)}]\n"
    )
    log = open(tmp / "prometheus.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        prom = Prometheus(f"http://127.0.0.1:{port}")
        wait_for(lambda: http_get(prom.base + "/-/ready", 1)[0] == 200, 30, "prometheus ready")
        yield prom
    finally:
        stop_process(proc)
        log.close()


@contextmanager
def prometheus_process(config: Path, tmp: Path, *flags: str) -> Iterator[str]:
    """Prometheus on `config` (plus `flags`, e.g. a storage path), logging to tmp; its URL."""
    binary = require_binary("prometheus")
    port = free_port()
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}", *flags],
        cwd=tmp,
        stdout=log,
        stderr=log,
        env={**os.environ, "HOME": str(tmp)},
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc, timeout=20)
        log.close()
