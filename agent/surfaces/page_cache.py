"""A rendered page, shared by every request for it in the same second.

The status page and /api/history are built in Python from the whole window on
every request; a crowd asking at once (a dashboard wall, a script in a loop, a
hostile neighbour) would queue that work on the HTTP workers ahead of the next
/metrics scrape.  One build per round and second serves them all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class RecentPage(Generic[T]):
    """The last page built, reused while its key (the rounds it was built from) is unchanged
    and it is young.

    Callers wait for a build in progress instead of starting their own.
    """

    def __init__(self, max_age: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._entry: tuple[Hashable, float, T] | None = None
        self.builds = 0

    def get(self, key: Hashable, build: Callable[[], T]) -> T:
        with self._lock:
            now = self._clock()
            entry = self._entry
            if entry is not None and entry[0] == key and now - entry[1] < self.max_age:
                return entry[2]
            page = build()
            self.builds += 1
            self._entry = (key, now, page)
            return page
