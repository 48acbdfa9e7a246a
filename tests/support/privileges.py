"""Run test code as the unprivileged user `nobody`, in a forked copy of this process.

Root reads every file and every /proc entry, so a test that must meet a real
EACCES has to drop privileges.  Starting a new interpreter as `nobody` needs
every directory on the way to the interpreter, the venv and the checkout to be
enterable by `nobody`; a checkout in a fresh `mktemp -d` directory (mode 0700)
or an interpreter under /root is not.  A fork keeps the interpreter and every
module that is already loaded, so nothing has to be read from disk after the
switch.

The caller's duty: before calling, import everything the callable needs and
warm whatever loads data lazily (for example `agent.regions.known_regions()`,
which reads botocore's endpoint data, or one run of the same code as root).
The child cannot read files below 0700 directories, so a lazy import or a
lazy data load there fails with PermissionError.

The child closes every descriptor it inherited except stdin, stdout and
stderr, as a freshly exec'd program would: an open handle of root's (a
socket, a file) would otherwise lend `nobody` access it should not have and
make it show up as the owner of this process's connections.
"""

from __future__ import annotations

import contextlib
import grp
import io
import os
import pickle
import pwd
import select
import signal
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import agent.cli
from tests.conftest import missing

T = TypeVar("T")

#: How much of the child's traceback an AssertionError carries.
_MAX_REPORT = 20_000


def _nobody_ids() -> tuple[int, int]:
    """(uid, gid) of nobody; the group is nogroup where it exists (Debian), else nobody's own."""
    if os.geteuid() != 0:
        missing("root (to switch to the unprivileged user nobody)")
    try:
        user = pwd.getpwnam("nobody")
    except KeyError:
        missing("user 'nobody' in the password database")
        raise AssertionError("unreachable") from None
    try:
        gid = grp.getgrnam("nogroup").gr_gid
    except KeyError:
        gid = user.pw_gid
    return user.pw_uid, gid


def _become(uid: int, gid: int) -> None:
    """Drop root for good: groups, then gid, then uid, and prove root cannot come back."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups():
        raise RuntimeError("privileges were not fully dropped")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise RuntimeError("still able to become root after dropping privileges")


def _child(
    fn: Callable[[], object], env: Mapping[str, str] | None, uid: int, gid: int, wfd: int
) -> None:
    """Runs in the forked child only; never returns."""
    code = 1
    try:
        os.closerange(3, wfd)
        os.closerange(wfd + 1, os.sysconf("SC_OPEN_MAX"))
        try:
            _become(uid, gid)
            os.chdir("/")
            if env is not None:
                os.environ.clear()
                os.environ.update(env)
            payload = pickle.dumps(("ok", fn()))
        except BaseException as exc:  # everything, SystemExit too, goes back to the parent
            text = f"{exc!r}\n{traceback.format_exc()}"
            payload = pickle.dumps(("error", text))
        with os.fdopen(wfd, "wb") as out:
            out.write(payload)
        code = 0
    finally:
        os._exit(code)


def _read_all(pid: int, rfd: int, timeout: float) -> bytes:
    """Everything the child writes, read as it comes so a large result cannot block it."""
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"the run as nobody did not finish within {timeout:g}s")
        ready, _, _ = select.select([rfd], [], [], left)
        if ready:
            chunk = os.read(rfd, 1 << 16)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def run_as_nobody(
    fn: Callable[[], T], *, env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> T:
    """Call `fn` as nobody:nogroup in a forked child and return its (picklable) result.

    `env`, when given, replaces the child's environment.  The child starts in
    /.  An exception in the child becomes an AssertionError here carrying the
    child's traceback.  Not root: skipped locally, failed under CI=true.
    """
    uid, gid = _nobody_ids()
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        _child(fn, env, uid, gid, wfd)
    os.close(wfd)
    try:
        data = _read_all(pid, rfd, timeout)
    finally:
        os.close(rfd)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0 or not data:
        raise AssertionError(f"the child running as nobody ended with exit code {code}")
    kind, value = pickle.loads(data)
    if kind == "error":
        raise AssertionError(f"as nobody: {str(value)[-_MAX_REPORT:]}")
    return value  # type: ignore[no-any-return]


def cli_as_nobody(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> tuple[int, str, str]:
    """`agent.cli.main(argv)` as nobody: (exit code, stdout, stderr).

    Only for commands that return without starting servers or threads, such
    as `config check` or `serve` with a configuration it refuses.  The modules
    the command imports lazily must already be imported by the caller.
    """

    def call() -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = agent.cli.main(list(argv))
            except SystemExit as exc:  # argparse's usage errors and --help
                if exc.code is None or isinstance(exc.code, int):
                    code = exc.code or 0
                else:
                    print(exc.code, file=err)
                    code = 1
        return code, out.getvalue(), err.getvalue()

    return run_as_nobody(call, env=env, timeout=timeout)
