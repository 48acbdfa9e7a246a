"""Keep a long-running daemon's heap small.

glibc gives a thread that finds the main heap busy an arena of its own and
keeps it for the life of the process.  The probe pool's threads each end up
with one, which measured about 1.5 MiB of resident memory that the daemon
never needs: its threads mostly wait on sockets, so two arenas are plenty.

Each round's handshakes and parsing also leave freed chunks scattered through
the arenas; glibc returns only the top of the main heap on its own, so the
resident set crept up by about 2 MiB over the first thousand rounds.  Trimming
once a round, when the probes are done, hands those pages back.
"""

from __future__ import annotations

import functools
import os
from typing import Any

#: mallopt's parameter number for the arena limit (glibc's malloc.h).
_M_ARENA_MAX = -8


@functools.cache
def _glibc() -> Any | None:
    """The C library when it is glibc and ctypes may load it; else None (musl, sandboxes)."""
    try:
        os.confstr("CS_GNU_LIBC_VERSION")
        import ctypes

        return ctypes.CDLL(None)
    except Exception:
        return None


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's arenas before threads start; True if the cap is in force.

    An operator's own MALLOC_ARENA_MAX wins, and other C libraries (musl) are
    left alone.  A tuning step, so any failure (a sandbox refusing ctypes,
    say) only leaves the default.
    """
    libc = _glibc()
    if "MALLOC_ARENA_MAX" in os.environ or libc is None:
        return False
    try:
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except Exception:
        return False


def trim_heap() -> bool:
    """Give freed heap pages back to the kernel; True if glibc did release some."""
    libc = _glibc()
    if libc is None:
        return False
    try:
        return bool(libc.malloc_trim(0))
    except Exception:
        return False
