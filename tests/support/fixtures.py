"""pytest fixtures over the real servers in tests.support; load with
`pytest_plugins = ["tests.support.fixtures"]` in the top-level conftest.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import trustme

from tests.support.dnsmasq import Dnsmasq, dnsmasq_binary
from tests.support.moto_tls import MotoStsTls

DnsmasqFactory = Callable[..., Dnsmasq]
MotoStsFactory = Callable[..., MotoStsTls]


def _require_moto() -> None:
    from tests.conftest import missing

    if importlib.util.find_spec("moto") is None:
        missing("python package 'moto[server]'")


@pytest.fixture(scope="session")
def dnsmasq_path() -> str:
    """dnsmasq's path; skipped locally and failed under CI when it is not installed."""
    return dnsmasq_binary()


@pytest.fixture
def dnsmasq_factory(dnsmasq_path: str) -> Iterator[DnsmasqFactory]:
    """Starts `Dnsmasq(**kwargs)` servers that are all stopped when the test ends."""
    with ExitStack() as stack:

        def start(records: Any = None, **kwargs: Any) -> Dnsmasq:
            kwargs.setdefault("binary", dnsmasq_path)
            return stack.enter_context(Dnsmasq(records, **kwargs))

        yield start


@pytest.fixture(scope="session")
def sts_ca() -> trustme.CA:
    """One throwaway CA for every STS server in the run, so one CA bundle trusts them all."""
    return trustme.CA()


@pytest.fixture(scope="session")
def moto_sts(sts_ca: trustme.CA) -> Iterator[MotoStsTls]:
    """A shared moto STS on 127.0.0.1; GetCallerIdentity keeps no state, so sharing is safe."""
    _require_moto()
    with MotoStsTls(ca=sts_ca) as server:
        yield server


@pytest.fixture
def moto_sts_factory(sts_ca: trustme.CA) -> Iterator[MotoStsFactory]:
    """Starts `MotoStsTls(**kwargs)` servers (CA defaults to `sts_ca`), stopped at test end."""
    _require_moto()
    with ExitStack() as stack:

        def start(host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> MotoStsTls:
            kwargs.setdefault("ca", sts_ca)
            return stack.enter_context(MotoStsTls(host, port, **kwargs))

        yield start
