"""`sts-agent serve`: scheduler + HTTP surfaces + signals + systemd notify.

The main thread only waits for signals and pets the watchdog; rounds run on
the scheduler thread and requests on HTTP worker threads, so no one of them
can block another.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent import __version__, logs
from agent.audit.host import HostAudits
from agent.config import ConfigError, Loaded, Settings
from agent.history import History
from agent.memory import limit_malloc_arenas
from agent.results import Report
from agent.scheduler import Scheduler
from agent.sdnotify import notify, watchdog_interval
from agent.surfaces import history_json, status_page
from agent.surfaces.http_server import HttpServer, ListenError, Request, Response
from agent.surfaces.metrics import Metrics
from agent.surfaces.webconfig import WebConfigError, load_web_config

log = logging.getLogger("agent.daemon")


class Agent:
    """Everything `serve` runs, without the signal handling (tests and demo reuse it)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics(settings.metrics_histogram_phases)
        self.audits = HostAudits()
        self.history = History()
        self.scheduler = Scheduler(
            settings,
            self._observe,
            on_skip=self.metrics.count_skipped,
            extras=self.audits.apply,
        )
        web = load_web_config(settings.web_config_file) if settings.web_config_file else None
        self.http = HttpServer(settings.web_listen_address, self._routes(), web)

    def _routes(self) -> dict[str, Callable[[Request], Response]]:
        return {
            "/metrics": self._metrics,
            "/-/healthy": lambda _: _text(200, "OK\n"),
            "/-/ready": self._ready,
            "/": self._status,
            "/probe": self._probe,
            "/api/history": self._history,
        }

    def _observe(self, report: Report) -> None:
        self.metrics.observe(report)
        self.history.add(report)

    def _history(self, _: Request) -> Response:
        body = json.dumps(history_json.to_json(self.history), separators=(",", ":"))
        return Response(200, "application/json", body.encode())

    def _metrics(self, _: Request) -> Response:
        return Response(200, CONTENT_TYPE_LATEST, self.metrics.registry.exposition())

    def _ready(self, _: Request) -> Response:
        if self.scheduler.ready:
            return _text(200, "Ready\n")
        return _text(503, "Waiting for the first probe round\n")

    def _status(self, _: Request) -> Response:
        body = status_page.render(
            self.scheduler.latest,
            refresh=max(5, int(self.settings.interval)),
            history=self.history,
        )
        return Response(200, "text/html; charset=utf-8", body.encode())

    def _probe(self, req: Request) -> Response:
        """Blackbox-style: one synchronous round for one endpoint, its own fresh registry."""
        wanted = (req.query.get("endpoint") or [""])[0]
        disc = self.scheduler.discovery
        known = {
            e.hostname: e
            for region in ((disc.regions or (None,)) if disc else (None,))
            for e in self.settings.endpoints(region)
        }
        kinds = {e.kind for e in known.values()}
        if wanted not in known and wanted not in kinds:
            choices = ", ".join(sorted(known) + sorted(kinds))
            return _text(400, f"endpoint must be one of: {choices}\n")
        report = self.scheduler.run_once(only_endpoint=wanted)
        fresh = Metrics(self.settings.metrics_histogram_phases)
        fresh.observe(report)
        return Response(200, CONTENT_TYPE_LATEST, generate_latest(fresh.registry))

    def start(self) -> None:
        self.http.start()
        self.scheduler.start()
        log.info("sts-agent %s serving on %s", __version__, self.http.url)

    def stop(self) -> None:
        self.scheduler.stop()
        self.http.stop()


def _text(status: int, body: str) -> Response:
    return Response(status, "text/plain; charset=utf-8", body.encode())


def serve(args: argparse.Namespace, load: Callable[[argparse.Namespace], Loaded]) -> int:
    settings = load(args).settings
    logs.setup(settings.log_format, settings.log_level)
    limit_malloc_arenas()  # before the first thread
    try:
        agent = Agent(settings)
        agent.start()
    except (OSError, ListenError, WebConfigError) as e:
        log.error("cannot start: %s", e)
        return 2
    stop = threading.Event()
    reload_requested = threading.Event()

    def on_stop(signum: int, _: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        reload_requested.set()
        stop.set()  # wake the main loop; it clears this again for a reload

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    notify("READY=1")
    notify(f"STATUS=serving on {agent.http.url}")
    pet = watchdog_interval()
    while True:
        stop.wait(pet or 3600)
        if reload_requested.is_set():
            reload_requested.clear()
            stop.clear()
            _reload(agent, args, load)
            continue
        if stop.is_set():
            break
        if pet and not agent.scheduler.stalled():
            notify("WATCHDOG=1")
        elif pet:
            log.error("scheduler stalled: withholding the watchdog ping so systemd restarts us")
    notify("STOPPING=1")
    agent.stop()
    log.info("stopped")
    return 0


def _reload(
    agent: Agent, args: argparse.Namespace, load: Callable[[argparse.Namespace], Loaded]
) -> None:
    notify("RELOADING=1")
    try:
        new = load(args).settings
    except ConfigError as e:
        log.error("reload failed, keeping the running configuration: %s", e)
        notify("READY=1")
        return
    if (new.web_listen_address, new.web_config_file) != (
        agent.settings.web_listen_address,
        agent.settings.web_config_file,
    ):
        log.warning("web.listen_address and web.config_file take effect only after a restart")
    logs.setup(new.log_format, new.log_level)
    agent.settings = new
    agent.metrics.histogram_phases = frozenset(new.metrics_histogram_phases)
    agent.scheduler.reload(new)
    log.info("configuration reloaded")
    notify("READY=1")
