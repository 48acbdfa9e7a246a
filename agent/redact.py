"""The one redaction for what the agent shows: URLs, and errors from credential providers.

Endpoint and proxy URLs come from environments and config files, where
`https://user:password@host/?X-Amz-Signature=...` is legal and sometimes
used.  Every URL that reaches a label, a finding, a log line or a page goes
through here first, so a secret in a URL has exactly one place to be stopped.

botocore's credential errors quote their provider: a `credential_process`'s
stderr, an SSO or container endpoint's answer, a config value.  Those are
shown by class and by the fields that only name a place (provider, profile,
file), never by their message.
"""

from __future__ import annotations

import re
import sys
from urllib.parse import urlsplit, urlunsplit

from agent.addresses import bracketed, join_host_port

#: What a URL that cannot be parsed is shown as (its text might be the secret).
UNPARSEABLE = "<unparseable URL>"
# scheme://anything-up-to-whitespace-or-quote, as URLs appear inside messages.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()]+")


def redact_url(url: str) -> str:
    """scheme://host[:port]/path of `url` ("host:port" alone counts as http)."""
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        port = parts.port
    except ValueError:
        return UNPARSEABLE
    host = parts.hostname or "?"
    netloc = join_host_port(host, port) if port else bracketed(host)
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redact_optional(url: str | None) -> str | None:
    return None if url is None else redact_url(url)


def redact_text(text: str) -> str:
    """`text` with every URL in it redacted (error messages quote the URLs they reject)."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


#: botocore exception fields that name where credentials were sought, never what was found.
SAFE_CREDENTIAL_FIELDS = ("provider", "profile", "source_profile", "path", "cred_var", "name")
#: botocore exception classes raised while finding credentials (names; some are version-specific).
_CREDENTIAL_ERRORS = (
    "NoCredentialsError",
    "PartialCredentialsError",
    "CredentialRetrievalError",
    "UnknownCredentialError",
    "ProfileNotFound",
    "ConfigNotFound",
    "ConfigParseError",
    "InvalidConfigError",
    "MetadataRetrievalError",
    "RefreshWithMFAUnsupportedError",
    "NoAuthTokenError",
    "TokenRetrievalError",
    "SSOError",
    "LoginError",
)


def is_credential_error(exc: BaseException) -> bool:
    """Whether `exc` is botocore's error from finding credentials (its text may hold secrets)."""
    exceptions = sys.modules.get("botocore.exceptions")  # never imported just to ask
    if exceptions is None:
        return False
    classes = tuple(c for n in _CREDENTIAL_ERRORS if (c := getattr(exceptions, n, None)))
    return isinstance(exc, classes)


def describe_credential_error(exc: BaseException, profile: str | None = None) -> str:
    """`exc` as its class and safe fields, e.g. `CredentialRetrievalError (provider
    custom-process, profile default)`; `profile` is the one in use, if `exc` names none.

    The message is left out: botocore builds it from whatever the provider said.
    An AssumeRole refused by STS shows its operation and error code only.
    """
    kwargs = getattr(exc, "kwargs", None)
    fields = {
        k: kwargs[k] for k in SAFE_CREDENTIAL_FIELDS if isinstance(kwargs, dict) and k in kwargs
    }
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore's ClientError
        fields["operation"] = getattr(exc, "operation_name", None) or "?"
        fields["code"] = (response.get("Error") or {}).get("Code") or "?"
    if profile and "profile" not in fields:
        fields["profile"] = profile
    shown = ", ".join(f"{k} {_field(v)}" for k, v in fields.items() if v not in (None, ""))
    return f"{type(exc).__name__} ({shown})" if shown else type(exc).__name__


def describe_aws_error(exc: BaseException) -> str:
    """One line for a botocore error: a credential error by its safe fields, others URL-redacted."""
    if is_credential_error(exc):
        return describe_credential_error(exc)
    return redact_text(" ".join(str(exc).split()))


def _field(value: object) -> str:
    return " ".join(str(value).split())[:120]
