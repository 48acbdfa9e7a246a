"""Keep a long-running daemon's heap small.

glibc gives a thread that finds the main heap busy an arena of its own and
keeps it for the life of the process.  The probe pool's threads each end up
with one, which measured about 1.5 MiB of resident memory that the daemon
never needs: its threads mostly wait on sockets, so two arenas are plenty.
"""

from __future__ import annotations

import os

#: mallopt's parameter number for the arena limit (glibc's malloc.h).
_M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's arenas before threads start; True if the cap is in force.

    An operator's own MALLOC_ARENA_MAX wins, and other C libraries (musl) are
    left alone.  A tuning step, so any failure (a sandbox refusing ctypes,
    say) only leaves the default.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        os.confstr("CS_GNU_LIBC_VERSION")
        import ctypes

        return bool(ctypes.CDLL(None).mallopt(_M_ARENA_MAX, arenas))
    except Exception:
        return False
