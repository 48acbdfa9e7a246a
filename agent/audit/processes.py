"""Process audit: which STS endpoint each AWS SDK user on this host would call.

The host's own environment says little: every service has its own.  So we
read each process's initial environment (/proc/<pid>/environ through psutil),
keep only the ten variables below the moment it is read, and ask sdk_view()
what botocore would do with them.  Nothing else from a process's environment
is kept, logged or returned.  /proc shows the environment a program was
started with; changes it made to its own environment later are invisible.

Which processes count as SDK users is a deliberately simple guess: any that
sets one of the variables, or whose name or executable contains python, java,
node or aws.  Command lines are never read, because arguments can carry
secrets.  Files are read as the process would read them (target_files):
AWS_CONFIG_FILE and ~/.aws/config inside /proc/<pid>/root (so containers
work, and no symlink leads out of them), relative paths from /proc/<pid>/cwd,
~ through the host's passwd entry for the process's uid, and only when that
uid could read them.  Names and values that are not valid UTF-8 have the bad
bytes replaced, so no page or label ever has to encode them.

Reading another user's environment needs root or CAP_SYS_PTRACE.  Without it
the audit says `permitted=False` rather than pretending the host is clean.
Off by default (config audit.processes).
"""

from __future__ import annotations

import contextlib
import os
import pwd
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import psutil

from agent.audit.target_files import Missing, TargetIds, Unreadable, read_as, target_ids
from agent.probes.sdk import sdk_view
from agent.results import SdkView

WATCHED_ENV: tuple[str, ...] = (
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_STS",
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
)
_WATCHED = frozenset(WATCHED_ENV)
RUNTIME_HINTS: tuple[str, ...] = ("python", "java", "node", "aws")


@dataclass(frozen=True)
class ProcessSdk:
    """One process's STS endpoint as botocore would choose it."""

    pid: int
    name: str
    exe: str  # basename only
    mode: str
    endpoint_url: str | None
    reasons: tuple[str, ...] = ()
    region: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class ProcessAudit:
    permitted: bool  # False when no other user's environment could be read
    inspected: int  # processes whose environment was read
    denied: int  # processes we were not allowed to read
    processes: tuple[ProcessSdk, ...] = ()
    counts_by_mode: dict[str, int] = field(default_factory=dict)
    vanished: int = 0  # exited or zombie while we looked
    truncated: bool = False  # stopped at max_processes
    error: str | None = None  # the audit itself failed; nothing was read


def _looks_like_sdk(env: Mapping[str, str], name: str, exe: str) -> bool:
    if any(env.values()):
        return True
    text = f"{name} {exe}".lower()
    return any(hint in text for hint in RUNTIME_HINTS)


