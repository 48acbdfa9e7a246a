"""SDK view: which STS endpoint boto3 would call on this host, and why.

The choice depends on a dozen environment variables, two files and the
botocore release, so re-implementing it would drift.  Instead botocore's own
resolver answers, through a session whose environment is a mapping we pass in
(this host's, or another process's filtered copy) rather than os.environ,
which other threads share and must never be patched.  Creating a client makes
no network call; the one lookup that could (IMDS, for defaults_mode=auto)
is switched off because it only tunes retries, never the STS endpoint.

The view also says whether the environment it read carried any AWS setting at all:
the agent's own bare environment says nothing about the workloads. Where AWS serves
a global call from this host is agent.verdicts.serving's to say.

Measured: the first call takes about 40 ms, later ones about 7 ms because the
botocore loader and its parsed JSON are shared across calls (a plain botocore
session takes about 60 ms each time).  That is what lets the process audit
call it once per distinct process set-up.
"""

from __future__ import annotations

import os
import re
import urllib.request
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import botocore.session
from botocore.args import LEGACY_GLOBAL_STS_REGIONS
from botocore.configprovider import (
    BOTOCORE_DEFAUT_SESSION_VARIABLES,
    DEFAULT_PROXIES_CONFIG_VARS,
    DEFAULT_S3_CONFIG_VARS,
    ConfigChainFactory,
    ConfiguredEndpointProvider,
    ConfigValueStore,
    SectionConfigProvider,
    SmartDefaultsConfigStoreFactory,
)
from botocore.loaders import create_loader

from agent.redact import describe_credential_error, is_credential_error, redact_text, redact_url
from agent.results import SdkView

#: Stable reason identifiers and what each means, for reports and findings.
REASONS: dict[str, str] = {
    "no_region": "no region is configured, so botocore uses aws-global and sts.amazonaws.com",
    "aws_region_only": "AWS_REGION is set but botocore reads only AWS_DEFAULT_REGION",
    "aws_region_ignored": "AWS_REGION differs from the region botocore uses; botocore ignores it",
    "legacy_mode": "sts_regional_endpoints=legacy sends this legacy region to sts.amazonaws.com",
    "endpoint_url_override": "a configured endpoint URL replaces the standard STS endpoint",
    "endpoint_url_sts_env": "the endpoint URL comes from AWS_ENDPOINT_URL_STS",
    "endpoint_url_env": "the endpoint URL comes from AWS_ENDPOINT_URL",
    "endpoint_url_services_section": "the endpoint URL comes from the config file services section",
    "endpoint_url_profile": "the endpoint URL comes from the profile's endpoint_url",
    "ignore_configured_endpoint_urls": "configured endpoint URLs are turned off",
    "fips_enabled": "use_fips_endpoint is on (an endpoint URL, if configured, wins)",
    "dualstack_enabled": "use_dualstack_endpoint is on (an endpoint URL, if configured, wins)",
    "config_file_missing": "AWS_CONFIG_FILE names a file that does not exist",
    "config_file_unreadable": "the AWS config file exists but cannot be read",
    "https_proxy": "HTTPS_PROXY sends STS calls through a proxy, which resolves and connects",
    "no_proxy_bypass": "a proxy is set, but NO_PROXY exempts the STS endpoint from it",
}

#: What botocore's proxy choice for an https endpoint reads, through urllib.
PROXY_ENV: frozenset[str] = frozenset({"HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"})
#: The NO_PROXY matcher botocore reaches through urllib's proxy_bypass on
#: Linux; this one takes the table as an argument instead of reading
#: os.environ.  Missing from typeshed, present since Python 3.0.
_bypass: Callable[[str, dict[str, str]], bool] = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]


def _env_names() -> frozenset[str]:
    names = {"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS", "AWS_REGION", *PROXY_ENV}
    for spec in BOTOCORE_DEFAUT_SESSION_VARIABLES.values():
        env = spec[1]
        if isinstance(env, str):
            names.add(env)
        elif env:
            names.update(env)
    return frozenset(names)


#: The only variables the view ever looks at.  None holds an AWS secret
#: (credentials are resolved by a different botocore chain); a proxy URL may
#: carry a password, which `proxy_for` drops before anything is reported.
RELEVANT_ENV: frozenset[str] = _env_names()


@lru_cache(maxsize=4)
def _loader(data_path: str | None) -> Any:
    """One botocore loader per data path, so its JSON caches survive across calls."""
    return create_loader(data_path)


