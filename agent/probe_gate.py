"""Admission for on-demand rounds (`/probe`): shared, rate-limited, never an unbounded wait.

Every on-demand round signs real STS calls with the instance's credentials,
so a caller must not be able to turn the agent into a request amplifier.
Callers asking for the same target while its round runs share that round;
a new round needs a token from a small bucket; and the number of callers
inside at once is capped, so HTTP workers stay free for scrapes.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


class Refused(Exception):
    """The caller gets `status` with Retry-After `retry_after` seconds; str() says why."""

    def __init__(self, status: int, retry_after: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.retry_after = max(1, retry_after)
        self.reason = reason


@dataclass
class _Flight(Generic[T]):
    done: threading.Event = field(default_factory=threading.Event)
    result: T | None = None
    error: BaseException | None = None


class ProbeGate(Generic[T]):
    """Token bucket (`rate` rounds/s, `burst` at once) plus single flight per key."""

    def __init__(
        self,
        rate: float,
        *,
        burst: int = 2,
        max_callers: int = 4,
        wait: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.wait = wait
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight[T]] = {}
        self._callers = threading.BoundedSemaphore(max_callers)
        self._count_lock = threading.Lock()
        self.refused: dict[str, int] = {}  # reason -> count, for metrics

    def run(self, key: str, work: Callable[[], T]) -> T:
        """`work()`'s result, or the one of the round for `key` already running; else Refused."""
        if not self._callers.acquire(blocking=False):
            raise self._refuse(503, 1, "busy")
        try:
            with self._lock:
                flight = self._flights.get(key)
                leader = flight is None
                if flight is None:
                    self._take_token()
                    flight = self._flights[key] = _Flight()
            if leader:
                return self._lead(key, flight, work)
            if not flight.done.wait(self.wait):
                raise self._refuse(503, math.ceil(self.wait), "timeout")
            if flight.error is not None:
                raise flight.error
            assert flight.result is not None
            return flight.result
        finally:
            self._callers.release()

    def _lead(self, key: str, flight: _Flight[T], work: Callable[[], T]) -> T:
        try:
            flight.result = work()
            return flight.result
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()

    def _take_token(self) -> None:
        """Called under the lock; refills by elapsed time, raises Refused when empty."""
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens < 1.0:
            raise self._refuse(429, math.ceil((1.0 - self._tokens) / self.rate), "rate")
        self._tokens -= 1.0

    def count_refusal(self, reason: str) -> None:
        """Count a refusal decided outside the gate (for the metrics)."""
        with self._count_lock:
            self.refused[reason] = self.refused.get(reason, 0) + 1

    def _refuse(self, status: int, retry_after: int, reason: str) -> Refused:
        self.count_refusal(reason)
        text = {
            "busy": "too many /probe requests at once",
            "rate": f"/probe is limited to {self.rate:g} new round(s) per second",
            "timeout": "the running round did not finish in time",
        }[reason]
        return Refused(status, retry_after, text)
