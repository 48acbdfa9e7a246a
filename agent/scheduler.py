"""Runs probe rounds in the background and keeps the latest result.

Rounds run one at a time on their own thread; probes inside a round run in
parallel with their own timeouts, so one hung address delays nothing else,
and scrapes only ever read the last finished Report.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from agent.config import Settings
from agent.discovery import Discovery
from agent.memory import trim_heap
from agent.results import Report
from agent.rounds import Rounds

log = logging.getLogger("agent.scheduler")

Hook = Callable[[Report], None]


class Busy(Exception):
    """An on-demand round could not start within its bounded wait."""


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        on_report: Hook,
        *,
        on_skip: Callable[[int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.rounds = Rounds(settings, resident=True)
        self.on_report = on_report
        self.on_skip = on_skip
        self.discovery: Discovery | None = None
        self.latest: Report | None = None
        self.last_progress = time.monotonic()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # one round at a time (scheduled or /probe)
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="probe")
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)

    # -- lifecycle
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def reload(self, settings: Settings) -> None:
        """Swap settings; the next round rediscovers with them.  Raises ConfigError, with
        the running settings kept, when they cannot be used (a CA bundle OpenSSL refuses)."""
        with self._lock:
            self.rounds.reload(settings)
            self.settings = settings
            self.discovery = None
        self._wake.set()

    @property
    def ready(self) -> bool:
        return self.latest is not None

    def stalled(self) -> bool:
        """True when no round has finished for three intervals plus the timeouts."""
        s = self.settings
        budget = 3 * s.interval + 4 * s.timeout + s.imds_timeout
        return time.monotonic() - self.last_progress > budget

    # -- work
    def _discovery(self) -> Discovery:
        d = self.discovery
        if d is None or time.time() - d.at > self.settings.discovery_interval:
            d = self.rounds.discover(previous=d)
            self.discovery = d
            log.info(
                "discovery: regions=%s (from %s) imds=%s resolvers=%s vpc_cidrs=%s",
                ",".join(d.regions) or "none",
                d.region_source,
                "ok" if d.imds.available else d.imds.reason,
                ",".join(r.label for r in d.resolvers) or "none",
                ",".join(d.vpc_cidrs) or "unknown",
            )
        return d

    def round_budget(self) -> float:
        """About the longest a round takes (two probe timeouts plus rediscovery)."""
        s = self.settings
        return 2 * s.timeout + s.imds_timeout + 1.0

    def run_once(self, only_endpoint: str | None = None, wait: float | None = None) -> Report:
        """One round now; with `wait`, give up (Busy) if another round holds on past it."""
        if not self._lock.acquire(timeout=-1 if wait is None else wait):
            raise Busy(f"another probe round is still running after {wait:g} s")
        try:
            disc = self._discovery()
            report = self.rounds.run(disc, only_endpoint=only_endpoint, pool=self._pool)
        finally:
            self._lock.release()
        return report

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                report = self.run_once()
                self.latest = report
                self.last_progress = time.monotonic()
                self.on_report(report)
            except Exception:  # a failing round must never take the daemon down
                log.exception("probe round failed; will retry next interval")
            trim_heap()
            interval = self.settings.interval
            next_at += interval
            now = time.monotonic()
            if now > next_at:
                missed = int((now - next_at) // interval) + 1
                if self.on_skip:
                    self.on_skip(missed)
                log.warning("round overran the interval; skipping %d scheduled round(s)", missed)
                next_at += missed * interval
            jitter = random.uniform(-0.1, 0.1) * interval
            self._wake.wait(max(0.0, next_at - now + jitter))
            if self._wake.is_set() and not self._stop.is_set():
                next_at = time.monotonic()
            self._wake.clear()