@lru_cache(maxsize=1)
def _suffixes() -> tuple[frozenset[str], frozenset[str]]:
    """DNS suffixes (standard, dual-stack) of every partition botocore knows."""
    data = _loader(None).load_data("partitions")
    outputs = [p["outputs"] for p in data["partitions"]]
    return (
        frozenset(o["dnsSuffix"] for o in outputs),
        frozenset(o["dualStackDnsSuffix"] for o in outputs),
    )


class _NoToken:
    """Bearer tokens never change the STS endpoint; skip the SSO cache look-up."""

    def load_token(self, **kwargs: Any) -> None:
        return None


class _NoImds:
    """Stands in for IMDS when defaults_mode=auto asks for the instance region."""

    def provide(self) -> None:
        return None


def _config_mapping(session: Any, environ: Mapping[str, str]) -> dict[str, Any]:
    """botocore's default config chains, reading `environ` instead of os.environ."""
    factory = ConfigChainFactory(session=session, environ=environ)

    def chains(variables: Mapping[str, Any]) -> dict[str, Any]:
        return {
            name: factory.create_config_chain(
                instance_name=name,
                env_var_names=spec[1],
                config_property_names=spec[0],
                default=spec[2],
                conversion_func=spec[3],
            )
            for name, spec in variables.items()
        }

    mapping = chains(BOTOCORE_DEFAUT_SESSION_VARIABLES)
    mapping["s3"] = SectionConfigProvider("s3", session, chains(DEFAULT_S3_CONFIG_VARS))
    mapping["proxies_config"] = SectionConfigProvider(
        "proxies_config", session, chains(DEFAULT_PROXIES_CONFIG_VARS)
    )
    return mapping


class _ScopedSession(botocore.session.Session):  # type: ignore[misc]
    """A botocore session that sees `environ` as its whole environment.

    Components are swapped through the public register_component; the two
    overrides below are the only hooks botocore offers for the IMDS region
    look-up and for the configured-endpoint chain, which otherwise read
    os.environ directly.
    """

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._scoped_environ = environ
        super().__init__()
        self.register_component("config_store", ConfigValueStore(_config_mapping(self, environ)))
        self.register_component("data_loader", _loader(self.get_config_variable("data_path")))
        self.register_component("token_provider", _NoToken())

    def _register_smart_defaults_factory(self) -> None:
        def create() -> Any:
            resolver = self._get_internal_component("default_config_resolver")
            return SmartDefaultsConfigStoreFactory(resolver, _NoImds())

        self._internal_components.lazy_register_component("smart_defaults_factory", create)

    def _add_configured_endpoint_provider(self, client_name: str, config_store: Any) -> None:
        provider = ConfiguredEndpointProvider(
            full_config=self.full_config,
            scoped_config=self.get_scoped_config(),
            client_name=client_name,
            environ=self._scoped_environ,
        )
        config_store.set_config_provider(logical_name="endpoint_url", provider=provider)


def classify_url(url: str | None) -> str:
    """regional | global | fips | dualstack | custom, from the endpoint's hostname alone."""
    host = (urlsplit(url).hostname or "") if url else ""
    dns, dualstack = _suffixes()
    m = re.fullmatch(r"(sts|sts-fips)\.(?:([a-z0-9-]+)\.)?([a-z0-9.-]+)", host.lower())
    if m is None:
        return "custom"
    service, region, suffix = m.groups()
    if region is None:
        return "global" if service == "sts" and suffix in dns else "custom"
    if suffix not in dns and suffix not in dualstack:
        # e.g. sts.amazonaws.com.cn parses as region "amazonaws"; anything else is custom.
        return "global" if service == "sts" and f"{region}.{suffix}" in dns else "custom"
    if service == "sts-fips":
        return "fips"
    return "dualstack" if suffix in dualstack else "regional"


def _endpoint_source(session: Any, environ: Mapping[str, str]) -> str | None:
    """Which configured setting supplies the endpoint URL, in botocore's order."""
    if environ.get("AWS_ENDPOINT_URL_STS"):
        return "endpoint_url_sts_env"
    if environ.get("AWS_ENDPOINT_URL"):
        return "endpoint_url_env"
    scoped = session.get_scoped_config()
    section = scoped.get("services")
    if section:
        services = session.full_config.get("services", {}).get(section, {})
        if services.get("sts", {}).get("endpoint_url"):
            return "endpoint_url_services_section"
    if scoped.get("endpoint_url"):
        return "endpoint_url_profile"
    return None


def _config_file_reason(session: Any, environ: Mapping[str, str]) -> str | None:
    path = os.path.expanduser(str(session.get_config_variable("config_file")))
    if not os.path.exists(path):
        return "config_file_missing" if environ.get("AWS_CONFIG_FILE") else None
    if not os.access(path, os.R_OK) or os.path.isdir(path):
        return "config_file_unreadable"
    return None


