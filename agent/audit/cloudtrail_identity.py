"""Who made a CloudTrail call, as a name an operator recognises, one row per workload.

CloudTrail's `userIdentity` differs by `type` (CloudTrail userIdentity reference): an
IAM user or a federated user has an `arn`; an assumed role's `arn` names one session,
so its calls are grouped under the role (`sessionContext.sessionIssuer.arn`); a web
identity caller (EKS IRSA) and a SAML user have no `arn`, only `userName` and
`identityProvider`; a service acting for the account has `invokedBy`. `principalId`
is opaque and is only the last resort.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

UNKNOWN = "(unknown)"
#: Longest key kept anywhere in the audit; longer values are cut and marked, so a hostile
#: record cannot make one counter key megabytes long.
MAX_KEY_CHARS = 512
_CUT = "…(cut)"
_ASSUMED = re.compile(r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([^/]+)/(.+)$")


@dataclass(frozen=True)
class Identity:
    """`caller` is the grouping key and display name; `session` is one session of it."""

    caller: str
    kind: str
    arn: str | None = None
    session: str | None = None


def bounded(value: str) -> str:
    """Cut a key to MAX_KEY_CHARS, saying so."""
    if len(value) <= MAX_KEY_CHARS:
        return value
    return value[: MAX_KEY_CHARS - len(_CUT)] + _CUT


def text_at(node: Any, *path: str) -> str | None:
    """A non-empty string at `path` in nested objects, else None."""
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return bounded(node) if isinstance(node, str) and node else None


def identity_of(record: dict[str, Any]) -> Identity:
    """The readable caller of one record, whatever its `userIdentity.type`."""
    ident = record.get("userIdentity")
    kind = text_at(ident, "type") or UNKNOWN
    arn = text_at(ident, "arn")
    account = text_at(ident, "accountId")
    if kind == "AssumedRole":
        role = text_at(ident, "sessionContext", "sessionIssuer", "arn")
        session = None
        if arn and (m := _ASSUMED.match(arn)):
            partition, acct, name, session = m.groups()
            role = role or f"arn:{partition}:iam::{acct}:role/{name}"
        if role:
            return Identity(role, kind, role, session)
    if kind in ("WebIdentityUser", "SAMLUser"):
        user = text_at(ident, "userName")
        provider = text_at(ident, "identityProvider")
        if user or provider:
            return Identity(bounded(f"{user or UNKNOWN} via {provider or UNKNOWN}"), kind)
    if kind == "AWSService":
        by = text_at(ident, "invokedBy") or text_at(record, "sourceIPAddress")
        return Identity(f"service {by or UNKNOWN}", kind)
    if kind == "Root":
        return Identity(arn or f"root of account {account or UNKNOWN}", kind, arn)
    if arn:  # IAMUser, FederatedUser, and types this version does not know
        return Identity(arn, kind, arn)
    if kind == "AWSAccount":
        by = text_at(ident, "invokedBy")
        via = f" via {by}" if by else ""
        return Identity(f"account {account or UNKNOWN}{via}", kind)
    # IAM Identity Center users act through `onBehalfOf`; others have a principalId.
    pid = (
        text_at(ident, "principalId")
        or text_at(ident, "userName")
        or text_at(ident, "onBehalfOf", "userId")
    )
    if pid:
        return Identity(bounded(f"{kind}:{pid}"), kind)
    return Identity(UNKNOWN, kind)
