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
secrets.  Files are resolved as the process sees them: AWS_CONFIG_FILE and
~/.aws/config through /proc/<pid>/root (so containers work), relative paths
through /proc/<pid>/cwd, and ~ through the host's passwd entry for the
process's uid.

Reading another user's environment needs root or CAP_SYS_PTRACE.  Without it
the audit says `permitted=False` rather than pretending the host is clean.
Off by default (config audit.processes).
"""

from __future__ import annotations

import os
import pwd
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import psutil

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


def _as_seen_by(pid: int, path: str, home: str | None) -> str | None:
    """`path` as process `pid` would open it, or None when we cannot tell."""
    if path.startswith("~"):
        user, _, rest = path[1:].partition("/")
        try:
            base = pwd.getpwnam(user).pw_dir if user else home
        except KeyError:
            base = None
        if base is None:
            return None
        path = os.path.join(base, rest)
    anchor = f"/proc/{pid}/root" if os.path.isabs(path) else f"/proc/{pid}/cwd"
    try:
        os.stat(anchor)
    except OSError:
        return None
    return os.path.join(anchor, path.lstrip("/"))


def _file_overrides(
    pid: int, uid: int, env: Mapping[str, str]
) -> tuple[dict[str, str], tuple[str, ...]]:
    """Config and credentials file paths for the view, plus any reason they are not."""
    home = _home(uid)
    out: dict[str, str] = {}
    reasons: tuple[str, ...] = ()
    explicit = env.get("AWS_CONFIG_FILE")
    if explicit:
        seen = _as_seen_by(pid, explicit, home)
        if seen is None:
            reasons = ("config_file_unreadable",)
        out["AWS_CONFIG_FILE"] = seen or os.devnull
    else:
        default = _as_seen_by(pid, "~/.aws/config", home)
        out["AWS_CONFIG_FILE"] = default if default and os.path.exists(default) else os.devnull
    # Only a named profile needs the credentials file (it may define the profile).
    creds = _as_seen_by(pid, "~/.aws/credentials", home) if env.get("AWS_PROFILE") else None
    out["AWS_SHARED_CREDENTIALS_FILE"] = creds if creds and os.path.exists(creds) else os.devnull
    return out, reasons


def _identity(path: str) -> object:
    """Same file, same content: lets processes sharing a set-up share one view."""
    try:
        st = os.stat(path)
    except OSError:
        return path
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _view(
    pid: int, uid: int, env: dict[str, str], memo: dict[object, SdkView]
) -> tuple[SdkView, tuple[str, ...]]:
    files, extra = _file_overrides(pid, uid, env)
    scoped = {**env, **files}
    key = (
        tuple(sorted((k, v) for k, v in env.items() if k != "AWS_CONFIG_FILE")),
        _identity(files["AWS_CONFIG_FILE"]),
        _identity(files["AWS_SHARED_CREDENTIALS_FILE"]),
        extra,
    )
    if key not in memo:
        memo[key] = sdk_view(scoped)
    return memo[key], extra


def _exe_name(proc: psutil.Process) -> str:
    try:
        return os.path.basename(str(proc.exe()))
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
                name = proc.name()
                env = {k: v for k, v in proc.environ().items() if k in _WATCHED}
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
