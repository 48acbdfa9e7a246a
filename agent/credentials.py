"""Credentials for signed probes: botocore's default provider chain, unchanged.

`check` asks the chain in-process.  The daemon asks it through a short-lived
`python -m agent.credentials` instead: botocore's session and credential
modules cost about 4 MiB that a long-running process would keep for a call it
makes once every few hours.  Either way the answer is kept with its expiry
and asked for again in botocore's own refresh windows: from 15 minutes before
expiry, keeping the current keys through a failed refresh until 10 minutes
before, when they are dropped rather than sent stale.

The child's stdout is a pipe to this process only, and nothing read from it
is logged: an error names the failure, never a value.  A provider's own error
text (a credential_process's stderr, say) is not shown either: only the
exception class, the provider and the profile (agent.redact).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import threading
import time
from typing import Any, NamedTuple

from agent.child import ChildError, ask_child
from agent.redact import describe_credential_error

log = logging.getLogger("agent.credentials")

#: How long to wait for the child; botocore's own IMDS and container fetches
#: time out well inside this.
CHILD_TIMEOUT = 30.0
#: After a failed attempt, the chain is asked again no sooner than this.
RETRY_AFTER = 30.0
#: botocore's refresh windows for temporary credentials, in seconds before expiry.
ADVISORY_REFRESH = 15 * 60.0
MANDATORY_REFRESH = 10 * 60.0


#: The chain's error when it ran to the end and found no keys (no setting failed).
NO_KEYS = "no credentials in the default chain"


class CredentialsError(Exception):
    """The chain found nothing or failed; the message is safe to show."""


def _chain() -> tuple[Any, Any]:
    """botocore's session and default chain, or CredentialsError if it finds nothing."""
    import botocore.session

    session = botocore.session.Session()
    try:
        creds = session.get_credentials()
    except Exception as e:
        raise CredentialsError(_describe(e, session)) from None
    if creds is None:
        raise CredentialsError(NO_KEYS)
    return session, creds


def _describe(exc: BaseException, session: Any) -> str:
    """`exc` without its message, which may quote what the provider printed."""
    try:
        profile = str(session.profile or "default")
    except Exception:  # an unreadable config: the exception itself names the file
        profile = None
    return describe_credential_error(exc, profile)[:200]


def metadata() -> dict[str, Any]:
    """The chain's current credentials in botocore's refresh-metadata shape."""
    session, creds = _chain()
    try:
        frozen = creds.get_frozen_credentials()
    except Exception as e:
        raise CredentialsError(_describe(e, session)) from None
    # RefreshableCredentials keeps its expiry here; static keys (even with a
    # session token from the environment) have none and botocore never refreshes them.
    expiry = getattr(creds, "_expiry_time", None)
    return {
        "access_key": frozen.access_key,
        "secret_key": frozen.secret_key,
        "token": frozen.token,
        "expiry_time": expiry.isoformat() if expiry is not None else None,
        "method": str(getattr(creds, "method", "") or "chain"),
    }


def metadata_from_child(timeout: float = CHILD_TIMEOUT) -> dict[str, Any]:
    """`metadata()`, asked in a child that inherits this process's environment."""
    try:
        doc = ask_child("agent.credentials", timeout=timeout)
    except ChildError as e:
        raise CredentialsError(f"credentials child failed: {e}") from None
    if "error" in doc:
        raise CredentialsError(str(doc["error"])[:200])
    return doc


class Frozen(NamedTuple):
    """What SigV4Auth reads; the same fields as botocore's ReadOnlyCredentials."""

    access_key: str
    secret_key: str
    token: str | None


class Credentials:
    """The chain, resolved lazily and kept until its refresh window."""

    def __init__(self, mode: str, *, in_child: bool = False) -> None:
        self.mode = mode
        self._fetch = metadata_from_child if in_child else metadata
        self._lock = threading.Lock()
        self._keys: Frozen | None = None
        self._expiry: float | None = None  # epoch seconds; None for long-term keys
        self._refresh_failed = False
        # -inf, not 0: monotonic time starts at boot; a daemon may start < 30 s in.
        self._last_try = -float("inf")
        self.error: str | None = None

    def _due(self, now: float) -> bool:
        if self._keys is None:
            return time.monotonic() - self._last_try > RETRY_AFTER
        return self._expiry is not None and self._expiry - now < ADVISORY_REFRESH

    def _refresh(self) -> None:
        self._last_try = time.monotonic()
        try:
            meta = self._fetch()
        except CredentialsError as e:
            error = str(e) if self._keys is None else f"credential refresh failed: {e}"
            if error != self.error:  # once per distinct failure, not every round
                log.warning("credentials: %s", error)
            self.error = error
            self._refresh_failed = True
            return
        if self.error is not None:
            log.info("credentials: available again (%s)", meta["method"])
        self._keys = Frozen(meta["access_key"], meta["secret_key"], meta["token"])
        expiry = meta["expiry_time"]
        self._expiry = None if expiry is None else dt.datetime.fromisoformat(expiry).timestamp()
        self._refresh_failed = False
        self.error = None

    def frozen(self) -> Frozen | None:
        """Keys to sign with now, or None (and `error` says why)."""
        if self.mode == "none":
            return None
        with self._lock:
            now = time.time()
            if self._due(now):
                self._refresh()
            if self._keys is None or self._expiry is None:
                return self._keys
            left = self._expiry - now
            if left <= 0 or (self._refresh_failed and left < MANDATORY_REFRESH):
                self.error = self.error or "credentials expired"
                return None
            return self._keys


def main() -> int:
    """Print the chain's credentials as JSON for the parent; errors go in the same document."""
    try:
        doc: dict[str, Any] = metadata()
    except CredentialsError as e:
        doc = {"error": str(e)}
    json.dump(doc, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
