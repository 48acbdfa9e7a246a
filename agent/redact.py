"""The one redaction for URLs the agent shows: user info, query and fragment never leave.

Endpoint and proxy URLs come from environments and config files, where
`https://user:password@host/?X-Amz-Signature=...` is legal and sometimes
used.  Every URL that reaches a label, a finding, a log line or a page goes
through here first, so a secret in a URL has exactly one place to be stopped.
"""

from __future__ import annotations

import re
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
