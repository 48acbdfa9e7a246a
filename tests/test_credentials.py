"""The credential chain, in-process (check) and through the child (serve).

Both ways must give botocore's own answers, and the child's must keep being
refreshed by botocore's RefreshableCredentials; the chain reads a loopback
container-credentials endpoint or the environment, never AWS.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import credentials
from agent.credentials import Credentials, CredentialsError, metadata_from_child
from tests.support.faults import ContainerCredentials

ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.fixture(autouse=True)
def empty_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    """No AWS variables, files or IMDS: each test adds the one source it needs."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def container(monkeypatch: pytest.MonkeyPatch) -> Iterator[ContainerCredentials]:
    server = ContainerCredentials().start()
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", server.url)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("in_child", [False, True], ids=["in-process", "child"])
def test_long_term_keys_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, in_child: bool
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    chain = Credentials("chain", in_child=in_child)
    frozen = chain.frozen()
    assert frozen is not None and chain.error is None
    assert (frozen.access_key, frozen.secret_key, frozen.token) == (ACCESS_KEY, SECRET_KEY, None)


@pytest.mark.parametrize("in_child", [False, True], ids=["in-process", "child"])
def test_an_empty_chain_is_named_and_not_asked_again_at_once(
    monkeypatch: pytest.MonkeyPatch, in_child: bool
) -> None:
    chain = Credentials("chain", in_child=in_child)
    assert chain.frozen() is None
    assert chain.error == "no credentials in the default chain"
    # Keys appear, but the chain is asked again only after RETRY_AFTER: no storm per round.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    assert chain.frozen() is None
    monkeypatch.setattr(credentials, "RETRY_AFTER", 0.0)
    frozen = chain.frozen()
    assert frozen is not None and frozen.access_key == ACCESS_KEY and chain.error is None


@pytest.mark.parametrize("in_child", [False, True], ids=["in-process", "child"])
def test_temporary_credentials_are_refreshed_in_botocores_windows(
    container: ContainerCredentials, in_child: bool
) -> None:
    container.rotate(seconds=60)  # inside the 15-minute window: every use asks again
    chain = Credentials("chain", in_child=in_child)
    first = chain.frozen()
    assert first is not None and first.token and first.token.startswith("container-session-")
    fetched = container.fetches
    container.rotate(seconds=3600)
    second = chain.frozen()
    assert second is not None and second.secret_key != first.secret_key
    assert container.fetches > fetched
    # An hour out: kept without asking again.
    fetched = container.fetches
    assert chain.frozen() == second and container.fetches == fetched


@pytest.mark.parametrize(("seconds", "kept"), [(800, True), (300, False)])
def test_a_failed_refresh_keeps_keys_until_the_mandatory_window(
    container: ContainerCredentials, seconds: int, kept: bool
) -> None:
    """Between 15 and 10 minutes before expiry a failed refresh keeps the keys; after, never."""
    container.rotate(seconds=seconds)
    chain = Credentials("chain", in_child=True)
    keys = chain.frozen()
    assert keys is not None and chain.error is None
    container.stop()  # the credentials endpoint goes away
    assert chain.frozen() == (keys if kept else None)
    assert chain.error is not None and chain.error.startswith("credential refresh failed")
    assert keys.secret_key not in chain.error


def test_child_metadata_has_the_expiry_botocore_needs(container: ContainerCredentials) -> None:
    container.rotate(seconds=3600)
    meta = metadata_from_child()
    assert meta["access_key"] == "ASIACONTAINEREXAMPLE"
    assert meta["expiry_time"] is not None and meta["method"] == "container-role"


def test_a_broken_child_never_echoes_its_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the child printed may hold a secret: the error names only the exit."""
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\necho '{SECRET_KEY} not json'\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(sys, "executable", str(fake))
    with pytest.raises(CredentialsError) as err:
        metadata_from_child()
    assert str(err.value) == "credentials child failed: exited 3"
    chain = Credentials("chain", in_child=True)
    assert chain.frozen() is None and SECRET_KEY not in (chain.error or "")


def test_a_failure_is_logged_once_and_the_recovery_too(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(credentials, "RETRY_AFTER", 0.0)
    chain = Credentials("chain", in_child=True)
    with caplog.at_level("INFO", logger="agent.credentials"):
        assert chain.frozen() is None and chain.frozen() is None
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        assert chain.frozen() is not None
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "credentials: no credentials in the default chain",
        "credentials: available again (env)",
    ]
    assert not any(SECRET_KEY in line or ACCESS_KEY in line for line in lines)


#: What a failing credential helper prints; botocore puts it in its exception's message.
HELPER_SECRET = "SECRETLEAK123"


def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    path = tmp_path / "aws-config"
    path.write_text(text)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(path))
    return path


@pytest.mark.parametrize("in_child", [False, True], ids=["in-process", "child"])
def test_a_failing_credential_process_is_named_without_what_it_printed(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    in_child: bool,
) -> None:
    """botocore's real chain runs the helper; only class, provider and profile are kept."""
    helper = f'/bin/sh -c "echo token={HELPER_SECRET} >&2; exit 1"'
    _config(tmp_path, monkeypatch, f"[default]\ncredential_process = {helper}\n")
    chain = Credentials("chain", in_child=in_child)
    with caplog.at_level("DEBUG", logger="agent"):
        assert chain.frozen() is None
    assert chain.error == "CredentialRetrievalError (provider custom-process, profile default)"
    assert not any(HELPER_SECRET in r.getMessage() for r in caplog.records)
    assert [r.getMessage() for r in caplog.records] == [f"credentials: {chain.error}"]


def test_a_missing_profile_and_a_broken_config_keep_their_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The safe fields the user needs to fix the setup stay: the profile, the file."""
    monkeypatch.setenv("AWS_PROFILE", "prod-readonly")
    with pytest.raises(CredentialsError, match=r"^ProfileNotFound \(profile prod-readonly\)$"):
        credentials.metadata()
    monkeypatch.delenv("AWS_PROFILE")
    path = _config(tmp_path, monkeypatch, f"[default\naws_secret_access_key = {HELPER_SECRET}\n")
    with pytest.raises(CredentialsError) as err:
        credentials.metadata()
    assert str(err.value).startswith(f"ConfigParseError (path {path}")
    assert HELPER_SECRET not in str(err.value)
