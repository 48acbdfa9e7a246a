"""The daemon's glibc arena cap and heap trim, seen in a real process's memory.

Each case runs in a fresh interpreter: mallopt changes the whole process.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Six threads each allocate through malloc; every arena glibc creates for them
# is an anonymous heap aligned to 64 MiB, which /proc/self/maps shows.
SCRIPT = """
import sys, threading
from agent.memory import limit_malloc_arenas
capped = limit_malloc_arenas() if sys.argv[1] == "cap" else None
barrier = threading.Barrier(7)
def work():
    keep = [bytearray(2000) for _ in range(2000)]
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(6)]
for t in threads:
    t.start()
barrier.wait()
heaps = 0
for line in open("/proc/self/maps"):
    parts = line.split()
    start = int(parts[0].split("-")[0], 16)
    heaps += len(parts) == 5 and parts[1] == "rw-p" and start % (64 << 20) == 0
for t in threads:
    t.join()
print(capped, heaps)
"""


def run(script: str, *args: str, **env: str) -> tuple[str, int]:
    """What a fresh interpreter running `script` prints: a word and a number."""
    base = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    return out[0], int(out[1])


GLIBC = pytest.mark.skipif(
    not hasattr(os, "confstr") or "glibc" not in (os.confstr("CS_GNU_LIBC_VERSION") or ""),
    reason="the cap and the trim apply to glibc only",
)


@GLIBC
def test_threads_share_two_arenas_once_capped() -> None:
    capped, heaps = run(SCRIPT, "cap")
    _, uncapped_heaps = run(SCRIPT, "none")
    assert capped == "True"
    assert heaps <= 1  # the main arena is not a mapped heap; one more is allowed
    assert uncapped_heaps > heaps  # the cap, not the workload, kept the count down


# Freed malloc chunks below a live one stay resident until trimmed: 40 MB of
# 2 KB buffers, all but the last freed, then the heap is trimmed once.
TRIM = """
import psutil
from agent.memory import trim_heap
rss = lambda: psutil.Process().memory_info().rss
chunks = [bytearray(2000) for _ in range(20000)]
pin = bytearray(2000)
del chunks
before = rss()
released = trim_heap()
print(released, (before - rss()) >> 20)
"""


@GLIBC
def test_a_trim_hands_freed_heap_pages_back() -> None:
    released, mib = run(TRIM)
    assert released == "True"
    assert mib >= 20  # MiB given back of the 40 MB freed


def test_an_operators_setting_wins() -> None:
    capped, heaps = run(SCRIPT, "cap", MALLOC_ARENA_MAX="1")
    assert (capped, heaps) == ("False", 0)
