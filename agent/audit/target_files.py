"""Read a file the way another process would: inside its root, with its permissions.

The process audit runs with more privilege than most of its targets (root, or
CAP_DAC_READ_SEARCH), so opening `/proc/PID/root/<path>` with our own rights
would publish what the target itself cannot see: a root-only file named by a
`nobody` process, or a host file reached through an absolute symlink inside a
container.  Here every path component is looked up one at a time below the
target's root (absolute symlinks restart at that root, `..` stops there),
the target's uid and groups must be allowed to search each directory and read
the file, and the content is read from the very inode that was checked.
POSIX ACLs and capabilities are not evaluated, so in doubt a file is refused.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from dataclasses import dataclass

#: A config or credentials file bigger than this is not an AWS config file.
MAX_BYTES = 1 << 20
_MAX_LINKS = 40  # as the kernel's MAXSYMLINKS
_O_PATH = getattr(os, "O_PATH", 0)


class Unreadable(Exception):
    """The target could not read the file; str() is a short reason."""


class Missing(Unreadable):
    """The file does not exist as the target sees it."""


@dataclass(frozen=True)
class TargetIds:
    """Who the target is for file access: its filesystem uid, gid and groups."""

    uid: int
    gids: frozenset[int]


def target_ids(pid: int) -> TargetIds | None:
    """The ids from /proc/PID/status (filesystem ids), or None when it is gone."""
    fields: dict[str, list[str]] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("Uid", "Gid", "Groups"):
                    fields[key] = rest.split()
    except OSError:
        return None
    try:
        uid, gid = int(fields["Uid"][3]), int(fields["Gid"][3])
        groups = {int(g) for g in fields.get("Groups", [])}
    except (KeyError, IndexError, ValueError):
        return None
    return TargetIds(uid, frozenset({gid, *groups}))


def _allowed(st: os.stat_result, ids: TargetIds, bits: tuple[int, int, int]) -> bool:
    if ids.uid == 0:
        return True
    if st.st_uid == ids.uid:
        return bool(st.st_mode & bits[0])
    if st.st_gid in ids.gids:
        return bool(st.st_mode & bits[1])
    return bool(st.st_mode & bits[2])


_SEARCH = (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)
_READ = (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)


def read_as(pid: int, path: str, ids: TargetIds) -> tuple[bytes, object]:
    """(content, identity) of `path` as process `pid` sees it; raises Unreadable.

    A relative path starts at the target's working directory.  The identity
    (device, inode, size, mtime) lets callers share work between processes
    that read the same file.
    """
    try:
        root = os.open(f"/proc/{pid}/root", _O_PATH | os.O_DIRECTORY)
    except OSError:
        raise Unreadable("root not visible") from None
    fds = [root]
    try:
        root_id = _file_id(os.fstat(root))
        start = f"/proc/{pid}/root" if path.startswith("/") else f"/proc/{pid}/cwd"
        try:
            cur = os.open(start, _O_PATH | os.O_DIRECTORY)
        except OSError:
            raise Unreadable("working directory not visible") from None
        fds.append(cur)
        final = _walk(root, root_id, cur, path, ids, fds)
        st = os.fstat(final)
        if stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3):
            return b"", "/dev/null"  # AWS_CONFIG_FILE=/dev/null is a common way to say "none"
        if not stat.S_ISREG(st.st_mode):
            raise Unreadable("not a regular file")
        if not _allowed(st, ids, _READ):
            raise Unreadable("permission denied for the process's user")
        if st.st_size > MAX_BYTES:
            raise Unreadable("too large")
        # Reopen the checked inode itself (not the path, which may have changed since).
        try:
            fd = os.open(f"/proc/self/fd/{final}", os.O_RDONLY)
        except OSError as exc:
            raise Unreadable(exc.strerror or "cannot open") from None
        with os.fdopen(fd, "rb") as fh:
            content = fh.read(MAX_BYTES + 1)
        if len(content) > MAX_BYTES:
            raise Unreadable("too large")
        return content, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    finally:
        for fd in fds:
            os.close(fd)


def _walk(
    root: int, root_id: tuple[int, int], cur: int, path: str, ids: TargetIds, fds: list[int]
) -> int:
    """Resolve `path` from `cur` one component at a time; every fd opened goes to `fds`."""
    parts = deque(path.split("/"))
    links = 0
    final = -1
    while parts:
        name = parts.popleft()
        if name in ("", "."):
            if not parts and final < 0:
                final = cur
            continue
        st_dir = os.fstat(cur)
        if not _allowed(st_dir, ids, _SEARCH):
            raise Unreadable("a directory on the way is closed to the process's user")
        if name == "..":
            if _file_id(st_dir) != root_id:
                cur = _open(fds, "..", cur, os.O_DIRECTORY)
            final = cur if not parts else -1
            continue
        fd = _open(fds, name, cur, os.O_NOFOLLOW)
        st = os.fstat(fd)
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > _MAX_LINKS:
                raise Unreadable("too many symbolic links")
            target = os.readlink(name, dir_fd=cur)
            if target.startswith("/"):
                cur = root  # absolute targets start at the process's root, not ours
            parts.extendleft(reversed(target.split("/")))
            final = -1
            continue
        if parts:
            if not stat.S_ISDIR(st.st_mode):
                raise Unreadable("not a directory")
            cur = fd
        else:
            final = fd
    if final < 0:
        raise Unreadable("not a regular file")
    return final


def _open(fds: list[int], name: str, dir_fd: int, flags: int) -> int:
    try:
        fd = os.open(name, _O_PATH | flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise Missing("no such file") from None
    except OSError as exc:
        raise Unreadable(exc.strerror or "cannot open") from None
    fds.append(fd)
    return fd


def _file_id(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)
