"""The host's SDK view for discovery: botocore's choice, and where AWS serves global calls.

The daemon asks botocore in a short-lived child (agent.discovery.sdk_view) so the
parsed endpoint data (about 8 MB) leaves with it; `check` asks in-process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from agent.child import ChildError, ask_child
from agent.config import ca_bundle_problem
from agent.redact import describe_aws_error
from agent.results import Resolver, SdkView
from agent.verdicts.serving import global_serving

# Never sent to the SDK-view child: it reads no credentials, so they need not cross the pipe.
_SECRET_ENV = frozenset(
    {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"}
)


def sdk_unknown(error: str) -> SdkView:
    return SdkView(endpoint_url=None, mode="unknown", region=None, error=error)


def sdk_view_in_child(environ: Mapping[str, str], timeout: float = 30.0) -> SdkView:
    """botocore's SDK view, asked in a short-lived `python -m agent.discovery.sdk_view`.

    The child costs about 0.3 s of CPU once per discovery_interval.
    """
    env = {
        k: v
        for k, v in environ.items()
        # agent.discovery.sdk_view reads these, plus HTTPS_PROXY / NO_PROXY in either case
        if (k.startswith(("AWS_", "BOTOCORE_")) or k.lower() in ("https_proxy", "no_proxy"))
        and k not in _SECRET_ENV
    }
    try:
        doc = ask_child("agent.discovery.sdk_view", env, timeout)
        return SdkView(
            endpoint_url=doc["endpoint_url"],
            mode=doc["mode"],
            region=doc["region"],
            reasons=tuple(doc["reasons"]),
            error=doc["error"],
            proxy=doc["proxy"],
            unconfigured=bool(doc.get("unconfigured", False)),
        )
    except ChildError as e:
        return sdk_unknown(f"SDK view child failed: {e}")
    except (KeyError, TypeError) as e:  # an answer without the expected fields
        return sdk_unknown(f"SDK view child failed: {type(e).__name__}: {e}"[:200])


def with_global_serving(
    sdk: SdkView,
    host_region: str | None,
    resolvers: tuple[Resolver, ...],
    *,
    vpc_known: bool = True,
    in_cluster: bool = False,
) -> SdkView:
    """Where AWS would serve a global call from this host (agent.verdicts.serving)."""
    if sdk.error:
        return sdk
    served, why = global_serving(
        host_region,
        resolvers,
        proxied=bool(sdk.proxy),
        vpc_known=vpc_known,
        in_cluster=in_cluster,
    )
    return dataclasses.replace(sdk, global_served_in=served, global_served_why=why)


def host_sdk_view(
    environ: Mapping[str, str],
    host_region: str | None,
    resolvers: tuple[Resolver, ...],
    *,
    in_child: bool,
    vpc_known: bool = True,
) -> SdkView:
    """The SDK view with its serving verdict; advisory, so it never raises."""
    try:
        if in_child:
            sdk = sdk_view_in_child(environ)
        else:
            from agent.discovery.sdk_view import sdk_view

            sdk = sdk_view(environ)
    except Exception as e:  # the SDK view is advisory; never let it stop a round
        sdk = sdk_unknown(describe_aws_error(e)[:200])  # botocore's text may quote secrets
    bundle = environ.get("AWS_CA_BUNDLE")
    problem = ca_bundle_problem(bundle) if bundle else None
    if problem:
        sdk = dataclasses.replace(sdk, ca_bundle_problem=f"{bundle}: {problem}")
    return with_global_serving(
        sdk,
        host_region,
        resolvers,
        vpc_known=vpc_known,
        in_cluster="KUBERNETES_SERVICE_HOST" in environ,
    )