def _home(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_dir
    except KeyError:
        return None


def _expand_home(path: str, home: str | None) -> str | None:
    if not path.startswith("~"):
        return path
    user, _, rest = path[1:].partition("/")
    try:
        base = pwd.getpwnam(user).pw_dir if user else home
    except KeyError:
        base = None
    return None if base is None else os.path.join(base, rest)


def _read_for(pid: int, ids: TargetIds, path: str, home: str | None) -> tuple[bytes, object]:
    """The file as process `pid` would read it (see target_files); raises Unreadable."""
    expanded = _expand_home(path, home)
    if expanded is None:
        raise Unreadable("unknown home directory")
    return read_as(pid, expanded, ids)


def _file_contents(
    pid: int, uid: int, env: Mapping[str, str]
) -> tuple[dict[str, bytes], dict[str, object], tuple[str, ...]]:
    """Config and credentials file contents as the process would see them, plus reasons."""
    ids = target_ids(pid)
    home = _home(uid)
    contents: dict[str, bytes] = {}
    identity: dict[str, object] = {}
    reasons: tuple[str, ...] = ()
    wanted = {"AWS_CONFIG_FILE": env.get("AWS_CONFIG_FILE") or "~/.aws/config"}
    if env.get("AWS_PROFILE"):  # only a named profile needs the credentials file
        wanted["AWS_SHARED_CREDENTIALS_FILE"] = "~/.aws/credentials"
    for var, path in wanted.items():
        try:
            if ids is None:
                raise Unreadable("process gone")
            contents[var], identity[var] = _read_for(pid, ids, path, home)
        except Unreadable as exc:
            if var == "AWS_CONFIG_FILE" and env.get("AWS_CONFIG_FILE"):
                missing = isinstance(exc, Missing)
                reasons = ("config_file_missing" if missing else "config_file_unreadable",)
    return contents, identity, reasons


def _view(
    pid: int, uid: int, env: dict[str, str], memo: dict[object, SdkView]
) -> tuple[SdkView, tuple[str, ...]]:
    contents, identity, extra = _file_contents(pid, uid, env)
    key = (
        tuple(sorted((k, v) for k, v in env.items() if k != "AWS_CONFIG_FILE")),
        tuple(sorted(identity.items())),
        extra,
    )
    if key not in memo:
        memo[key] = _sdk_view_with(env, contents)
    return memo[key], extra


def _sdk_view_with(env: Mapping[str, str], contents: Mapping[str, bytes]) -> SdkView:
    """sdk_view() over `env`, with the files botocore reads replaced by the checked contents."""
    with contextlib.ExitStack() as stack:
        files: dict[str, str] = {}
        for var in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            if var not in contents:
                files[var] = os.devnull
                continue
            fd = os.memfd_create(f"sts-agent-{var.lower()}", os.MFD_CLOEXEC)
            stack.callback(os.close, fd)
            os.write(fd, contents[var])
            files[var] = f"/proc/self/fd/{fd}"
        return sdk_view({**env, **files})


def _text(value: str) -> str:
    """Valid text: bytes that were not UTF-8 (kept by Python as surrogates) become U+FFFD."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _exe_name(proc: psutil.Process) -> str:
    try:
        return _text(os.path.basename(str(proc.exe())))
    except (psutil.AccessDenied, psutil.NoSuchProcess, OSError):
        return ""


def audit_processes(max_processes: int = 2000) -> ProcessAudit:
    """Audit up to `max_processes` processes (this one excluded)."""
    me, my_uid = os.getpid(), os.geteuid()
    inspected = denied = vanished = examined = 0
    others_read = others_denied = 0
    truncated = False
    memo: dict[object, SdkView] = {}
    found: list[ProcessSdk] = []
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        if examined >= max_processes:
            truncated = True
            break
        examined += 1
        uid = -1
        try:
            with proc.oneshot():
                uid = proc.uids().real
                name = _text(proc.name())
                env = {k: _text(v) for k, v in proc.environ().items() if k in _WATCHED}
        except psutil.AccessDenied:
            denied += 1
            others_denied += uid != my_uid
            continue
        except psutil.ZombieProcess:
            vanished += 1
            continue
        except psutil.NoSuchProcess:
            if not proc.is_running():
                vanished += 1
                continue
            # Alive yet without a readable environment: a kernel thread on
            # some kernels.  Nothing to audit, but it was looked at.
            inspected += 1
            continue
        inspected += 1
        others_read += uid != my_uid
        exe = _exe_name(proc)
        if not _looks_like_sdk(env, name, exe):
            continue
        view, extra = _view(proc.pid, uid, env, memo)
        found.append(
            ProcessSdk(
                pid=proc.pid,
                name=name,
                exe=exe,
                mode=view.mode,
                endpoint_url=view.endpoint_url,
                reasons=extra + view.reasons,
                region=view.region,
                error=view.error,
            )
        )
    found.sort(key=lambda p: p.pid)
    return ProcessAudit(
        permitted=others_read > 0 or others_denied == 0,
        inspected=inspected,
        denied=denied,
        processes=tuple(found),
        counts_by_mode=dict(Counter(p.mode for p in found)),
        vanished=vanished,
        truncated=truncated,
    )