def _reasons(session: Any, environ: Mapping[str, str], mode: str) -> tuple[str, ...]:
    out: list[str] = []
    file_reason = _config_file_reason(session, environ)
    if file_reason:
        out.append(file_reason)
    region = session.get_config_variable("region")
    aws_region = environ.get("AWS_REGION")
    if not region:
        out.append("no_region")
        if aws_region:
            out.append("aws_region_only")
    elif aws_region and aws_region != region:
        out.append("aws_region_ignored")
    if (
        region in LEGACY_GLOBAL_STS_REGIONS
        and mode == "global"
        and session.get_config_variable("sts_regional_endpoints") == "legacy"
    ):
        out.append("legacy_mode")
    if session.get_config_variable("ignore_configured_endpoint_urls"):
        out.append("ignore_configured_endpoint_urls")
    else:
        source = _endpoint_source(session, environ)
        if source:
            out += ["endpoint_url_override", source]
    if session.get_config_variable("use_fips_endpoint"):
        out.append("fips_enabled")
    if session.get_config_variable("use_dualstack_endpoint"):
        out.append("dualstack_enabled")
    return tuple(out)


def _env_var(environ: Mapping[str, str], lower: str) -> tuple[str, str] | None:
    """urllib's rule: the lower-case name wins, and set but empty means unset."""
    if lower in environ:
        return (lower, environ[lower]) if environ[lower] else None
    upper = lower.upper()
    return (upper, environ[upper]) if environ.get(upper) else None


def proxy_for(url: str | None, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(the proxy botocore would use for `url`, minus any password; the reason).

    botocore asks urllib for the environment's proxies and skips them when
    NO_PROXY matches the endpoint's host; the same urllib function decides
    here, fed `environ` instead of os.environ.
    """
    proxy = _env_var(environ, "https_proxy")
    if not url or urlsplit(url).scheme != "https" or proxy is None:
        return None, None
    no_proxy = _env_var(environ, "no_proxy")
    table = {"https": proxy[1], **({"no": no_proxy[1]} if no_proxy else {})}
    if _bypass(urlsplit(url).netloc, table):
        return None, "no_proxy_bypass"
    return redact_url(proxy[1]), "https_proxy"


def _one_line(exc: BaseException) -> str:
    if is_credential_error(exc):  # a config error can quote the config's values
        return describe_credential_error(exc)
    text = str(exc).strip().splitlines()
    detail = text[0][:200] if text else ""
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _has_aws_settings(env: Mapping[str, str], session: Any) -> bool:
    """Any AWS variable (proxies aside) or an AWS config file that exists."""
    if any(v for k, v in env.items() if k not in PROXY_ENV):
        return True
    path = os.path.expanduser(str(session.get_config_variable("config_file")))
    return os.path.isfile(path)


def sdk_view(environ: Mapping[str, str] | None = None) -> SdkView:
    """The STS endpoint botocore would use with `environ` (default: this process's)."""
    source = os.environ if environ is None else environ
    env = {k: v for k, v in source.items() if k in RELEVANT_ENV}
    try:
        session = _ScopedSession(env)
        client = session.create_client("sts", aws_access_key_id="x", aws_secret_access_key="x")
        url = client.meta.endpoint_url
        mode = classify_url(url)
        proxy, proxy_reason = proxy_for(url, env)
        return SdkView(
            endpoint_url=redact_url(url),
            mode=mode,
            region=client.meta.region_name,
            reasons=_reasons(session, env, mode) + ((proxy_reason,) if proxy_reason else ()),
            proxy=proxy,
            unconfigured=not _has_aws_settings(env, session),
        )
    except Exception as exc:
        error = redact_text(_one_line(exc))
        return SdkView(endpoint_url=None, mode="unknown", region=None, error=error)


def main() -> int:
    """`python -m agent.discovery.sdk_view`: a JSON environment on stdin, the view on stdout.

    The daemon asks through this short-lived child: creating an STS client
    parses botocore's endpoint data, about 8 MB that CPython would otherwise
    keep in the daemon for good.
    """
    import dataclasses
    import json
    import sys

    try:
        doc = json.load(sys.stdin)
    except ValueError as exc:
        print(f"agent.discovery.sdk_view: stdin: not JSON ({exc})", file=sys.stderr)
        return 2
    if not isinstance(doc, dict):
        print(
            "agent.discovery.sdk_view: stdin: expected a JSON object of variables", file=sys.stderr
        )
        return 2
    view = sdk_view({str(k): str(v) for k, v in doc.items()})
    json.dump(dataclasses.asdict(view), sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
