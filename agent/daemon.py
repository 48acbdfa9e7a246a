"""`sts-agent serve`: scheduler + HTTP surfaces + signals + systemd notify.

The main thread only waits for signals and pets the watchdog; rounds run on
the scheduler thread and requests on HTTP worker threads, so no one of them
can block another.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent import __version__, logs
from agent.config import ConfigError, Loaded, Settings
from agent.history import History
from agent.memory import limit_malloc_arenas
from agent.probe_gate import ProbeGate, Refused
from agent.results import Report
from agent.scheduler import Busy, Scheduler
from agent.sdnotify import notify, watchdog_interval
from agent.surfaces import history_json, status_page
from agent.surfaces.http_metrics import ListenerMetrics
from agent.surfaces.http_server import HttpServer, ListenError, Request, Response
from agent.surfaces.metrics import Metrics
from agent.surfaces.page_cache import RecentPage
from agent.surfaces.webconfig import WebConfig, WebConfigError
from agent.surfaces.webconfig_file import load_web_config
from agent.targets import watched_endpoints
from agent.transitions import TransitionLog

log = logging.getLogger("agent.daemon")


@dataclass(frozen=True)
class ProbeTarget:
    """What a /probe asks for once resolved.

    `key` is the hostnames it names, so every spelling of the same endpoints
    ("regional" or its hostname) shares one round and one token of the gate;
    `endpoint` is what the round is told to probe (the hostname when there is one).
    """

    endpoint: str
    key: str


class Agent:
    """Everything `serve` runs, without the signal handling (tests and demo reuse it)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics(settings.metrics_histogram_phases)
        self.history = History()
        self._pages: dict[str, RecentPage[Response]] = {
            "/": RecentPage(),
            "/api/history": RecentPage(),
        }
        self.changes = TransitionLog()
        self.scheduler = Scheduler(settings, self._observe, on_skip=self.metrics.count_skipped)
        web = load_web_config(settings.web_config_file) if settings.web_config_file else None
        self.web = web or WebConfig()
        self.http = HttpServer(settings.web_listen_address, self._routes(), self.web)
        self.probe_gate = self._probe_gate(settings)
        self.listener_metrics = ListenerMetrics(
            self.http.connection_stats, lambda: self.probe_gate.refused, self.web.auth_refusals
        )

    def _probe_gate(self, settings: Settings) -> ProbeGate[Report]:
        # Half the HTTP workers at most, so /probe callers never hold every scrape up.
        return ProbeGate(
            settings.web_probe_rate,
            max_callers=max(1, self.http.workers // 2),
            wait=2 * self.scheduler.round_budget(),
        )

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
        self.changes.observe(report)

    def _history(self, _: Request) -> Response:
        return self._pages["/api/history"].get(self.history.added, self._history_now)

    def _history_now(self) -> Response:
        body = json.dumps(history_json.to_json(self.history), separators=(",", ":"))
        return Response(200, "application/json", body.encode())

    def _metrics(self, _: Request) -> Response:
        body = self.metrics.registry.exposition() + self.listener_metrics.exposition()
        return Response(200, CONTENT_TYPE_LATEST, body)

    def _ready(self, _: Request) -> Response:
        if self.scheduler.ready:
            return _text(200, "Ready\n")
        return _text(503, "Waiting for the first probe round\n")

    def _status(self, _: Request) -> Response:
        # Keyed on the window, which takes a round after `latest` does: a page built in
        # between is rebuilt once the window has the round too.
        return self._pages["/"].get(self.history.added, self._status_now)

    def _status_now(self) -> Response:
        body = status_page.render(
            self.scheduler.latest,
            refresh=max(5, int(self.settings.interval)),
            history=self.history,
        )
        # "replace": text a target process chose must never turn the page into a 500.
        return Response(200, "text/html; charset=utf-8", body.encode("utf-8", "replace"))

    def _probe(self, req: Request) -> Response:
        """Blackbox-style: one synchronous round for one endpoint, its own fresh registry.

        Each round signs real calls with the host's credentials, so callers share
        rounds, new ones are rate-limited, and other hosts need auth (or an opt-in).
        """
        if not (self.settings.web_probe_remote or self.web.authenticates_clients) and not (
            _is_loopback(req.client_address)
        ):
            self.probe_gate.count_refusal("remote")
            return _text(
                403,
                "/probe from another host needs basic auth, a required client certificate, "
                "or web.probe_remote = true\n",
            )
        try:
            target = self.probe_target(req.query.get("endpoint") or [""])
        except ValueError as exc:
            return _text(400, f"{exc}\n")
        wait = self.scheduler.round_budget()
        try:
            report = self.probe_gate.run(
                target.key,
                lambda: self.scheduler.run_once(only_endpoint=target.endpoint, wait=wait),
            )
        except Refused as exc:
            return _refused(exc.status, exc.retry_after, exc.reason)
        except Busy as exc:
            self.probe_gate.count_refusal("timeout")
            return _refused(503, math.ceil(wait), str(exc))
        fresh = Metrics(self.settings.metrics_histogram_phases)
        fresh.observe(report)
        return Response(200, CONTENT_TYPE_LATEST, generate_latest(fresh.registry))

    def probe_target(self, given: list[str]) -> ProbeTarget:
        """The watched endpoints one /probe asks for; ValueError says what is wrong."""
        if len(given) > 1:
            raise ValueError(f"endpoint given {len(given)} times: give one")
        wanted = given[0].strip().lower().rstrip(".")  # as hostnames are read everywhere
        disc = self.scheduler.discovery
        watched = watched_endpoints(self.settings, disc.regions if disc else ())
        hosts = sorted({e.hostname for e in watched if wanted in (e.hostname, e.kind)})
        if not hosts:
            known, kinds = {e.hostname for e in watched}, {e.kind for e in watched}
            raise ValueError(f"endpoint must be one of: {', '.join(sorted(known) + sorted(kinds))}")
        return ProbeTarget(hosts[0] if len(hosts) == 1 else wanted, " ".join(hosts))

    def listen(self) -> None:
        """Bind the listener, so a caller can fail on its address before the first round."""
        if not self.http.listening:
            self.http.start()

    def start(self) -> None:
        self.listen()
        self.scheduler.start()
        log.info("sts-agent %s serving on %s", __version__, self.http.where)

    def stop(self) -> None:
        self.scheduler.stop()
        self.http.stop()


def _text(status: int, body: str) -> Response:
    return Response(status, "text/plain; charset=utf-8", body.encode())


def _refused(status: int, retry_after: int, reason: str) -> Response:
    body = f"{reason}; retry after {retry_after} s\n".encode()
    return Response(status, "text/plain; charset=utf-8", body, (("Retry-After", str(retry_after)),))


def _is_loopback(client_address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback peers, given as "HOST:PORT"."""
    host = client_address.rpartition(":")[0] or client_address
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


Loader = Callable[[], Loaded]


def serve(load: Loader) -> int:
    """Load the settings, start the agent and run until a signal stops it (SIGHUP reloads)."""
    settings = load().settings
    logs.setup(settings.log_format, settings.log_level)
    limit_malloc_arenas()  # before the first thread
    try:
        agent = Agent(settings)
        agent.start()
    except (OSError, ListenError, WebConfigError) as e:
        log.error("cannot start: %s", e)
        return 2
    return run_until_stopped(agent, load)


def run_until_stopped(agent: Agent, load: Loader) -> int:
    """The main thread's loop: signals, reloads and systemd's watchdog; stops the agent."""
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
    notify(f"STATUS=serving on {agent.http.where}")
    pet = watchdog_interval()
    while True:
        stop.wait(pet or 3600)
        if reload_requested.is_set():
            reload_requested.clear()
            stop.clear()
            _reload(agent, load)
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


def _reload(agent: Agent, load: Loader) -> None:
    notify("RELOADING=1")
    try:
        new = load().settings
        agent.scheduler.reload(new)  # first: it can still refuse them, changing nothing
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
    agent.probe_gate = agent._probe_gate(new)
    log.info("configuration reloaded")
    notify("READY=1")
